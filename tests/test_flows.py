"""Property tests over every invertible transform probgen builds flows from (zuko style).

One parametrised test per property, over one table of transforms: Pyro's own (coupling,
autoregressive, spline; conditional ones conditioned on a context), probgen's image layers,
whole flows as one composed transform, and the CNF. Checked against autograd Jacobians.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import pytest
import torch
from pyro.distributions.conditional import ConditionalTransform
from safetensors.torch import load_file, save_file
from torch import nn

from probgen.models.flows.cnf import CNF, CNFTransform
from probgen.models.flows.flows import (
    NON_INVERTIBLE,
    ConditionalSplineCoupling,
    Flow,
    build_flow,
    check_invertible,
    flow_model,
    glow,
    iaf,
    maf,
    nsf,
    realnvp,
)
from probgen.nn.flow_layers import (
    ActNorm,
    Invert,
    InvertibleConv1x1,
    Permutation,
)
from probgen.nn.flow_multiscale import ConvCouplingNet, FactorOut, Squeeze, Unsqueeze

D = 4  # vector size
IMG = (4, 4, 4)  # image (C, H, W)
CTX = 3  # context size


def _compose(flow: Flow) -> nn.Module:
    return T.ComposeTransformModule(list(flow.transforms))


# name -> (factory, event shape, context_dim); factories return a (conditional) transform module
CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], int]] = {
    # Pyro's invertible transforms used by the builders
    "affine_coupling": (lambda: T.affine_coupling(D, hidden_dims=[8]), (D,), 0),
    "spline_coupling": (lambda: T.spline_coupling(D, hidden_dims=[8]), (D,), 0),
    "affine_autoregressive": (lambda: T.affine_autoregressive(D, hidden_dims=[8]), (D,), 0),
    "spline_autoregressive": (lambda: T.spline_autoregressive(D, hidden_dims=[8]), (D,), 0),
    "generalized_channel_permute": (lambda: T.GeneralizedChannelPermute(IMG[0]), IMG, 0),
    "conv_affine_coupling": (
        lambda: T.AffineCoupling(2, ConvCouplingNet(2, 2, IMG[1:], hidden=8), dim=-3), IMG, 0),
    # conditional ones (conditioned on a random context in the test)
    "cond_affine_coupling": (
        lambda: T.conditional_affine_coupling(D, CTX, hidden_dims=[8]), (D,), CTX),
    "cond_spline_coupling": (lambda: ConditionalSplineCoupling(D, CTX, hidden=(8,)), (D,), CTX),
    "cond_affine_autoregressive": (
        lambda: T.conditional_affine_autoregressive(D, CTX, hidden_dims=[8]), (D,), CTX),
    "cond_spline_autoregressive": (
        lambda: T.conditional_spline_autoregressive(D, CTX, hidden_dims=[8]), (D,), CTX),
    "cond_inverse_autoregressive": (
        lambda: T.conditional_affine_autoregressive(D, CTX, hidden_dims=[8]).inv, (D,), CTX),
    # probgen's layers
    "actnorm_vector": (lambda: ActNorm(D), (D,), 0),
    "actnorm_image": (lambda: ActNorm(IMG[0], event_dim=3), IMG, 0),
    "invertible_conv1x1": (lambda: InvertibleConv1x1(IMG[0]), IMG, 0),
    "squeeze": (lambda: Squeeze(), IMG, 0),
    "unsqueeze": (lambda: Unsqueeze(), IMG, 0),
    "factor_out": (lambda: FactorOut(InvertibleConv1x1(2), keep=2), IMG, 0),
    "permutation": (lambda: Permutation(torch.tensor([2, 0, 3, 1])), (D,), 0),
    "invert": (lambda: Invert(T.affine_autoregressive(D, hidden_dims=[8])), (D,), 0),
    # whole flows as one composed transform
    "flow_realnvp": (lambda: _compose(realnvp(D, 2, (8,), actnorm=True)), (D,), 0),
    "flow_maf": (lambda: _compose(maf(D, 2, (8,))), (D,), 0),
    "flow_iaf": (lambda: _compose(iaf(D, 2, (8,))), (D,), 0),
    "flow_nsf_coupling": (lambda: _compose(nsf(D, 2, (8,))), (D,), 0),
    "flow_nsf_autoregressive": (lambda: _compose(nsf(D, 2, (8,), coupling=False)), (D,), 0),
    "flow_glow": (lambda: _compose(glow((1, 8, 8), levels=2, steps=1, hidden=8)), (1, 8, 8), 0),
    # continuous normalizing flow, exact trace
    "cnf_exact": (lambda: CNFTransform(2, hidden=(8,), rtol=1e-7, atol=1e-9), (2,), 0),
}


def _make(name: str, batch: int, dtype: torch.dtype = torch.float32):
    """A seeded, perturbed, eval-mode transform conditioned where needed, plus its shape."""
    torch.manual_seed(sum(map(ord, name)))
    factory, shape, ctx_dim = CASES[name]
    module = factory().to(dtype)
    with torch.no_grad():  # move off identity-like initialisations (zero-init nets, ...)
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    module.eval()
    t = module
    if isinstance(module, ConditionalTransform):
        t = module.condition(torch.randn(batch, ctx_dim, dtype=dtype))
    return module, t, shape


def _input(t, shape, batch, dtype=torch.float32) -> torch.Tensor:
    """A point in the transform's domain (base side)."""
    return torch.randn(batch, *t.inverse_shape(shape), dtype=dtype)


@pytest.mark.parametrize("name", list(CASES))
def test_shapes(name):
    _, t, shape = _make(name, batch=3)
    z = _input(t, shape, 3)
    x = t(z)
    assert x.shape == (3, *t.forward_shape(z.shape[1:]))
    assert t.log_abs_det_jacobian(z, x).shape == (3,)


@pytest.mark.parametrize("name", list(CASES))
def test_round_trip(name):
    _, t, shape = _make(name, batch=5)
    x = torch.randn(5, *shape)
    z = t.inv(x)
    x_back = t(z.clone())  # clone: defeat the transforms' identity cache
    assert (x_back - x).abs().max().item() < 1e-4
    z_back = t.inv(x_back.clone())
    assert (z_back - z).abs().max().item() < 1e-4


@pytest.mark.parametrize("name", list(CASES))
def test_log_det_matches_autograd(name):
    """``log|det dx/dz|`` equals the log-det of autograd's Jacobian, example by example."""
    batch = 2
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # some Pyro inverses allocate default-dtype tensors
    try:
        _check_log_det(name, batch)
    finally:
        torch.set_default_dtype(default)


def _check_log_det(name: str, batch: int) -> None:
    _, t, shape = _make(name, batch=batch, dtype=torch.float64)
    z = _input(t, shape, batch, torch.float64)
    ld = t.log_abs_det_jacobian(z, t(z))
    for i in range(batch):
        zi = z[i : i + 1]

        def f(v, i=i, zi=zi):
            # broadcast example i to the whole batch (a conditioned transform carries one
            # context per row) and read row i back
            return t(v.reshape(zi.shape).expand(batch, *zi.shape[1:]))[i].reshape(-1)

        jac = torch.autograd.functional.jacobian(f, zi.reshape(-1).clone())
        expected = torch.linalg.slogdet(jac).logabsdet
        assert abs(ld[i].item() - expected.item()) < 1e-5 * max(1.0, abs(expected.item()))


@pytest.mark.parametrize("name", list(CASES))
def test_every_parameter_gets_a_gradient(name):
    module, t, shape = _make(name, batch=4)
    x = torch.randn(4, *shape, requires_grad=True)
    z = t.inv(x)
    loss = z.square().sum() - t.log_abs_det_jacobian(z, x).sum()
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for pname, p in module.named_parameters():
        assert p.grad is not None, pname
        assert p.grad.abs().sum() > 0, pname


# ---------------------------------------------------------------- the Flow module and builders

BUILDERS = {
    "realnvp": lambda c: realnvp(D, 2, (8,), context_dim=c),
    "maf": lambda c: maf(D, 2, (8,), context_dim=c),
    "iaf": lambda c: iaf(D, 2, (8,), context_dim=c),
    "nsf": lambda c: nsf(D, 2, (8,), context_dim=c),
    "nsf_ar": lambda c: nsf(D, 2, (8,), context_dim=c, coupling=False),
}


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("context_dim", [0, CTX])
def test_builders_distribution(name, context_dim):
    flow = BUILDERS[name](context_dim)
    ctx = torch.randn(6, context_dim) if context_dim else None
    d = flow(ctx)
    assert isinstance(d, dist.TransformedDistribution)
    x = flow.sample(context=ctx) if context_dim else flow.sample((6,))
    assert x.shape == (6, D)
    lp = flow.log_prob(x, ctx)
    assert lp.shape == (6,) and torch.isfinite(lp).all()


def test_flow_log_prob_is_normalised_in_1d_grid():
    """A 2-D flow's density integrates to ~1 over a wide grid (checks the sign of log|det|)."""
    torch.manual_seed(0)
    flow = nsf(2, 2, (16,))
    g = torch.linspace(-6, 6, 241)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    with torch.no_grad():
        p = flow.log_prob(torch.stack([xx, yy], -1).reshape(-1, 2)).exp()
    mass = p.sum().item() * (g[1] - g[0]).item() ** 2
    assert abs(mass - 1.0) < 0.02


def test_glow_shapes_sampling_and_saving(tmp_path):
    torch.manual_seed(0)
    flow = glow((1, 8, 8), levels=2, steps=2, hidden=8)
    x = torch.rand(16, 1, 8, 8)
    lp = flow.log_prob(x)  # first call: actnorm data-dependent init
    assert lp.shape == (16,)
    assert all(bool(m.initialized) for m in flow.modules() if isinstance(m, ActNorm))
    assert flow.sample((3,)).shape == (3, 1, 8, 8)
    path = tmp_path / "glow.safetensors"
    save_file({k: v.contiguous() for k, v in flow.state_dict().items()}, str(path))
    other = glow((1, 8, 8), levels=2, steps=2, hidden=8)
    other.load_state_dict(load_file(str(path)))
    other.eval()
    flow.eval()
    assert torch.allclose(other.log_prob(x), flow.log_prob(x), atol=1e-4)


def test_actnorm_data_dependent_init():
    t = ActNorm(3, event_dim=3)
    z = t.inv(torch.randn(32, 3, 4, 4) * torch.tensor([1.0, 5.0, 0.1]).view(3, 1, 1) + 2)
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z.std((0, 2, 3)), torch.ones(3), atol=1e-4)


@pytest.mark.parametrize("factory", [T.planar, T.radial, T.sylvester, T.polynomial,
                                     T.neural_autoregressive, T.block_autoregressive])
def test_non_invertible_transform_is_refused_when_scoring(factory):
    t = factory(3)
    flow = Flow([t], event_shape=(3,))
    assert flow.sample((2,)).shape == (2, 3)  # sampling is fine
    with pytest.raises(ValueError, match=type(t).__name__):
        flow.log_prob(torch.randn(2, 3))
    with pytest.raises(ValueError, match=type(t).__name__):
        flow_model(flow)
    base = dist.Normal(torch.zeros(3), 1.0).to_event(1)
    with pytest.raises(ValueError, match=type(t).__name__):
        check_invertible(dist.TransformedDistribution(base, [T.ComposeTransform([t])]))
    assert isinstance(t, NON_INVERTIBLE)


def test_flow_model_log_joint_is_the_exact_log_likelihood():
    torch.manual_seed(0)
    pyro.clear_param_store()
    flow = realnvp(2, 2, (8,))
    x = torch.randn(7, 2)
    tr = pyro.poutine.trace(flow_model(flow)).get_trace(x)
    assert torch.allclose(tr.log_prob_sum(), flow.log_prob(x).sum())
    loss = pyro.infer.Trace_ELBO().differentiable_loss(flow_model(flow), lambda x: None, x)
    assert torch.allclose(loss, -flow.log_prob(x).sum())


def test_conditional_flow_model_and_class_context():
    flow = realnvp(2, 2, (8,), context_dim=10)
    y = torch.nn.functional.one_hot(torch.tensor([0, 3, 3, 9]), 10).float()
    x = torch.randn(4, 2)
    tr = pyro.poutine.trace(flow_model(flow)).get_trace(x, y)
    assert torch.allclose(tr.log_prob_sum(), flow.log_prob(x, y).sum())


def test_realnvp_learns_a_shifted_gaussian():
    torch.manual_seed(0)
    flow = realnvp(2, 2, (16,), actnorm=True)
    data = torch.randn(256, 2) * torch.tensor([0.5, 2.0]) + torch.tensor([3.0, -1.0])
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    for _ in range(100):
        opt.zero_grad()
        loss = -flow.log_prob(data).mean()
        loss.backward()
        opt.step()
    exact = 1 + math.log(2 * math.pi) + math.log(0.5 * 2.0)  # entropy of the true Gaussian
    assert loss.item() < exact + 0.1


@pytest.mark.parametrize(
    "call, arg",
    [
        (lambda: build_flow(1), "dim"),
        (lambda: build_flow(3, "planar"), "layer"),
        (lambda: build_flow(3, num_layers=0), "num_layers"),
        (lambda: build_flow(3, "affine_autoregressive", fast="both"), "fast"),
        (lambda: glow((1, 6, 6), levels=2), "shape"),
        (lambda: ActNorm(0), "channels"),
        (lambda: Permutation(torch.tensor([0, 0])), "permutation"),
        (lambda: FactorOut(InvertibleConv1x1(2), keep=0), "keep"),
        (lambda: Flow([nn.Linear(2, 2)], (2,)), "transforms"),
        (lambda: realnvp(2)(torch.randn(2)), "context"),
        (lambda: realnvp(2, context_dim=3)(), "context"),
        (lambda: realnvp(2).log_prob(torch.randn(4, 3)), "x"),
        (lambda: Squeeze()(torch.randn(1, 3, 3)), "factor"),
        (lambda: CNF(2, exact_trace=False, method="nope"), "method"),
    ],
)
def test_bad_input_names_the_argument(call, arg):
    with pytest.raises(ValueError, match=arg):
        call()


# ---------------------------------------------------------------- pictures


def test_pictures_are_written_as_png(tmp_path):
    from probgen.metrics.grids import save_grid
    from probgen.metrics.plots import plot_density_2d
    from probgen.models.flows.plots import plot_warp

    torch.manual_seed(0)
    flow2d = realnvp(2, 2, (8,))
    paths = [
        plot_density_2d(flow2d, torch.randn(50, 2), tmp_path / "density.png", grid=30),
        plot_warp(flow2d, tmp_path / "warp.png", lines=5),
        plot_warp(realnvp(2, 2, (8,), context_dim=2), tmp_path / "warp_c.png", lines=5,
                  context=torch.zeros(2)),
        save_grid(glow((1, 8, 8), 2, 1, 8).sample((9,)).clamp(0, 1), tmp_path / "grid.png"),
    ]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="flow"):
        plot_warp(realnvp(3), tmp_path / "bad.png")
