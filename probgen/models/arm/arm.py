"""Autoregressive models (ARMs): the chain rule as a Bayesian network with one neural conditional.

``p(x) = prod_d p(x_d | x_<d)`` is the fully connected chain ``x_1 -> x_2 -> ... -> x_D``.
Instead of ``D`` networks, one *causal* network ([`MADE`][probgen.nn.made.MADE],
[`CausalConvNet`][probgen.nn.causal_conv.CausalConvNet],
[`GatedPixelCNN`][probgen.nn.pixelcnn.GatedPixelCNN]) computes all ``D`` conditionals in one pass.
So the graph has a single vectorised node ``x`` (event dimension = the ``D`` pixels) whose
distribution, [`ARMDistribution`][probgen.models.arm.arm.ARMDistribution], runs that network in
``log_prob`` (exact, one pass) and samples ancestrally (``D`` passes).
[`ARM`][probgen.models.arm.arm.ARM] compiles that graph with
[`Program`][probgen.program.compile.Program], so the engine trains it with
``fit(arm, None, x, objective="likelihood")`` and [`exact_nll`][probgen.infer.likelihood.exact_nll]
scores it: no ARM-specific training loop.

Two training aids live in [`ARM`][probgen.models.arm.arm.ARM]: *input dropout* (each input pixel is
hidden from the network with probability ``input_dropout`` while training) and an exponential moving
average (EMA) of the weights. Whenever the model is not taking a training step (``.eval()``
or ``torch.no_grad()``: validation, [`exact_nll`][probgen.infer.likelihood.exact_nll], sampling) it
scores with the EMA weights and without dropout. An ARM may hold several networks: its distribution
is then the uniform mixture ``log p(x) = log mean_k p_k(x)``, still an exact likelihood (an
ensemble).

Examples:
    >>> import torch
    >>> from probgen.nn.made import MADE
    >>> arm = ARM(MADE(dims=4, num_levels=2, hidden=(16,)))
    >>> x = torch.randint(0, 2, (3, 4))
    >>> arm.log_prob(x).shape, arm.sample(5).shape
    (torch.Size([3]), torch.Size([5, 4]))
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator, Sequence

import torch
from pyro.distributions import TorchDistribution, constraints
from torch import Tensor, nn
from torch.nn import functional as F

from probgen.errors import ProbgenError
from probgen.graph import BayesNet
from probgen.graph.cpd import NeuralCPD
from probgen.nn.causal_conv import CausalConvNet
from probgen.nn.made import MADE
from probgen.nn.pixelcnn import GatedPixelCNN
from probgen.program.compile import Program

__all__ = ["ARMDistribution", "ARM", "chain_graph", "build_net", "check_levels"]


def check_levels(x: Tensor, num_levels: int, dims: int) -> Tensor:
    """``x`` as ``long`` levels after checking them: integers in ``0..num_levels-1``, last
    dimension ``dims`` (a clear error naming ``x`` otherwise).

    Examples:
        >>> check_levels(torch.tensor([[0.0, 2.0]]), num_levels=3, dims=2)
        tensor([[0, 2]])
    """
    if x.is_floating_point():
        if not bool((x == x.round()).all()):
            raise ProbgenError("x: values must be integer levels, got fractions")
        x = x.long()
    if x.shape[-1:] != (dims,):
        raise ProbgenError(f"x: last dimension must be {dims}, got shape {tuple(x.shape)}")
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= num_levels):
        raise ProbgenError(f"x: levels must lie in 0..{num_levels - 1}")
    return x


class ARMDistribution(TorchDistribution):
    """``p(x) = mean_k prod_d Categorical(x_d | logits_k(x_<d) / temperature)``.

    Args:
        nets: causal networks mapping one-hot ``(B, D, K)`` to logits ``(B, D, K)``; more
            than one makes a uniform mixture.
        dims: the number of variables D.
        num_levels: the number of levels K of each variable.
        temperature: divides every logit (< 1 sharper, > 1 flatter); ``log_prob`` is the
            exact log-probability of the tempered sampler.
        input_dropout: probability of hiding each input pixel (training only).

    Examples:
        >>> from probgen.nn.made import MADE
        >>> d = ARMDistribution([MADE(3, 2, (8,))], dims=3, num_levels=2)
        >>> grid = torch.cartesian_prod(*[torch.arange(2)] * 3)  # all 8 binary vectors
        >>> round(float(d.log_prob(grid).exp().sum().detach()), 5)
        1.0
    """

    arg_constraints: dict = {}
    has_enumerate_support = False

    def __init__(self, nets: Sequence[nn.Module], dims: int, num_levels: int,
                 batch_shape: torch.Size | Sequence[int] = (), temperature: float = 1.0,
                 input_dropout: float = 0.0, validate_args: bool | None = None):
        if not nets:
            raise ProbgenError("nets: at least one network is needed")
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ProbgenError(f"temperature must be a positive number, got {temperature!r}")
        self.nets, self.dims, self.num_levels = list(nets), dims, num_levels
        self.temperature, self.input_dropout = float(temperature), float(input_dropout)
        super().__init__(torch.Size(batch_shape), torch.Size([dims]), validate_args=False)

    @property
    def support(self) -> constraints.Constraint:
        return constraints.independent(constraints.integer_interval(0, self.num_levels - 1), 1)

    def expand(self, batch_shape: Sequence[int], _instance=None) -> ARMDistribution:
        return ARMDistribution(self.nets, self.dims, self.num_levels, batch_shape,
                               self.temperature, self.input_dropout)

    def _logits(self, net: nn.Module, x: Tensor) -> Tensor:
        onehot = F.one_hot(x, self.num_levels).float()
        if self.input_dropout > 0:
            keep = torch.rand(x.shape, device=x.device) >= self.input_dropout
            onehot = onehot * keep.unsqueeze(-1)  # a zero row means "pixel unknown"
        return net(onehot) / self.temperature

    def log_prob(self, value: Tensor) -> Tensor:
        x = check_levels(value, self.num_levels, self.dims)
        flat = x.reshape(-1, self.dims)
        per_net = []
        for net in self.nets:
            logp = torch.log_softmax(self._logits(net, flat), -1)  # (B, D, K)
            per_net.append(logp.gather(-1, flat.unsqueeze(-1)).squeeze(-1).sum(-1))
        lp = torch.stack(per_net)  # (nets, B)
        lp = lp[0] if len(self.nets) == 1 else torch.logsumexp(lp, 0) - math.log(len(lp))
        return lp.reshape(x.shape[:-1])

    @torch.no_grad()
    def sample(self, sample_shape: torch.Size | Sequence[int] = ()) -> Tensor:
        """Ancestral sampling: ``x_1``, then ``x_2 | x_1``, ... (``D`` network passes)."""
        shape = torch.Size(sample_shape) + self.batch_shape
        n = shape.numel()
        device = next(iter(self.nets[0].parameters())).device
        member = torch.randint(len(self.nets), (n,), device=device)
        x = torch.zeros(n, self.dims, dtype=torch.long, device=device)
        for k, net in enumerate(self.nets):
            rows = (member == k).nonzero().squeeze(-1)
            if rows.numel() == 0:
                continue
            xk = x[rows]
            onehot = torch.zeros(len(rows), self.dims, self.num_levels, device=device)
            for d in range(self.dims):  # positions >= d stay "unknown" (zero rows)
                logits = net(onehot)[:, d] / self.temperature
                xk[:, d] = torch.distributions.Categorical(logits=logits).sample()
                onehot[:, d] = F.one_hot(xk[:, d], self.num_levels).float()
            x[rows] = xk
        return x.reshape(shape + (self.dims,))


@contextlib.contextmanager
def _eval_mode(modules: Sequence[nn.Module]) -> Iterator[None]:
    was = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, w in zip(modules, was):
            m.train(w)


def chain_graph(num_vars: int, name: str = "chain") -> BayesNet:
    """The explicit chain-rule network ``x1 -> x2 -> ...``, every ``x_i`` a parent of later ones.

    Examples:
        >>> chain_graph(3).factorization()
        'p(x1, x2, x3) = p(x1) p(x2 | x1) p(x3 | x1, x2)'
    """
    if isinstance(num_vars, bool) or not isinstance(num_vars, int) or num_vars < 1:
        raise ProbgenError(f"num_vars must be a positive integer, got {num_vars!r}")
    names = [f"x{i + 1}" for i in range(num_vars)]
    return BayesNet([(a, b) for j, b in enumerate(names) for a in names[:j]], nodes=names,
                    name=name)


class ARM(nn.Module):
    """An autoregressive model over ``D`` discrete variables: a one-node Pyro program.

    Args:
        net: a causal network (or a list of them: a uniform mixture) with attributes
            ``dims`` and ``num_levels``.
        input_dropout: probability of hiding each input pixel during training.
        ema_decay: decay of the weight moving average used for evaluation and sampling
            (``None``: evaluate the trained weights themselves).
        name: the graph's name.

    Call it as a Pyro model: ``arm(x)`` observes ``x`` (shape ``(N, D)``, integer levels);
    ``arm(num_rows=n)`` samples. Train with ``fit(arm, None, x, objective="likelihood")``.
    """

    def __init__(self, net: nn.Module | Sequence[nn.Module], *, input_dropout: float = 0.0,
                 ema_decay: float | None = None, name: str = "arm"):
        super().__init__()
        nets = list(net) if isinstance(net, (list, tuple, nn.ModuleList)) else [net]
        if not nets or not all(isinstance(m, nn.Module) for m in nets):
            raise ProbgenError("net: expected an nn.Module or a non-empty list of them")
        self.dims, self.num_levels = int(nets[0].dims), int(nets[0].num_levels)
        if any((m.dims, m.num_levels) != (self.dims, self.num_levels) for m in nets):
            raise ProbgenError("net: every network must share dims and num_levels")
        if not 0.0 <= input_dropout < 1.0:
            raise ProbgenError(f"input_dropout must lie in [0, 1), got {input_dropout!r}")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ProbgenError(f"ema_decay must lie in (0, 1) or be None, got {ema_decay!r}")
        self.nets = nn.ModuleList(nets)
        self.input_dropout, self.ema_decay = float(input_dropout), ema_decay
        self.emas = None
        if ema_decay is not None:
            self.emas = nn.ModuleList(copy.deepcopy(m) for m in nets)
            self.emas.requires_grad_(False)
        self.data_shape = (self.dims,)
        self.bn = BayesNet.from_cpds([NeuralCPD("x", self._conditional, event_dim=1)], name=name)
        self.program = Program(self.bn, observed=["x"])

    # -- the conditional of node x ---------------------------------------------------------
    def _training_step(self) -> bool:
        return self.training and torch.is_grad_enabled()

    def _conditional(self) -> ARMDistribution:
        if self._training_step():
            return ARMDistribution(self.nets, self.dims, self.num_levels,
                                   input_dropout=self.input_dropout)
        return self.distribution()

    def distribution(self, temperature: float = 1.0) -> ARMDistribution:
        """The evaluation distribution: EMA weights (if kept), no dropout, given temperature."""
        nets = self.emas if self.emas is not None else self.nets
        return _EvalARMDistribution(list(nets), self.dims, self.num_levels,
                                    temperature=temperature)

    @torch.no_grad()
    def update_ema(self) -> None:
        """``ema <- decay * ema + (1 - decay) * weights`` (called once per training step)."""
        if self.emas is None:
            return
        for ema, net in zip(self.emas, self.nets):
            for e, p in zip(ema.parameters(), net.parameters()):
                e.lerp_(p, 1.0 - self.ema_decay)
            for e, b in zip(ema.buffers(), net.buffers()):
                e.copy_(b)

    def finalize(self) -> None:
        """Copy the EMA weights into the networks and drop the EMA (after training)."""
        if self.emas is not None:
            for ema, net in zip(self.emas, self.nets):
                net.load_state_dict(ema.state_dict())
            self.emas, self.ema_decay = None, None

    # -- Pyro model and conveniences -------------------------------------------------------
    def forward(self, x: Tensor | None = None, num_rows: int | None = None) -> dict[str, Tensor]:
        """The Pyro model: observe ``x`` ``(N, D)`` or sample ``num_rows`` rows."""
        if self._training_step():
            self.update_ema()  # the engine calls the model once per step, after the update
        if x is not None:
            x = check_levels(x, self.num_levels, self.dims)
        return self.program(x, num_rows=num_rows)

    @torch.no_grad()
    def log_prob(self, x: Tensor) -> Tensor:
        """Exact ``log p(x)`` in nats, one value per row of ``x`` ``(N, D)``."""
        return self.distribution().log_prob(x)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        """``n`` ancestral samples ``(n, D)`` of integer levels."""
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ProbgenError(f"n must be a positive integer, got {n!r}")
        return self.distribution(temperature).sample((n,))

    @classmethod
    def mixture(cls, arms: Sequence[ARM], name: str = "arm-ensemble") -> ARM:
        """A uniform mixture of trained ARMs (their evaluation weights): an exact ensemble."""
        if not arms:
            raise ProbgenError("arms: at least one ARM is needed")
        nets = [copy.deepcopy(n) for a in arms
                for n in (a.emas if a.emas is not None else a.nets)]
        return cls(nets, name=name)


class _EvalARMDistribution(ARMDistribution):
    """Scores and samples with the networks in eval mode (no dropout)."""

    def expand(self, batch_shape: Sequence[int], _instance=None) -> ARMDistribution:
        return _EvalARMDistribution(self.nets, self.dims, self.num_levels, batch_shape,
                                    self.temperature)

    def log_prob(self, value: Tensor) -> Tensor:
        with _eval_mode(self.nets):
            return super().log_prob(value)

    def sample(self, sample_shape: torch.Size | Sequence[int] = ()) -> Tensor:
        with _eval_mode(self.nets):
            return super().sample(sample_shape)


# ----------------------------------------------------------------------------- networks


def build_net(net: str, shape: Sequence[int] = (8, 8), num_levels: int = 17,
              channels: int = 64, layers: int = 6, dropout: float = 0.0) -> nn.Module:
    """A causal network by name: ``"pixelcnn"``, ``"causal_conv"`` or ``"made"``.

    Examples:
        >>> build_net("made", channels=32, layers=2).dims
        64
    """
    dims = int(math.prod(shape))
    if net == "pixelcnn":
        return GatedPixelCNN(shape, num_levels, channels, layers, dropout=dropout)
    if net == "causal_conv":
        return CausalConvNet(dims, num_levels, channels, layers, dropout=dropout)
    if net == "made":
        return MADE(dims, num_levels, hidden=[channels] * layers, dropout=dropout)
    raise ProbgenError(f"net: unknown {net!r}; choose 'pixelcnn', 'causal_conv' or 'made'")
