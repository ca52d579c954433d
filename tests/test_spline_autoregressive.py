"""The probgen-native spline MAF layer: the spline against Pyro's and autograd, the layer's
Jacobian, autoregressive structure and inverse, and its place in ``nsf(coupling=False)``."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

from probgen.models.flows.flows import nsf
from probgen.nn.spline_autoregressive import MaskedSplineAutoregressive, _knots, rq_spline


@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _params(n: int, k: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, k, generator=g), torch.randn(n, k, generator=g),
            torch.randn(n, k - 1, generator=g))


def test_spline_matches_pyro_inside_the_inner_bins_and_autograd_everywhere():
    w, h, d = _params(400)
    x = torch.linspace(-4, 4, 400)
    y, ladj = rq_spline(x, w, h, d)
    # Pyro pads the boundary derivatives with 1 - 1e-3 (probgen: exactly 1, a continuous
    # derivative at +-bound), so the two agree on every bin but the first and the last
    pyro_spline = importlib.import_module("pyro.distributions.transforms.spline")
    yp, lp = pyro_spline._monotonic_rational_spline(
        x, F.softmax(w, -1), F.softmax(h, -1), F.softplus(d), bound=3.0)
    cx = _knots(w, 3.0, 1e-3)
    inner = (x > cx[:, 1]) & (x < cx[:, -2])
    assert inner.sum() > 200
    torch.testing.assert_close(y[inner], yp[inner], rtol=0, atol=1e-12)
    torch.testing.assert_close(ladj[inner], lp[inner], rtol=0, atol=1e-12)
    jac = torch.autograd.functional.jacobian(lambda t: rq_spline(t, w, h, d)[0], x).diagonal()
    torch.testing.assert_close(ladj, jac.log(), rtol=0, atol=1e-10)
    outside = x.abs() >= 3
    assert torch.equal(y[outside], x[outside]) and bool((ladj[outside] == 0).all())
    one = [t[:1].expand(len(x), -1) for t in (w, h, d)]  # one spline over the whole line
    assert bool((rq_spline(x, *one)[0].diff() > 0).all())  # monotonic


def test_inverse_spline_inverts_and_negates_the_log_jacobian():
    w, h, d = _params(300, seed=1)
    x = torch.linspace(-3.5, 3.5, 300)
    y, ladj = rq_spline(x, w, h, d)
    back, inv = rq_spline(y, w, h, d, inverse=True)
    torch.testing.assert_close(back, x, rtol=0, atol=1e-10)
    torch.testing.assert_close(inv, -ladj, rtol=0, atol=1e-10)


@pytest.mark.parametrize("reverse", [False, True])
def test_layer_is_autoregressive_invertible_with_the_right_log_det(reverse):
    torch.manual_seed(0)
    t = MaskedSplineAutoregressive(4, hidden=(16, 16), bins=5, bound=2.0, reverse=reverse)
    x = torch.randn(6, 4) * 1.5
    z = t.inv(x)
    torch.testing.assert_close(t(z), x, rtol=0, atol=1e-9)
    jac = torch.autograd.functional.jacobian(lambda v: t.inv(v), x[0])
    order = list(range(4))[::-1] if reverse else list(range(4))
    permuted = jac[order][:, order]
    assert torch.equal(permuted.triu(1), torch.zeros(4, 4))  # z_i sees x_<i only
    logdet = torch.linalg.slogdet(jac)[1]
    # log |dx/dz| = -log |dz/dx|, from the cache and recomputed
    torch.testing.assert_close(t.log_abs_det_jacobian(z, x)[0], -logdet)
    t._ladj = None
    torch.testing.assert_close(t.log_abs_det_jacobian(z, x)[0], -logdet)


def test_nsf_autoregressive_uses_the_native_layer_and_is_a_normalised_density():
    torch.manual_seed(0)
    flow = nsf(2, num_layers=3, hidden=(16, 16), bins=6, coupling=False)
    layers = list(flow.transforms)
    assert len(layers) == 3 and all(isinstance(t, MaskedSplineAutoregressive) for t in layers)
    assert [t.reverse for t in layers] == [False, True, False][::-1]
    # the density integrates to 1 on a grid covering the mass (identity tails beyond +-3)
    g = torch.linspace(-8, 8, 401)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    with torch.no_grad():
        p = flow.log_prob(torch.stack([xx, yy], -1).reshape(-1, 2)).exp()
    assert float(p.sum() * (g[1] - g[0]) ** 2) == pytest.approx(1.0, abs=2e-3)
    s = flow.sample((5,))
    assert s.shape == (5, 2) and bool(torch.isfinite(flow.log_prob(s)).all())
    loss = -flow.log_prob(torch.randn(8, 2)).mean()
    loss.backward()
    assert all(p.grad is not None for p in flow.parameters())


def test_layer_checks_its_arguments():
    with pytest.raises(ValueError, match="dim"):
        MaskedSplineAutoregressive(1)
    with pytest.raises(ValueError, match="bins"):
        MaskedSplineAutoregressive(2, bins=1)
    with pytest.raises(ValueError, match="bound"):
        MaskedSplineAutoregressive(2, bound=0.0)
