"""The family contract, run over every registered family: train a few steps in fast mode,
sample, evaluate, load the folder back, resume bit for bit; typed configs; data splits."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from probgen.data.splits import load_splits
from probgen.errors import ProbgenError
from probgen.infer import runs
from probgen.models.config import (
    ConfigError,
    RunConfig,
    build_config,
    config_to_dict,
    describe_config,
    option,
)
from probgen.models.family import family_names, get_family, load_run, train

#: settings that make every family's run short, and the cosine horizon of GPT and the EBM
#: explicit so a half-length run follows the same schedule as the full one
_SHORT = {"gpt": {"decay_steps": 12}, "ebm": {"decay_steps": 12}}
_STEPS = 12


def _weights(folder):
    return runs.load_tensors(folder / "weights.safetensors")


@pytest.mark.parametrize("name", family_names())
def test_family_contract(name, tmp_path):
    fam = get_family(name)
    assert fam.name == name and fam.description and fam.default_data in fam.data_names
    extra = {**_SHORT.get(name, {}), "val_every": 4, "patience": None}
    full = train(name, out=tmp_path / "full", fast=True, progress=False, steps=_STEPS, **extra)
    m = full.metrics
    # a likelihood-free family (a GAN) is judged on the yardstick alone
    score = "test_nll" if fam.likelihood else next(
        k for k in ("fd", "fd_ab", "test_energy") if k in m)
    likelihood_keys = ("test_nll", "nll_kind", "test_bpd") if fam.likelihood else ()
    for key in (*likelihood_keys, score, "train_seconds", "num_params", "steps"):
        assert key in m, key
    if not fam.likelihood:
        assert "test_nll" not in m
    assert m["steps"] == _STEPS and m["num_params"] > 0 and math.isfinite(m[score])
    if full.kind == "digits":
        assert m["fd"] > 0
    # sample: data scale, the data set's shape
    s = full.sample(3, seed=1)
    assert s.shape[0] == 3 and torch.equal(s, full.sample(3, seed=1))
    if full.kind != "text":
        assert tuple(s.shape[1:]) == full.splits.shape
    # the folder loads back to the same model
    loaded = load_run(tmp_path / "full")
    assert loaded.family == name and type(loaded) is type(full)
    assert torch.equal(loaded.sample(3, seed=1), s)
    again = loaded.evaluate()
    assert again[score] == pytest.approx(m[score], rel=1e-5)
    npy = loaded.save_samples(tmp_path / "s.npy", n=5)
    assert np.load(npy).shape[0] == 5
    # resume: half the steps, then continue to the end: bit for bit the full run
    train(name, out=tmp_path / "half", fast=True, progress=False, steps=_STEPS // 2, **extra)
    resumed = train(name, out=tmp_path / "half", resume=True, progress=False, steps=_STEPS)
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "half")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), name
    assert resumed.metrics[score] == pytest.approx(m[score], rel=1e-6)
    assert runs.read_json(tmp_path / "half" / "config.json")["config"]["steps"] == _STEPS


def test_an_existing_run_is_refused_unless_resume_or_overwrite(tmp_path):
    out = tmp_path / "run"
    train("flow", data="moons", out=out, fast=True, progress=False)
    with pytest.raises(ProbgenError, match="--resume.*--overwrite"):
        train("flow", data="moons", out=out, fast=True, progress=False)
    with pytest.raises(ProbgenError, match="'flow' run, not 'vae'"):
        train("vae", out=out, resume=True, progress=False)
    run = train("flow", data="moons", out=out, fast=True, progress=False, overwrite=True,
                hidden=8)
    assert runs.read_json(out / "config.json")["config"]["hidden"] == 8 == run.config.hidden
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("do not delete")
    with pytest.raises(ProbgenError, match="not a probgen run"):
        train("flow", data="moons", out=tmp_path / "mine", overwrite=True, progress=False)
    assert (tmp_path / "mine" / "thesis.tex").is_file()


def test_family_names_and_unknown_family():
    assert {"vae", "arm", "flow", "gpt"} <= set(family_names())
    with pytest.raises(ProbgenError, match="unknown 'nosuch'.*vae"):
        get_family("nosuch")


# ----------------------------------------------------------------------------- configs


@dataclass
class _Demo(RunConfig):
    beta: float = option(1.0, "KL weight")
    hidden: tuple[int, ...] = option((64, 64), "widths")
    kind: str = option("a", "a string")
    flag: bool = option(False, "a switch")
    limit: int | None = option(None, "optional")


def test_config_values_are_typed_and_round_trip(tmp_path):
    cfg = build_config(_Demo, sets=["beta=4", "hidden=8,16", "flag=yes", "limit=3", "lr=1e-2"])
    assert (cfg.beta, cfg.hidden, cfg.flag, cfg.limit, cfg.lr) == (4.0, (8, 16), True, 3, 0.01)
    assert build_config(_Demo, [config_to_dict(cfg)]) == cfg
    f = tmp_path / "c.yaml"
    f.write_text("beta: 2\nhidden: [4, 4]\nlimit: null\n")
    assert build_config(_Demo, file=f, sets=["beta=3"]).beta == 3.0  # --set wins over a file
    assert build_config(_Demo, file=f).hidden == (4, 4)
    text = describe_config(_Demo)
    assert "beta" in text and "KL weight" in text and "= 1.0" in text


@pytest.mark.parametrize("sets,match", [
    (["nosuchkey=1"], "unknown key 'nosuchkey'; valid keys: batch_size, beta"),
    (["beta=abc"], "beta: expected float, got 'abc'"),
    (["steps=2.5"], "steps: expected int"),
    (["flag=maybe"], "flag: expected bool"),
    (["beta"], "must look like key=value"),
    (["beta=1", "beta=2"], "given twice"),
    (["steps=0"], "steps: must be >= 1"),
])
def test_bad_config_values_name_the_key(sets, match):
    with pytest.raises(ConfigError, match=match):
        build_config(_Demo, sets=sets)


def test_config_file_errors_name_the_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("beta: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        build_config(_Demo, file=f)
    f.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        build_config(_Demo, file=f)


# ----------------------------------------------------------------------------- data


def test_embedded_splits_and_their_info_reload():
    d = load_splits("digits")
    assert d.sizes() == (1000, 350, 447) and d.levels == 17 and d.labels[0].shape == (1000,)
    m = load_splits("swissroll")
    assert m.kind == "vectors" and m.info["name"] == "swiss_roll" and m.shape == (2,)
    assert torch.equal(load_splits(m.info).test, m.test)


def test_local_arrays_are_carved_deterministically(tmp_path):
    x = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    np.save(tmp_path / "p.npy", x)
    a, b = load_splits(tmp_path / "p.npy"), load_splits(str(tmp_path / "p.npy"))
    assert a.sizes() == (160, 20, 20) and torch.equal(a.val, b.val)
    # the three splits partition the file
    rows = torch.cat([a.train, a.val, a.test])
    assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, torch.from_numpy(x).tolist()))
    assert a.info["split_seed"] == 0 and a.info["val_fraction"] == 0.1
    imgs = (np.random.default_rng(0).random((30, 8, 8)) * 255).astype(np.uint8)
    np.save(tmp_path / "i.npy", imgs)
    i = load_splits(tmp_path / "i.npy")
    assert i.kind == "images" and i.shape == (1, 8, 8) and float(i.train.max()) <= 1.0


@pytest.mark.parametrize("array,match", [
    (np.array([[0.0, np.nan], [1.0, 2.0]] * 10), "non-finite"),
    (np.zeros(20), "shape"),
    (np.zeros((5, 2)), "at least 10"),
    (np.zeros((20, 5, 4, 4)), "1 or 3 channels"),
    (np.zeros((20, 2), dtype=bool), "dtype"),
])
def test_bad_local_arrays_name_the_file(tmp_path, array, match):
    p = tmp_path / "bad.npy"
    np.save(p, array)
    with pytest.raises(ProbgenError, match=match) as err:
        load_splits(p)
    assert "bad.npy" in str(err.value)


def test_a_changed_local_file_is_noticed(tmp_path):
    p = tmp_path / "p.npy"
    np.save(p, np.zeros((20, 2), dtype=np.float32))
    info = load_splits(p).info
    np.save(p, np.ones((20, 2), dtype=np.float32))
    with pytest.raises(ProbgenError, match="changed"):
        load_splits(info)
