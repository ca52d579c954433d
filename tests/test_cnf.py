"""The continuous normalizing flow: density, trace estimators, adjoint, Pyro use.

Round trip and log-det-vs-autograd for ``CNFTransform`` live in the shared property test
(tests/test_flows.py, case ``cnf_exact``).
"""

from __future__ import annotations

import pyro
import pytest
import torch

from probgen.models.flows.cnf import CNF, CNFTransform
from probgen.models.flows.flows import flow_model


def _perturb(module: torch.nn.Module, scale: float = 0.3) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def test_density_integrates_to_one():
    torch.manual_seed(0)
    flow = CNF(2, hidden=(16,))
    _perturb(flow)
    g = torch.linspace(-6, 6, 97)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    with torch.no_grad():
        p = flow.log_prob(torch.stack([xx, yy], -1).reshape(-1, 2)).exp()
    mass = p.sum().item() * (g[1] - g[0]).item() ** 2
    assert abs(mass - 1.0) < 0.03


def test_exact_trace_is_default_in_2d_and_hutchinson_above():
    assert CNF(2).transform.exact_trace
    assert not CNF(5).transform.exact_trace


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(noise):
    torch.manual_seed(0)
    exact = CNFTransform(3, hidden=(16,), exact_trace=True)
    _perturb(exact)
    hutch = CNFTransform(3, hidden=(16,), exact_trace=False, noise=noise)
    hutch.load_state_dict(exact.state_dict())
    x = torch.randn(1, 3).expand(1000, 3).contiguous()  # one point, many noise draws
    with torch.no_grad():
        ld_exact = exact.log_abs_det_jacobian(exact.inv(x[:1]), x[:1]).item()
        ests = -hutch.log_abs_det_jacobian(hutch.inv(x), x)
    # every row saw its own eps: their mean is an unbiased estimate of the exact value
    stderr = ests.std().item() / 1000**0.5
    assert abs(-ests.mean().item() - ld_exact) < 4 * stderr + 1e-3


def test_adjoint_gives_the_same_gradients():
    torch.manual_seed(0)
    x = torch.randn(8, 2)
    grads = []
    for adjoint in (False, True):
        torch.manual_seed(1)
        flow = CNF(2, hidden=(8,), adjoint=adjoint, rtol=1e-6, atol=1e-6)
        flow.log_prob(x).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in flow.parameters()]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-3, atol=1e-4)


def test_training_step_lowers_nll_through_pyro():
    torch.manual_seed(0)
    pyro.clear_param_store()
    flow = CNF(2, hidden=(16,), method="rk4", options={"step_size": 0.25})
    data = torch.randn(64, 2) * 0.5 + 1.0
    model = flow_model(flow)
    svi = pyro.infer.SVI(model, lambda x: None, pyro.optim.Adam({"lr": 3e-2}),
                         pyro.infer.Trace_ELBO())
    losses = [svi.step(data) for _ in range(8)]
    assert losses[-1] < losses[0]
    assert flow.transform.nfe > 0


def test_sample_shape_and_log_prob_finite():
    flow = CNF(3, hidden=(8,))
    x = flow.sample((5,))
    assert x.shape == (5, 3)
    assert torch.isfinite(flow.log_prob(x)).all()


@pytest.mark.parametrize(
    "kwargs, arg",
    [({"dim": 0}, "dim"), ({"dim": 2, "method": "nope"}, "method"),
     ({"dim": 2, "noise": "laplace"}, "noise"), ({"dim": 2, "t1": 0.0}, "t1")],
)
def test_bad_input_names_the_argument(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        CNFTransform(**kwargs)


def test_wrong_input_size_names_input():
    with pytest.raises(ValueError, match="input"):
        CNFTransform(2)(torch.randn(4, 3))
