"""Device, mixed precision and compilation in ``fit`` and through the command line."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from probgen.cli import main
from probgen.errors import ProbgenError
from probgen.infer import precision as precision_module
from probgen.infer import runs
from probgen.infer.fit import fit
from probgen.infer.objectives import ELBO, Objective
from probgen.infer.precision import Precision, compile_networks


class Tiny(nn.Module):
    """z ~ N(0, I_2); x ~ N(dec(z), 1) in 8 dims; guide N(enc(x))."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
        self.dec = nn.Linear(2, 8)
        self.seen: list[torch.dtype] = []
        self.dec.register_forward_hook(lambda m, i, o: self.seen.append(o.dtype))

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.dec(z).float(), 1.0).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            h = self.enc(x).float()
            pyro.sample("z", dist.Normal(h[:, :2], h[:, 2:].exp()).to_event(1))


def _data() -> torch.Tensor:
    return torch.randn(64, 8, generator=torch.Generator().manual_seed(0))


def _fit(prec: str, steps: int = 10, **kw):
    pyro.clear_param_store()
    torch.manual_seed(0)
    m = Tiny()
    # reduction="mean": a per-example loss, so the gradients stay within fp16's range and the
    # grad scaler skips no more than its first steps (the N/B-scaled batch sum overflows more)
    res = fit(m, None, _data(), steps=steps, batch_size=16, lr=1e-2, progress=False,
              precision=prec, log_every=5, reduction="mean", **kw)
    return m, res


def test_bf16_and_fp16_autocast_the_networks_and_follow_fp32():
    m32, r32 = _fit("fp32")
    assert set(m32.seen) == {torch.float32}
    for prec, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        m, r = _fit(prec)
        assert dtype in m.seen, prec  # the matrix products ran in 16 bits
        assert all(p.dtype == torch.float32 for p in m.parameters())  # weights stay fp32
        # the same trajectory to 16-bit rounding (fp16 may skip early steps while its
        # loss scale settles, so compare the first logged loss loosely)
        assert r.history[-1]["loss"] == pytest.approx(r32.history[-1]["loss"], rel=0.05), prec


def test_fp16_scaler_state_resumes_exactly(tmp_path):
    _, full = _fit("fp16", steps=10, out=tmp_path / "a")
    _fit("fp16", steps=5, out=tmp_path / "b")
    state = runs.load_checkpoint(tmp_path / "b").state["amp"]
    assert 0 < state["scale"] < 65536.0  # it overflowed and backed off: a state worth saving
    _, resumed = _fit("fp16", steps=10, out=tmp_path / "b", resume=True)
    assert [r["loss"] for r in full.history] == [r["loss"] for r in resumed.history]
    wa = runs.load_tensors(tmp_path / "a" / "weights.safetensors")
    wb = runs.load_tensors(tmp_path / "b" / "weights.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_fp16_refuses_objectives_with_their_own_optimizers():
    class Own(Objective):
        def __init__(self) -> None:
            self.net = nn.Linear(2, 2)
            self.opt = torch.optim.SGD(self.net.parameters(), lr=0.1)

        def optimizers(self):
            return {"own": self.opt}

        def loss(self, model, guide, *batch):
            return ELBO().loss(model, guide, *batch)

    with pytest.raises(ProbgenError, match="precision: fp16 needs loss scaling"):
        _fit("fp16", objective=Own())


def test_precision_errors_are_one_line(monkeypatch):
    with pytest.raises(ProbgenError, match="precision: 'fp8' is not one of"):
        Precision("fp8", torch.device("cpu"))
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda kind: False)
    with pytest.raises(ProbgenError, match="precision: bf16 autocast is not available on cpu"):
        Precision("bf16", torch.device("cpu"))


def test_compile_networks_finds_the_networks_and_says_when_it_cannot(monkeypatch):
    m = Tiny()
    assert compile_networks([m], torch.device("cpu")) == ["enc", "dec"]
    monkeypatch.setattr(precision_module, "_find_compiler", lambda: None)
    with pytest.raises(ProbgenError, match="compile: torch.compile needs a C\\+\\+ compiler"):
        compile_networks([Tiny()], torch.device("cpu"))


@pytest.mark.parametrize("setting, message", [
    ("device=cuda", "device: 'cuda' requested but this machine has no CUDA"),
    ("device=cuda:1", "device: 'cuda:1' requested but this machine has no CUDA"),
    ("precision=fp8", "precision: 'fp8' is not one of"),
])
def test_cli_device_and_precision_errors_are_one_line(setting, message, capsys, tmp_path):
    if setting.startswith("device=cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = main(["train", "vae", "--fast", "--quiet", "--out", str(tmp_path / "r"),
                 "--set", setting])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_cli_compile_without_a_compiler_is_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(precision_module, "_find_compiler", lambda: None)
    code = main(["train", "flow", "--data", "moons", "--fast", "--quiet",
                 "--out", str(tmp_path / "r"), "--set", "compile=true"])
    err = capsys.readouterr().err
    assert code == 2 and "compile: torch.compile needs a C++ compiler" in err, err
    assert len(err.strip().splitlines()) == 1
