"""ARM family: exact likelihood by enumeration, chain rule, sampling, engine, run folder."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional as F

from probgen.errors import ProbgenError
from probgen.infer.fit import fit
from probgen.infer.likelihood import exact_nll
from probgen.infer.objectives import Likelihood
from probgen.models.arm.arm import ARM, ARMDistribution, build_net, chain_graph
from probgen.models.family import load_run, train
from probgen.nn.causal_conv import CausalConvNet
from probgen.nn.made import MADE
from probgen.nn.pixelcnn import GatedPixelCNN

TINY = {
    "made": lambda: MADE(4, 3, hidden=(32,)),
    "causal_conv": lambda: CausalConvNet(4, 3, channels=8, layers=2),
    "pixelcnn": lambda: GatedPixelCNN((2, 2), 3, channels=8, layers=2),
}


def _all_configs(dims: int, levels: int) -> torch.Tensor:
    return torch.cartesian_prod(*[torch.arange(levels)] * dims)


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_exact_likelihood_sums_to_one(name: str, temperature: float) -> None:
    torch.manual_seed(0)
    arm = ARM(TINY[name]())
    with torch.no_grad():
        p = arm.distribution(temperature).log_prob(_all_configs(4, 3)).exp()
    assert abs(float(p.sum()) - 1.0) < 1e-5


def test_mixture_sums_to_one_and_averages() -> None:
    torch.manual_seed(0)
    a, b = ARM(TINY["made"]()), ARM(TINY["pixelcnn"]())
    mix = ARM.mixture([a, b])
    x = _all_configs(4, 3)
    p = mix.log_prob(x).exp()
    assert abs(float(p.sum()) - 1.0) < 1e-5
    assert torch.allclose(p, (a.log_prob(x).exp() + b.log_prob(x).exp()) / 2, atol=1e-6)


@pytest.mark.parametrize("name", sorted(TINY))
def test_log_prob_is_the_chain_rule(name: str) -> None:
    """One parallel pass equals D sequential passes that only reveal x_<d."""
    torch.manual_seed(1)
    net = TINY[name]().eval()
    x = torch.randint(0, 3, (6, 4))
    manual = torch.zeros(6)
    for d in range(4):
        visible = F.one_hot(x, 3).float()
        visible[:, d:] = 0.0
        manual += torch.log_softmax(net(visible)[:, d], -1).gather(-1, x[:, d:d + 1]).squeeze(-1)
    assert torch.allclose(ARM(net).log_prob(x), manual, atol=1e-5)


def test_ancestral_samples_match_exact_probabilities() -> None:
    torch.manual_seed(2)
    arm = ARM(MADE(2, 3, hidden=(16,)))
    with torch.no_grad():  # make the distribution far from uniform
        for p in arm.parameters():
            p.mul_(4.0)
    configs = _all_configs(2, 3)
    exact = arm.log_prob(configs).exp()
    s = arm.sample(20000)
    freq = torch.stack([(s == c).all(-1).float().mean() for c in configs])
    assert (freq - exact).abs().max() < 0.015


def test_temperature_sharpens_samples() -> None:
    torch.manual_seed(3)
    arm = ARM(MADE(3, 5, hidden=(16,)))
    configs = _all_configs(3, 5)
    cold = arm.distribution(0.25).log_prob(configs).exp()
    base = arm.log_prob(configs).exp()
    assert cold.max() > base.max()
    assert int(cold.argmax()) == int(base.argmax())


def test_engine_likelihood_objective_and_exact_nll() -> None:
    torch.manual_seed(4)
    arm = ARM(TINY["pixelcnn"]()).eval()
    x = torch.randint(0, 3, (10, 4))
    expected = -arm.log_prob(x)
    assert torch.allclose(Likelihood().loss(arm, None, x), expected.sum(), atol=1e-4)
    assert abs(exact_nll(arm, x).nll - float(expected.mean())) < 1e-4
    trace = __import__("pyro").poutine.trace(arm).get_trace(num_rows=5)
    assert trace.nodes["x"]["value"].shape == (5, 4)


def test_fit_learns_and_keeps_ema() -> None:
    torch.manual_seed(5)
    data = torch.tensor([[0, 1, 2, 0]] * 30 + [[2, 2, 1, 1]] * 30)
    arm = ARM(MADE(4, 3, hidden=(32,), dropout=0.1), input_dropout=0.1, ema_decay=0.9)
    before = exact_nll(arm, data).nll
    fit(arm, None, data, objective="likelihood", steps=150, batch_size=20, lr=1e-2,
        progress=False)
    ema_nll = exact_nll(arm, data).nll  # no_grad: scored with the EMA weights
    assert ema_nll < 0.5 * before
    arm.finalize()
    assert arm.emas is None and abs(exact_nll(arm, data).nll - ema_nll) < 1e-4


def test_chain_graph_is_the_chain_rule() -> None:
    bn = chain_graph(4)
    assert set(bn.parents("x4")) == {"x1", "x2", "x3"}
    assert len(bn.edges) == 4 * 3 // 2  # fully connected: every earlier variable is a parent
    assert bn.topological_order() == ["x1", "x2", "x3", "x4"]


def test_bad_input() -> None:
    arm = ARM(TINY["made"]())
    with pytest.raises(ProbgenError, match="levels"):
        arm.log_prob(torch.tensor([[0, 1, 3, 0]]))
    with pytest.raises(ProbgenError, match="last dimension"):
        arm.log_prob(torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ProbgenError, match="integer"):
        arm(torch.full((2, 4), 0.5))
    with pytest.raises(ProbgenError, match="temperature"):
        arm.sample(2, temperature=0.0)
    with pytest.raises(ProbgenError, match="n must"):
        arm.sample(0)
    with pytest.raises(ProbgenError, match="net"):
        build_net("lstm")
    with pytest.raises(ProbgenError, match="input_dropout"):
        ARM(TINY["made"](), input_dropout=1.0)
    with pytest.raises(ProbgenError, match="nets"):
        ARMDistribution([], 4, 3)
    with pytest.raises(ProbgenError, match="data"):
        train("arm", data="moons", fast=True, progress=False)
    with pytest.raises(ProbgenError, match="widht"):
        train("arm", fast=True, widht=3, progress=False)


def test_arm_run_folder(tmp_path) -> None:
    out = tmp_path / "run"
    m = train("arm", out=out, fast=True, steps=6, progress=False).metrics
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["nll_kind"] == "exact" and saved["test_nll"] == pytest.approx(m["test_nll"])
    for f in ("config.json", "weights.safetensors", "samples.png", "metrics.jsonl"):
        assert (out / f).exists(), f
    arm = load_run(out).arm
    from probgen.data.digits import load_digits

    assert exact_nll(arm, load_digits("test")).nll == pytest.approx(m["test_nll"], abs=1e-4)
    with pytest.raises(ProbgenError, match="already holds"):
        train("arm", out=out, fast=True, steps=2, progress=False)
