"""``fit`` under torchrun: two CPU processes (gloo) against one, on the digits VAE.

One ``torchrun --nproc_per_node 2`` launch trains the digits VAE with the ELBO and with
an objective that owns a critic module and its optimizer (``tests/dist_worker.py``);
the same runs are made here in one process. The parameters must agree to 1e-5, the batch
order and generator state of the checkpoints bit for bit, only rank 0 may write the run
folders, and each two-process run resumed in one process must continue as the
one-process run does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dist_worker
import pytest
import torch

from probgen.errors import ProbgenError
from probgen.infer import distributed, runs
from probgen.infer.shard_noise import ShardNoise, pad_distribution, rank_streams

WORKER = Path(__file__).with_name("dist_worker.py")
OBJECTIVES = ("elbo", "critic")


def _torchrun(nproc: int, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={nproc}", str(WORKER), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b)
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def test_two_processes_train_resume_and_write_like_one(tmp_path):
    steps, more = 30, 45
    two, one = tmp_path / "two", tmp_path / "one"
    proc = _torchrun(2, "--out", str(two), "--steps", str(steps), "--objective", *OBJECTIVES)
    try:
        for name in OBJECTIVES:  # meanwhile, the same runs in this process
            dist_worker.train(one / name, steps, name)
        log, _ = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0, log[-3000:]

    # only rank 0 wrote (the audit hook of rank 0 saw its writes, so it would see rank 1's)
    rank0 = json.loads((tmp_path / "writes-two-rank0.json").read_text())
    rank1 = json.loads((tmp_path / "writes-two-rank1.json").read_text())
    assert rank1 == []
    assert any("weights.safetensors" in p for _, p in rank0)
    assert any("checkpoints" in p for _, p in rank0)

    for name in OBJECTIVES:
        a, b = one / name, two / name
        wa, wb = (runs.load_tensors(d / "weights.safetensors") for d in (a, b))
        if name == "critic":
            assert any(k.startswith("objective.critic.") for k in wa)
        assert _max_diff(wa, wb) < 1e-5, name
        ha, hb = (runs.read_history(d / "metrics.jsonl") for d in (a, b))
        assert [r["step"] for r in ha] == [r["step"] for r in hb] == [10, 20, 30]
        for ra, rb in zip(ha, hb):
            for key in ("loss", "val_loss", "critic_loss"):
                if key in ra:
                    assert rb[key] == pytest.approx(ra[key], rel=1e-5), (name, key)
        ca, cb = runs.load_checkpoint(a), runs.load_checkpoint(b)
        assert ca.state["sampler_pos"] == cb.state["sampler_pos"]
        for key in ("sampler_gen", "sampler_order", "rng.torch_cpu"):
            assert torch.equal(ca.extra[key], cb.extra[key]), key
        assert _max_diff(ca.weights, cb.weights) < 1e-5

        # resume both in one process: the two-process run continues like the one-process run
        for d in (a, b):
            dist_worker.train(d, more, name, resume=True)
        wa, wb = (runs.load_tensors(d / "checkpoints" / f"step-{more:08d}" /
                                    "weights.safetensors") for d in (a, b))
        assert _max_diff(wa, wb) < 1e-5, name
        hb2 = runs.read_history(b / "metrics.jsonl")
        assert hb2[:3] == hb and [r["step"] for r in hb2[3:]] == [40, 45]


def test_shard_noise_gives_each_example_the_noise_of_one_process():
    import pyro
    import pyro.distributions as dist

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            g = pyro.sample("g", dist.Normal(0.0, 1.0))  # noqa: F841 - outside: every row
            return pyro.sample("z", dist.Normal(x[:, :2], x[:, 2:].exp()).to_event(1))

    x = torch.randn(10, 4)
    torch.manual_seed(5)
    full = guide(x)
    after = torch.get_rng_state()
    cpu = torch.device("cpu")
    parts = []
    for r in range(3):
        torch.manual_seed(5)
        offset, size = distributed.shard_bounds(10, 3, r)
        with rank_streams(cpu, r), ShardNoise(offset, size, 10, cpu):
            parts.append(guide(x[offset:offset + size]))
        assert torch.equal(torch.get_rng_state(), after)  # in lockstep with one process
    assert torch.equal(torch.cat(parts), full)


def test_direct_draws_differ_between_ranks_and_advance():
    cpu = torch.device("cpu")
    draws = []
    for r in (0, 1):
        torch.manual_seed(0)
        with rank_streams(cpu, r):
            first = torch.rand(3)
        with rank_streams(cpu, r):
            second = torch.rand(3)
        draws.append((first, second))
    assert not torch.equal(draws[0][0], draws[1][0])  # independent noise per shard
    assert not torch.equal(draws[0][0], draws[0][1])  # fresh numbers at the next call


def test_pad_distribution_keeps_rows_and_refuses_unknown():
    import pyro.distributions as dist

    d = dist.Categorical(logits=torch.randn(2, 5))
    p = pad_distribution(d, -1, torch.tensor([1, 1, 0]))
    assert torch.allclose(p.logits[2], d.logits[0]) and p.batch_shape == (3,)

    class Odd(dist.Normal):
        def __init__(self, mu):
            super().__init__(mu, 1.0)

    assert pad_distribution(Odd(torch.zeros(2)), -1, torch.tensor([0, 1, 1])) is None


def test_setup_errors_are_one_line(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for key in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ProbgenError, match="launch with torchrun"):
        distributed.setup("cpu")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ProbgenError, match="WORLD_SIZE: expected an integer"):
        distributed.setup("cpu")
    if not torch.cuda.is_available():
        monkeypatch.setenv("WORLD_SIZE", "2")
        with pytest.raises(ProbgenError, match="no CUDA"):
            distributed.device_for_rank("cuda")


def test_shard_bounds_cover_the_batch():
    for total in (1, 7, 40):
        for world in (1, 2, 3, 8):
            bounds = [distributed.shard_bounds(total, world, r) for r in range(world)]
            sizes = [s for _, s in bounds]
            assert sizes == [len(c) for c in torch.arange(total).tensor_split(world)]
            assert all(o == sum(sizes[:i]) for i, (o, _) in enumerate(bounds))


def test_cli_nproc_trains_on_two_processes_and_prints_once(tmp_path):
    out = tmp_path / "R"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    res = subprocess.run(
        [sys.executable, "-m", "probgen", "train", "vae", "--data", "digits", "--out", str(out),
         "--nproc", "2", "--fast", "--quiet", "--set", "steps=6", "val_every=3", "hidden=16",
         "likelihood=categorical", "eval_samples=2", "refine_steps=0", "batch_size=20"],
        env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("run folder:") == 1  # rank 0 alone reports
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 6 and "fd" in metrics
    saved = json.loads((out / "config.json").read_text())
    assert saved["family"] == "vae" and saved["fit"]["batch_size"] == 20


def test_cli_nproc_errors(capsys, monkeypatch):
    from probgen.cli import main

    assert main(["train", "vae", "--nproc", "0"]) == 2
    assert "--nproc: must be >= 1" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "vae", "--nproc", "2"]) == 2
    assert "already running under torchrun" in capsys.readouterr().err
