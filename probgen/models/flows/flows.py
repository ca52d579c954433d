"""Normalizing flows as Pyro ``TransformedDistribution``s (zuko style).

A [`Flow`][probgen.models.flows.flows.Flow] is an ``nn.Module`` whose
``forward(context=None)`` *returns a distribution*: a standard Normal base pushed through a list of
Pyro transforms (base -> data order). The families differ only in the layer they stack:

=================  ==========================================  ==========================
builder            layer (Pyro transform)                      reference
=================  ==========================================  ==========================
`realnvp`          ``affine_coupling``                         Dinh et al. 2017
`maf`              ``affine_autoregressive``, scoring parallel  Papamakarios et al. 2017
`iaf`              ``affine_autoregressive``, sampling parallel Kingma et al. 2016
`nsf`              ``spline_coupling`` / ``spline_autoregressive``  Durkan et al. 2019
`glow`             actnorm + 1x1 conv + conv affine coupling,    Kingma & Dhariwal 2018
                   squeeze and multi-scale factor-out
=================  ==========================================  ==========================

Class-conditional flows pass ``context_dim`` (Pyro's conditional transforms); the context is
a float tensor, e.g. ``F.one_hot(y, 10).float()``.

Scoring data needs every transform's inverse; Pyro's planar, radial, Sylvester, polynomial,
(block) neural autoregressive transforms only invert values they produced themselves.
[`check_invertible`][probgen.models.flows.flows.check_invertible] raises a ``ValueError`` naming
such a transform; [`Flow.log_prob`][probgen.models.flows.flows.Flow.log_prob] and
[`flow_model`][probgen.models.flows.flows.flow_model] call it before scoring.

Examples:
    >>> import torch
    >>> flow = realnvp(2, num_layers=2, hidden=(16,))
    >>> flow().log_prob(torch.randn(5, 2)).shape
    torch.Size([5])
    >>> flow.sample((3,)).shape
    torch.Size([3, 2])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Literal

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro.distributions.conditional import ConditionalTransform, ConditionalTransformModule
from pyro.distributions.transforms.planar import ConditionedPlanar
from pyro.distributions.transforms.radial import ConditionedRadial
from pyro.nn import ConditionalDenseNN
from torch import Tensor, nn
from torch.distributions import Distribution, Transform

from probgen.nn.flow_layers import (
    ActNorm,
    Invert,
    InvertibleConv1x1,
    Permutation,
    clear_transform_caches,
)
from probgen.nn.flow_multiscale import ConvCouplingNet, FactorOut, Squeeze, Unsqueeze
from probgen.nn.spline_autoregressive import MaskedSplineAutoregressive

__all__ = [
    "Flow",
    "LAYERS",
    "NON_INVERTIBLE",
    "ConditionalSplineCoupling",
    "build_flow",
    "realnvp",
    "maf",
    "iaf",
    "nsf",
    "glow",
    "check_invertible",
    "flow_model",
]

Layer = Literal["affine_coupling", "spline_coupling", "affine_autoregressive",
                "spline_autoregressive"]
LAYERS: tuple[str, ...] = ("affine_coupling", "spline_coupling", "affine_autoregressive",
                           "spline_autoregressive")

#: Pyro transforms whose ``_inverse`` only works on values they produced (from a cache).
NON_INVERTIBLE: tuple[type, ...] = (
    T.Planar, T.Radial, T.Sylvester, T.Polynomial, T.NeuralAutoregressive,
    T.BlockAutoregressive, T.ConditionalPlanar, T.ConditionalRadial,
    T.ConditionalNeuralAutoregressive,
    ConditionedPlanar, ConditionedRadial,
)


def _children(t: object) -> list[object]:
    if isinstance(t, T.ComposeTransform):
        return list(t.parts)
    if isinstance(t, T.IndependentTransform):
        return [t.base_transform]
    if isinstance(t, FactorOut):
        return [t.inner]
    if isinstance(t, Invert):
        return []  # scoring runs base's forward direction, which always exists
    return []


def check_invertible(obj: Distribution | Transform | nn.Module | Sequence[object]) -> None:
    """Raise ``ValueError`` if scoring data through ``obj`` would need a missing inverse.

    ``obj`` is a ``TransformedDistribution``, a transform, a
    [`Flow`][probgen.models.flows.flows.Flow] or a list of those.

    Examples:
        >>> base = dist.Normal(torch.zeros(2), 1.0).to_event(1)
        >>> check_invertible(dist.TransformedDistribution(base, [T.planar(2)]))
        Traceback (most recent call last):
        ...
        ValueError: Planar has no inverse: it cannot score data (log_prob); use it for sampling \
or as a variational guide, or pick an invertible transform
    """
    if isinstance(obj, Flow):
        items: list[object] = list(obj.transforms)
    elif isinstance(obj, torch.distributions.TransformedDistribution):
        items = list(obj.transforms)
    elif isinstance(obj, Sequence):
        items = list(obj)
    else:
        items = [obj]
    while items:
        t = items.pop()
        if isinstance(t, NON_INVERTIBLE) or getattr(t, "has_inverse", True) is False or (
            isinstance(t, Transform) and not t.bijective
        ):
            raise ValueError(
                f"{type(t).__name__} has no inverse: it cannot score data (log_prob); use it for "
                "sampling or as a variational guide, or pick an invertible transform"
            )
        items.extend(_children(t))


class Flow(nn.Module):
    """A normalizing flow: standard Normal base -> ``transforms`` (base -> data order).

    ``forward(context)`` returns a ``pyro.distributions.TransformedDistribution``; a
    conditional flow (any ``ConditionalTransformModule`` in the list) needs ``context`` of shape
    ``(..., context_dim)`` and its distribution has batch shape ``context.shape[:-1]``.

    Args:
        transforms: Pyro transform modules (conditional or not), base -> data order.
        event_shape: shape of one data point, e.g. ``(2,)`` or ``(1, 8, 8)``.

    Examples:
        >>> flow = Flow([T.affine_coupling(2, hidden_dims=[8])], event_shape=(2,))
        >>> flow.log_prob(torch.zeros(4, 2)).shape
        torch.Size([4])
    """

    def __init__(self, transforms: Sequence[nn.Module], event_shape: Sequence[int]) -> None:
        super().__init__()
        for t in transforms:
            if not isinstance(t, nn.Module) or not isinstance(t, Transform | ConditionalTransform):
                raise ValueError(
                    f"transforms: {type(t).__name__} is not a Pyro transform module"
                )
        event_shape = tuple(int(s) for s in event_shape)
        if not event_shape or min(event_shape) <= 0:
            raise ValueError(f"event_shape must be non-empty and positive, got {event_shape}")
        self.transforms = nn.ModuleList(transforms)
        self.event_shape = event_shape
        self.register_buffer("base_loc", torch.zeros(event_shape))
        self.register_buffer("base_scale", torch.ones(event_shape))

    @property
    def is_conditional(self) -> bool:
        """Whether ``forward`` needs a ``context``."""
        return any(isinstance(t, ConditionalTransform) for t in self.transforms)

    def forward(self, context: Tensor | None = None) -> dist.TransformedDistribution:
        """The flow's distribution (given ``context`` for a conditional flow)."""
        clear_transform_caches(self)  # a new distribution must not reuse stale results
        base = dist.Normal(self.base_loc, self.base_scale).to_event(len(self.event_shape))
        if self.is_conditional:
            if context is None:
                raise ValueError("context is required: this flow is conditional")
            base = base.expand(context.shape[:-1])
            ts = [t.condition(context) if isinstance(t, ConditionalTransform) else t
                  for t in self.transforms]
        else:
            if context is not None:
                raise ValueError("context given to a flow that is not conditional")
            ts = list(self.transforms)
        return dist.TransformedDistribution(base, ts)

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Exact ``log p(x)`` (nats), checking first that every transform can invert."""
        check_invertible(self)
        if x.shape[x.dim() - len(self.event_shape):] != self.event_shape:
            raise ValueError(f"x: trailing shape {tuple(x.shape)} must end in {self.event_shape}")
        return self(context).log_prob(x)

    def sample(self, sample_shape: Sequence[int] = (), context: Tensor | None = None) -> Tensor:
        """Draw samples of shape ``sample_shape + batch_shape + event_shape``."""
        return self(context).sample(torch.Size(sample_shape))


class ConditionalSplineCoupling(ConditionalTransformModule):
    """Spline coupling whose conditioner sees ``(x1, context)`` -- Pyro has no such class.

    The first ``split_dim`` coordinates pass unchanged (``identity=True``); the rest go
    through a rational-quadratic spline whose parameters come from ``ConditionalDenseNN``.

    Examples:
        >>> t = ConditionalSplineCoupling(4, context_dim=3, hidden=(16,))
        >>> t.condition(torch.randn(3))(torch.randn(4)).shape
        torch.Size([4])
    """

    def __init__(self, dim: int, context_dim: int, hidden: Sequence[int] = (64, 64),
                 split_dim: int | None = None, bins: int = 8, bound: float = 3.0) -> None:
        super().__init__()
        self.dim, self.bins, self.bound = dim, bins, bound
        self.split_dim = dim // 2 if split_dim is None else split_dim
        if not 0 < self.split_dim < dim:
            raise ValueError(f"split_dim must be in 1..{dim - 1}, got {self.split_dim}")
        rest = dim - self.split_dim
        self.nn = ConditionalDenseNN(self.split_dim, context_dim, list(hidden),
                                     param_dims=[rest * bins, rest * bins, rest * (bins - 1),
                                                 rest * bins])

    def condition(self, context: Tensor) -> T.SplineCoupling:
        return T.SplineCoupling(self.dim, self.split_dim, partial(self.nn, context=context),
                                count_bins=self.bins, bound=self.bound, identity=True)


def _layer(kind: str, dim: int, hidden: list[int], context_dim: int, bins: int,
           bound: float) -> nn.Module:
    if kind == "affine_coupling":
        if context_dim:
            return T.conditional_affine_coupling(dim, context_dim, hidden_dims=hidden)
        return T.affine_coupling(dim, hidden_dims=hidden)
    if kind == "spline_coupling":
        if context_dim:
            return ConditionalSplineCoupling(dim, context_dim, hidden, bins=bins, bound=bound)
        return T.spline_coupling(dim, hidden_dims=hidden, count_bins=bins, bound=bound)
    if kind == "affine_autoregressive":
        if context_dim:
            return T.conditional_affine_autoregressive(dim, context_dim, hidden_dims=hidden)
        return T.affine_autoregressive(dim, hidden_dims=hidden)
    if kind == "spline_autoregressive":
        if context_dim:
            return T.conditional_spline_autoregressive(dim, context_dim, hidden_dims=hidden,
                                                       count_bins=bins, bound=bound)
        return T.spline_autoregressive(dim, hidden_dims=hidden, count_bins=bins, bound=bound)
    raise ValueError(f"layer must be one of {LAYERS}, got {kind!r}")


def build_flow(
    dim: int,
    layer: Layer = "affine_coupling",
    num_layers: int = 4,
    hidden: Sequence[int] = (64, 64),
    context_dim: int = 0,
    fast: Literal["score", "sample"] = "score",
    bins: int = 8,
    bound: float = 3.0,
    actnorm: bool = False,
) -> Flow:
    """A flow over vectors of size ``dim``: ``num_layers`` of ``layer``, reversing the
    coordinates between layers.

    Args:
        dim: data dimension (>= 2).
        layer: one of `LAYERS`.
        num_layers: how many layers.
        hidden: hidden sizes of each conditioner network.
        context_dim: > 0 for a conditional flow (Pyro's conditional transforms).
        fast: for autoregressive layers, which direction is one parallel pass: ``"score"``
            (MAF) or ``"sample"`` (IAF). Coupling layers are fast both ways.
        bins: spline bins (``spline_*`` layers).
        bound: spline interval ``[-bound, bound]``; identity outside.
        actnorm: put an [`ActNorm`][probgen.nn.flow_layers.ActNorm] before every layer.

    Examples:
        >>> flow = build_flow(3, "spline_autoregressive", num_layers=2, hidden=(8,))
        >>> flow.log_prob(torch.randn(7, 3)).shape
        torch.Size([7])
    """
    if not isinstance(dim, int) or dim < 2:
        raise ValueError(f"dim must be an int >= 2, got {dim!r}")
    if not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
    if fast not in ("score", "sample"):
        raise ValueError(f"fast must be 'score' or 'sample', got {fast!r}")
    if context_dim < 0:
        raise ValueError(f"context_dim must be >= 0, got {context_dim!r}")
    hidden = [int(h) for h in hidden]
    # probgen's own spline MAF layer scores in one pass and reverses its order in place
    native = layer == "spline_autoregressive" and not context_dim
    invert = layer.endswith("autoregressive") and (fast == "sample" if native else
                                                   fast == "score")
    scoring: list[nn.Module] = []  # data -> base order
    for i in range(num_layers):
        if i and not native:
            scoring.append(Permutation(torch.arange(dim - 1, -1, -1)))
        if actnorm:
            scoring.append(ActNorm(dim))
        if native:
            t = MaskedSplineAutoregressive(dim, hidden, bins, bound, reverse=bool(i % 2))
        else:
            t = _layer(layer, dim, hidden, context_dim, bins, bound)
        if invert:
            t = t.inv if context_dim else Invert(t)
        scoring.append(t)
    return Flow(scoring[::-1], event_shape=(dim,))


def realnvp(dim: int, num_layers: int = 4, hidden: Sequence[int] = (64, 64),
            context_dim: int = 0, actnorm: bool = False) -> Flow:
    """RealNVP: affine coupling layers (Dinh et al. 2017). See
    [`build_flow`][probgen.models.flows.flows.build_flow].

    Examples:
        >>> realnvp(4, num_layers=2).sample((2,)).shape
        torch.Size([2, 4])
    """
    return build_flow(dim, "affine_coupling", num_layers, hidden, context_dim, actnorm=actnorm)


def maf(dim: int, num_layers: int = 4, hidden: Sequence[int] = (64, 64),
        context_dim: int = 0) -> Flow:
    """MAF: affine autoregressive layers, scoring in one pass (Papamakarios et al. 2017).

    Examples:
        >>> maf(3, num_layers=2).log_prob(torch.zeros(3)).shape
        torch.Size([])
    """
    return build_flow(dim, "affine_autoregressive", num_layers, hidden, context_dim, "score")


def iaf(dim: int, num_layers: int = 4, hidden: Sequence[int] = (64, 64),
        context_dim: int = 0) -> Flow:
    """IAF: affine autoregressive layers, sampling in one pass (Kingma et al. 2016).

    Examples:
        >>> iaf(3, num_layers=2).sample((5,)).shape
        torch.Size([5, 3])
    """
    return build_flow(dim, "affine_autoregressive", num_layers, hidden, context_dim, "sample")


def nsf(dim: int, num_layers: int = 4, hidden: Sequence[int] = (64, 64), context_dim: int = 0,
        coupling: bool = True, bins: int = 8, bound: float = 3.0) -> Flow:
    """Neural spline flow: rational-quadratic splines, coupling or autoregressive (Durkan
    et al. 2019).

    Examples:
        >>> nsf(2, num_layers=2, hidden=(16,)).log_prob(torch.randn(4, 2)).shape
        torch.Size([4])
    """
    layer: Layer = "spline_coupling" if coupling else "spline_autoregressive"
    return build_flow(dim, layer, num_layers, hidden, context_dim, "score", bins, bound)


def _glow_level(shape: tuple[int, int, int], levels: int, steps: int, hidden: int
                ) -> list[nn.Module]:
    """One Glow level in scoring (data -> base) order; shape-preserving overall."""
    c, h, w = shape
    c4, h2, w2 = 4 * c, h // 2, w // 2
    scoring: list[nn.Module] = [Unsqueeze()]  # its inverse squeezes the data
    for _ in range(steps):
        half = c4 // 2
        coupling = T.AffineCoupling(half, ConvCouplingNet(half, c4 - half, (h2, w2), hidden),
                                    dim=-3)
        scoring += [ActNorm(c4, event_dim=3), InvertibleConv1x1(c4), coupling]
    if levels > 1:
        keep = c4 // 2
        inner = _glow_level((keep, h2, w2), levels - 1, steps, hidden)
        scoring.append(FactorOut(T.ComposeTransformModule(inner[::-1]), keep=keep))
    scoring.append(Squeeze())  # its inverse unsqueezes back to (C, H, W)
    return scoring


def glow(shape: Sequence[int] = (1, 8, 8), levels: int = 2, steps: int = 4,
         hidden: int = 64) -> Flow:
    """Glow for images ``(C, H, W)``: per level squeeze, ``steps`` x (actnorm, 1x1 conv,
    conv affine coupling), factor out half the channels, recurse (Kingma & Dhariwal 2018).

    The whole model is one shape-preserving bijection onto a standard Normal of ``shape``
    (factored-out variables keep their place in the tensor).

    Examples:
        >>> flow = glow((1, 8, 8), levels=2, steps=1, hidden=8)
        >>> flow.log_prob(torch.rand(3, 1, 8, 8)).shape
        torch.Size([3])
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) <= 0:
        raise ValueError(f"shape must be (C, H, W), got {shape}")
    if shape[1] % 2**levels or shape[2] % 2**levels:
        raise ValueError(f"shape: height and width must be divisible by 2**levels={2**levels}")
    if levels < 1 or steps < 1:
        raise ValueError(f"levels and steps must be >= 1, got levels={levels}, steps={steps}")
    return Flow(_glow_level(shape, levels, steps, hidden)[::-1], event_shape=shape)


def flow_model(flow: Flow, name: str = "flow") -> Callable[..., None]:
    """A Pyro model ``model(x, context=None)`` scoring a batch ``x`` under ``flow``.

    It registers ``flow`` with ``pyro.module`` and draws ``"x"`` in a ``"data"`` plate, so
    the exact log-likelihood is the model's log joint (train with an empty guide).

    Examples:
        >>> model = flow_model(realnvp(2, num_layers=1, hidden=(8,)))
        >>> tr = pyro.poutine.trace(model).get_trace(torch.randn(6, 2))
        >>> tr.nodes["x"]["fn"].batch_shape
        torch.Size([6])
    """
    if not isinstance(flow, Flow):
        raise ValueError(f"flow must be a probgen Flow, got {type(flow).__name__}")
    check_invertible(flow)

    def model(x: Tensor, context: Tensor | None = None) -> None:
        pyro.module(name, flow)
        d = flow(context)
        n = x.shape[0] if x.dim() > len(flow.event_shape) else 1
        with pyro.plate("data", n, dim=-1):
            pyro.sample("x", d, obs=x)

    return model
