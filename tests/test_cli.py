"""The probgen command: graph and query subcommands, clear errors with exit status 2."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import torch

from probgen.cli import main


def test_query_prints_the_posterior(capsys):
    assert main(["query", "asia", "lung", "--evidence", "smoke=yes"]) == 0
    out = capsys.readouterr().out
    assert "lung(yes)" in out and "0.1000" in out


def test_bad_state_is_one_clear_line(capsys):
    assert main(["query", "asia", "lung", "--evidence", "smoke=maybe"]) == 2
    err = capsys.readouterr().err
    assert "'maybe'" in err and "'smoke'" in err and "Traceback" not in err


def test_unknown_network_names_it(capsys):
    assert main(["query", "nosuchnet", "A"]) == 2
    assert "nosuchnet" in capsys.readouterr().err


def test_graph_list_and_show(tmp_path, capsys):
    assert main(["graph", "list"]) == 0
    names = capsys.readouterr().out.split()
    assert {"sprinkler", "asia", "vae", "alarm"} <= set(names)
    png = tmp_path / "vae.png"
    assert main(["graph", "show", "vae", "--png", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"




# ---------------------------------------------------------------- the family contract


def _train(tmp_path, family, *extra, name=None):
    out = tmp_path / (name or family)
    assert main(["train", family, "--fast", "--quiet", "--out", str(out), *extra]) == 0
    return out


def test_every_family_folder_works_with_sample_eval_and_graph(tmp_path, capsys):
    for family in ("arm", "gpt"):
        out = _train(tmp_path, family, "--steps", "4")
        capsys.readouterr()
        suffix = ".txt" if family == "gpt" else ".png"
        assert main(["sample", str(out), "--n", "4", "--out", str(tmp_path / f"s{suffix}")]) == 0
        assert (tmp_path / f"s{suffix}").stat().st_size > 0
        assert main(["eval", str(out), "--quiet"]) == 0
        assert "test_nll" in capsys.readouterr().out
        assert main(["graph", "show", str(out), "--png", str(tmp_path / "g.png")]) == 0
        assert json.loads((out / "config.json").read_text())["family"] == family


def test_gpt_errors_are_one_line(tmp_path, capsys):
    gpt = _train(tmp_path, "gpt", "--steps", "2")
    vae = _train(tmp_path, "vae", "--steps", "2")
    capsys.readouterr()
    assert main(["generate", str(vae), "--prompt", "The"]) == 2
    err = capsys.readouterr().err
    assert "not a GPT run" in err and len(err.strip().splitlines()) == 1
    w = gpt / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    assert main(["sample", str(gpt)]) == 2
    err = capsys.readouterr().err
    assert "weights.safetensors" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_an_existing_run_folder_is_not_replaced(tmp_path, capsys):
    out = _train(tmp_path, "gpt", "--steps", "2")
    before = (out / "weights.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["train", "gpt", "--fast", "--quiet", "--out", str(out), "--steps", "3"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (out / "weights.safetensors").read_bytes() == before
    assert main(["train", "gpt", "--quiet", "--out", str(out), "--resume", "--steps", "4"]) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 4
    assert main(["train", "gpt", "--fast", "--quiet", "--out", str(out), "--overwrite",
                 "--steps", "2"]) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 2


def test_resume_continues_bit_for_bit(tmp_path):
    a = _train(tmp_path, "vae", "--steps", "20", name="a")
    b = _train(tmp_path, "vae", "--steps", "10", name="b")
    assert main(["train", "vae", "--quiet", "--out", str(b), "--resume", "--steps", "20"]) == 0
    wa = (a / "weights.safetensors").read_bytes()
    assert wa == (b / "weights.safetensors").read_bytes()


@pytest.mark.parametrize("n", ["0", "-3", "x"])
def test_sample_n_must_be_positive(tmp_path, capsys, n):
    out = _train(tmp_path, "flow", "--data", "moons")
    capsys.readouterr()
    assert main(["sample", str(out), "--n", n]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "n" in err


def test_local_points_train_sample_and_refuse_nan(tmp_path, capsys):
    pts = np.random.default_rng(0).normal(size=(300, 2)).astype(np.float32)
    np.save(tmp_path / "points.npy", pts)
    capsys.readouterr()
    assert main(["train", "flow", "--fast", "--quiet", "--data", str(tmp_path / "points.npy"),
                 "--out", str(tmp_path / "big")]) == 2
    assert "batch_size: 256 exceeds the 240 training examples" in capsys.readouterr().err
    out = _train(tmp_path, "flow", "--data", str(tmp_path / "points.npy"), "--set",
                 "batch_size=64")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["data"]["name"] == str(tmp_path / "points.npy") and cfg["data"]["split_seed"] == 0
    assert main(["sample", str(out), "--n", "50", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (50, 2)
    assert main(["sample", str(out), "--n", "7", "--out", str(tmp_path / "s.pt")]) == 0
    assert torch.load(tmp_path / "s.pt", weights_only=True).shape == (7, 2)
    pts[5, 1] = np.nan
    np.save(tmp_path / "bad.npy", pts)
    capsys.readouterr()
    assert main(["train", "flow", "--fast", "--quiet", "--data", str(tmp_path / "bad.npy"),
                 "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "bad.npy" in err and "non-finite" in err and len(err.strip().splitlines()) == 1


def test_gpt_trains_on_a_local_text_file_and_vae_refuses_it(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("probabilistic programs are fun. " * 80)
    out = _train(tmp_path, "gpt", "--data", str(tmp_path / "notes.txt"), "--steps", "3",
                 "--set", "block_size=16")
    assert json.loads((out / "config.json").read_text())["data"]["kind"] == "text"
    capsys.readouterr()
    assert main(["train", "vae", "--quiet", "--data", str(tmp_path / "notes.txt")]) == 2
    assert "vae does not train on text" in capsys.readouterr().err


def test_set_show_config_and_bad_keys(tmp_path, capsys):
    out = _train(tmp_path, "vae", "--set", "beta=4", "latent_dim=8", "--steps", "2")
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["beta"] == 4.0 and cfg["latent_dim"] == 8
    # a repeated --set adds to the earlier ones (none of them is dropped)
    again = _train(tmp_path, "vae", "--set", "beta=3", "--set", "latent_dim=5", "--steps", "2",
                   name="again")
    cfg = json.loads((again / "config.json").read_text())["config"]
    assert cfg["beta"] == 3.0 and cfg["latent_dim"] == 5
    capsys.readouterr()
    assert main(["train", "vae", "--set", "nosuchkey=1"]) == 2
    err = capsys.readouterr().err
    assert "nosuchkey" in err and "latent_dim" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "vae", "--set", "beta=abc"]) == 2
    err = capsys.readouterr().err
    assert "beta" in err and "'abc'" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "vae", "--show-config"]) == 0
    shown = capsys.readouterr().out
    assert "latent_dim" in shown and "= 16" in shown and "KL weight" in shown


def test_threads_default_and_override(tmp_path, monkeypatch):
    from probgen.models.family import auto_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    _train(tmp_path, "flow", "--data", "moons", name="auto")
    assert torch.get_num_threads() == auto_threads()
    _train(tmp_path, "flow", "--data", "moons", "--threads", "2", name="two")
    assert torch.get_num_threads() == 2


def test_progress_says_when_it_stops_early_and_evaluates(tmp_path, capsys):
    assert main(["train", "flow", "--fast", "--data", "moons", "--out", str(tmp_path / "r"),
                 "--set", "lr=1e-9", "val_every=2", "patience=1", "steps=40"]) == 0
    err = capsys.readouterr().err
    assert "stopped early at step" in err and "evaluating flow" in err and "evaluated in" in err
    assert main(["eval", str(tmp_path / "r")]) == 0
    assert "evaluating flow" in capsys.readouterr().err


def test_one_set_of_metric_keys_and_a_history_everywhere(tmp_path):
    keys = None
    for family in ("vae", "arm", "flow", "gpt"):
        out = _train(tmp_path, family, "--steps", "4")
        m = json.loads((out / "metrics.json").read_text())
        assert (out / "metrics.jsonl").is_file()
        common = {"test_nll", "nll_kind", "test_bpd", "train_seconds", "num_params", "steps"}
        assert common <= set(m), family
        if family != "gpt":
            assert "fd" in m
        keys = common if keys is None else keys
        cfg = json.loads((out / "config.json").read_text())
        assert "name" not in cfg["config"] and cfg["family"] == family


def test_input_errors_exit_2_with_one_line(tmp_path, capsys):
    for argv in (["train", "nosuchfamily"], ["train", "vae", "--data", "cifar"],
                 ["sample", str(tmp_path)], ["eval", str(tmp_path / "none")],
                 ["report", str(tmp_path)], ["train", "vae", "--resume", "--quiet"],
                 ["train", "vae", "--set", "device=cuda:7", "--quiet"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (argv, err)


def test_default_out_folder_is_kept_and_named(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "flow", "--data", "moons", "--fast", "--quiet"]) == 0
    assert main(["train", "flow", "--data", "moons", "--fast", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "run folder: runs/flow\n" in out and "run folder: runs/flow-2" in out
    assert (tmp_path / "runs" / "flow-2" / "weights.safetensors").is_file()


def test_duplicate_evidence_is_refused(capsys):
    assert main(["query", "asia", "lung", "--evidence", "smoke=yes", "smoke=no"]) == 2
    assert "'smoke' is given twice" in capsys.readouterr().err


def test_corrupt_config_names_the_file(tmp_path, capsys):
    out = _train(tmp_path, "flow", "--data", "moons")
    (out / "config.json").write_text("{not json")
    capsys.readouterr()
    assert main(["eval", str(out)]) == 2
    assert str(out / "config.json") in capsys.readouterr().err


def test_unknown_query_variable_lists_the_variables(capsys):
    assert main(["query", "sprinkler", "rain"]) == 2
    err = capsys.readouterr().err
    assert "'rain'" in err and "Rain" in err and "WetGrass" in err


@pytest.mark.parametrize("command", ["train", "sample", "eval", "report", "query", "graph"])
def test_subcommand_help_is_not_bare(command, capsys):
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert len(text.splitlines()) > 8 and ("e.g." in text or "examples" in text or
                                           len(text.split("\n\n")[1]) > 40)


def test_run_files_are_not_private(tmp_path):
    out = _train(tmp_path, "flow", "--data", "moons")
    mask = os.umask(0)
    os.umask(mask)
    for f in out.rglob("*"):
        mode = stat.S_IMODE(f.stat().st_mode)
        if f.is_file():
            assert mode == 0o666 & ~mask, (f, oct(mode))


def test_families_and_report(tmp_path, capsys):
    assert main(["families"]) == 0
    listed = capsys.readouterr().out
    assert all(f in listed for f in ("vae", "arm", "flow", "gpt")) and "digits" in listed
    a = _train(tmp_path, "flow", "--data", "moons")
    b = _train(tmp_path, "vae", "--steps", "2")
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "rep")]) == 0
    page = (tmp_path / "rep" / "report.md").read_text()
    assert "| flow |" in page and "| vae |" in page and ".png)" in page
    assert len(list((tmp_path / "rep").glob("*.png"))) == 2
