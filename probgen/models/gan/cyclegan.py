"""The CycleGAN family (``probgen train cyclegan``): unpaired translation (Zhu et al. 2017).

Two generators ``G_AB``, ``G_BA`` ([`UNetGenerator`][probgen.nn.pix2pix.UNetGenerator]) form one
implicit program ([`cycle_program`][probgen.models.gan.cyclegan.cycle_program]) on the graph

    a -> fake_b -> rec_a,   b -> fake_a -> rec_b,   b -> idt_b,   a -> idt_a

(``fake_b = G_AB(a)``, ``rec_a = G_BA(fake_b)``, ``idt_b = G_AB(b)``, ...), every node a point
mass. [`CycleAdversarial`][probgen.models.gan.cyclegan.CycleAdversarial] owns the two PatchGAN
discriminators ``D_A``, ``D_B``, their optimizer and two history buffers of 50 fakes
([`HistoryPool`][probgen.models.gan.cyclegan.HistoryPool]; Shrivastava et al. 2017): each
discriminator step sees, per example, the newest fake or (with probability 1/2, once the buffer
is full) an older one. The generators minimise (eq. 3 with the identity term of sec. 5.2)

    L_GAN(G_AB, D_B) + L_GAN(G_BA, D_A) + cycle * (|rec_a - a| + |rec_b - b|)
    + identity * cycle * (|idt_b - b| + |idt_a - a|)

with the least-squares GAN loss (sec. 4) and per-pixel mean absolute errors; each discriminator
minimises half its loss (sec. 4). Under ``torch.no_grad`` (validation) the loss is the cycle term.

Data: the embedded ``digits_unpaired`` (edges and digits of disjoint images,
[`digits_unpaired`][probgen.data.paired.digits_unpaired]) or a folder with ``trainA/`` and
``trainB/``. Figures: ``cycle_l1_a``, ``cycle_l1_b`` (mean absolute error per pixel of the
reconstructions of the test images) and, on digits, ``fd_ab`` (``G_AB`` of the test edges against
the digits test split) and ``fd_ba`` (``G_BA`` of the test digits against the test edges), both
through the 8x8 downsampling of [`digits_fd`][probgen.models.gan.pix2pix.digits_fd].

Examples:
    >>> from probgen.models.family import train
    >>> run = train("cyclegan", fast=True, progress=False)
    >>> sorted(k for k in run.metrics if k.startswith(("cycle", "fd")))
    ['cycle_l1_a', 'cycle_l1_b', 'fd_ab', 'fd_ba']
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from torch import Tensor, nn

from probgen.data.paired import downsample_digits
from probgen.data.splits import DataSplits
from probgen.errors import ProbgenError
from probgen.graph import BayesNet, NeuralCPD
from probgen.infer import runs
from probgen.infer.objectives import Objective
from probgen.models.config import ConfigError, RunConfig, option
from probgen.models.family import Family, Run, TrainContext
from probgen.models.gan.gan import GivenInput, Implicit
from probgen.models.gan.objective import LOSSES, discriminator_loss, generator_loss
from probgen.models.gan.pix2pix import digits_fd
from probgen.nn.pix2pix import PatchDiscriminator, UNetGenerator
from probgen.program import Program

__all__ = ["HistoryPool", "cycle_program", "CycleAdversarial", "CycleGANConfig", "CycleGANRun",
           "FAMILY"]

#: node -> (generator, parent) of the CycleGAN program
_NODES = {"fake_b": ("ab", "a"), "rec_a": ("ba", "fake_b"), "fake_a": ("ba", "b"),
          "rec_b": ("ab", "fake_a"), "idt_b": ("ab", "b"), "idt_a": ("ba", "a")}


def cycle_program(g_ab: nn.Module, g_ba: nn.Module, shape: tuple[int, ...]) -> Program:
    """The implicit program of the module docstring; inputs ``a``, ``b``.

    Examples:
        >>> p = cycle_program(nn.Identity(), nn.Identity(), (1, 2, 2))
        >>> sorted(p(a=torch.zeros(3, 1, 2, 2), b=torch.ones(3, 1, 2, 2)))[:3]
        ['a', 'b', 'fake_a']
    """
    bn = BayesNet([(parent, node) for node, (_, parent) in _NODES.items()], name="cyclegan")
    gens = {"ab": g_ab, "ba": g_ba}
    for n in ("a", "b"):
        bn.add_node(n, plate="data", label=f"{n} (given)")
        bn.add_cpds(NeuralCPD(n, GivenInput()))
    for node, (g, parent) in _NODES.items():
        bn.add_node(node, plate="data")
        bn.add_cpds(NeuralCPD(node, Implicit(gens[g], shape), parents=[parent],
                              event_dim=len(shape)))
    return Program(bn, observed=[], inputs=["a", "b"], name="cyclegan")


class HistoryPool(nn.Module):
    """A buffer of ``size`` past fakes (its state is saved with the run).

    ``query(fakes)``: while the buffer fills, each fake is stored and returned; then each is, with
    probability 1/2, swapped for a random stored fake (returned instead, the new one stored).

    Examples:
        >>> pool = HistoryPool(2, (1,))
        >>> pool.query(torch.tensor([[1.0], [2.0]])).flatten().tolist(), int(pool.count)
        ([1.0, 2.0], 2)
    """

    def __init__(self, size: int, shape: tuple[int, ...]) -> None:
        super().__init__()
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ProbgenError(f"pool: must be an integer >= 0, got {size!r}")
        self.size = size
        self.register_buffer("images", torch.zeros(size, *shape))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def query(self, fakes: Tensor) -> Tensor:
        if self.size == 0:
            return fakes
        out = []
        for f in fakes:
            n = int(self.count)
            if n < self.size:
                self.images[n] = f
                self.count += 1
                out.append(f)
            elif float(torch.rand(())) < 0.5:
                i = int(torch.randint(self.size, ()))
                out.append(self.images[i].clone())
                self.images[i] = f
            else:
                out.append(f)
        return torch.stack(out)


def _trace(model: Callable, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
    tr = poutine.trace(model).get_trace(*batch)
    return {n: s["value"] for n, s in tr.nodes.items() if s["type"] == "sample"}


def _mae(x: Tensor, y: Tensor) -> Tensor:
    return (x - y).abs().flatten(1).mean(1)  # per example


def _per_example(score: Tensor, kind: str) -> Tensor:
    return generator_loss(kind, score).flatten(1).mean(1)


class CycleAdversarial(Objective):
    """CycleGAN's objective (module docstring): owns ``D_A``, ``D_B``, their Adam and the pools.

    Examples:
        >>> d = lambda: PatchDiscriminator(1, width=4, n_layers=1)
        >>> obj = CycleAdversarial(d(), d(), (1, 16, 16))
        >>> sorted(obj.modules()), sorted(obj.optimizers())
        (['d_a', 'd_b', 'pool_a', 'pool_b'], ['discriminators'])
    """

    name = "cycle_adversarial"

    def __init__(self, d_a: nn.Module, d_b: nn.Module, shape: tuple[int, ...],
                 loss: str = "lsgan", lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999),
                 cycle: float = 10.0, identity: float = 0.5, pool: int = 50) -> None:
        if loss not in LOSSES or loss == "wgan_gp":
            raise ProbgenError(f"loss: choose one of ns, minimax, hinge, lsgan, got {loss!r}")
        if cycle < 0 or identity < 0:
            raise ProbgenError(f"cycle, identity: must be >= 0, got {cycle!r}, {identity!r}")
        self.d_a, self.d_b = d_a.requires_grad_(False), d_b.requires_grad_(False)
        self.pool_a, self.pool_b = HistoryPool(pool, shape), HistoryPool(pool, shape)
        self.kind, self.cycle, self.identity = loss, float(cycle), float(identity)
        self.lr, self.betas, self.pool = float(lr), tuple(betas), pool
        params = itertools.chain(d_a.parameters(), d_b.parameters())
        self.optimizer = torch.optim.Adam(params, lr=lr, betas=self.betas)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "loss": self.kind, "lr": self.lr, "betas": list(self.betas),
                "cycle": self.cycle, "identity": self.identity, "pool": self.pool}

    def modules(self) -> dict[str, nn.Module]:
        return {"d_a": self.d_a, "d_b": self.d_b, "pool_a": self.pool_a, "pool_b": self.pool_b}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"discriminators": self.optimizer}

    def before_step(self, model: Callable, guide: Callable | None, *batch: Tensor
                    ) -> dict[str, float]:
        """One step of both discriminators on real images against pooled fakes."""
        a, b = batch
        with torch.no_grad():
            v = _trace(model, batch)
        fake_a, fake_b = self.pool_a.query(v["fake_a"]), self.pool_b.query(v["fake_b"])
        for d in (self.d_a, self.d_b):
            d.requires_grad_(True)
        try:
            la = 0.5 * discriminator_loss(self.kind, self.d_a(a), self.d_a(fake_a))
            lb = 0.5 * discriminator_loss(self.kind, self.d_b(b), self.d_b(fake_b))
            self.optimizer.zero_grad(set_to_none=True)
            (la + lb).backward()
            self.optimizer.step()
        finally:
            self.optimizer.zero_grad(set_to_none=True)
            for d in (self.d_a, self.d_b):
                d.requires_grad_(False)
        return {"d_a_loss": la.item(), "d_b_loss": lb.item()}

    def loss(self, model: Callable, guide: Callable | None, *batch: Tensor) -> Tensor:
        a, b = batch
        v = _trace(model, batch)
        cyc = _mae(v["rec_a"], a) + _mae(v["rec_b"], b)
        if not torch.is_grad_enabled():
            return cyc.sum()
        total = (_per_example(self.d_b(v["fake_b"]), self.kind)
                 + _per_example(self.d_a(v["fake_a"]), self.kind) + self.cycle * cyc)
        if self.identity:
            total = total + self.identity * self.cycle * (_mae(v["idt_b"], b)
                                                          + _mae(v["idt_a"], a))
        return total.sum()


@dataclass
class CycleGANConfig(RunConfig):
    """Settings of ``probgen train cyclegan``."""

    steps: int = option(1500, "generator steps")
    batch_size: int = option(16, "images of each domain per step")
    lr: float = option(2e-4, "learning rate of the generators")
    lr_d: float = option(2e-4, "learning rate of the discriminators")
    beta1: float = option(0.5, "Adam beta1")
    val_every: int = option(100, "steps between log lines")
    patience: int | None = option(None, "unused: no early stopping")
    loss: str = option("lsgan", "adversarial loss: lsgan, ns, hinge, minimax")
    cycle: float = option(10.0, "weight of the cycle-consistency L1")
    identity: float = option(0.5, "weight of the identity L1, in units of cycle (0: off)")
    pool: int = option(50, "history buffer of fakes per domain (0: off)")
    width: int = option(16, "U-Net base channels")
    d_width: int = option(16, "PatchGAN base channels")
    n_layers: int = option(2, "PatchGAN stride-2 layers")
    dropout: float = option(0.0, "U-Net dropout (CycleGAN uses none)")

    def validate(self) -> None:
        super().validate()
        for name in ("width", "d_width", "n_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.pool < 0:
            raise ConfigError(f"pool: must be >= 0, got {self.pool}")


class _Pair(nn.Module):
    def __init__(self, g_ab: nn.Module, g_ba: nn.Module, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.g_ab, self.g_ba = g_ab, g_ba
        self._program = (cycle_program(g_ab, g_ba, shape),)

    def model(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
        return self._program[0](a=a, b=b)


class CycleGANRun(Run):
    """Trained ``G_AB``, ``G_BA``; ``sample(n)``: ``n`` test pairs ``(a, G_AB(a))`` in [0, 1]."""

    family = "cyclegan"

    def __init__(self, pair: _Pair, objective: CycleAdversarial | None, config: Any,
                 data: DataSplits | dict[str, Any], run_dir: str | Path | None = None) -> None:
        super().__init__(config, data, run_dir)
        self.pair, self.objective = pair, objective

    def modules(self) -> list[nn.Module]:
        return [self.pair]

    @torch.no_grad()
    def translate(self, x: Tensor, direction: str = "ab") -> Tensor:
        """``G_AB(x)`` (``"ab"``) or ``G_BA(x)`` (``"ba"``) of images in [0, 1], in eval mode."""
        g = {"ab": self.pair.g_ab, "ba": self.pair.g_ba}[direction]
        was = g.training
        g.eval()
        try:
            out = torch.cat([g(x[i:i + 256] * 2 - 1) for i in range(0, len(x), 256)])
        finally:
            g.train(was)
        return ((out + 1) / 2).clamp(0, 1)

    def sample(self, n: int, seed: int | None = None) -> Tensor:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ProbgenError(f"n: must be a positive integer, got {n!r}")
        test = self.splits.test
        idx = torch.randint(len(test), (n,),
                            generator=torch.Generator().manual_seed(0 if seed is None else seed))
        a = test[idx, 0]
        return torch.stack([a, self.translate(a, "ab")], dim=1)

    def picture(self, samples: Tensor, path: Path) -> Path:
        from probgen.metrics.grids import save_grid

        return save_grid(samples[:16].flatten(0, 1).clamp(0, 1), path, nrow=8)

    def figures(self, progress: bool = False) -> dict[str, Any]:
        a, b = self.splits.test[:, 0], self.splits.test[:, 1]
        fake_b, fake_a = self.translate(a, "ab"), self.translate(b, "ba")
        out: dict[str, Any] = {
            "cycle_l1_a": float((self.translate(fake_b, "ba") - a).abs().mean()),
            "cycle_l1_b": float((self.translate(fake_a, "ab") - b).abs().mean())}
        if self.data_name == "digits_unpaired" and a.shape[1] == 1:
            from probgen.data.digits import load_digits

            out["fd_ab"] = digits_fd(fake_b, load_digits("test", "unit"))
            out["fd_ba"] = digits_fd(fake_a, downsample_digits(a).clamp(0, 1))
        return out


def _build(config: CycleGANConfig, shape: tuple[int, ...]) -> tuple[_Pair, CycleAdversarial]:
    if len(shape) != 4 or shape[0] != 2 or shape[2] != shape[3]:
        raise ProbgenError(f"data: cyclegan takes square images of two domains (N, 2, C, H, H), "
                           f"got {shape}")
    c, h = shape[1], shape[2]
    gens = [UNetGenerator(c, c, h, config.width, config.dropout) for _ in range(2)]
    pair = _Pair(*gens, (c, h, h))
    ds = [PatchDiscriminator(c, config.d_width, config.n_layers) for _ in range(2)]
    obj = CycleAdversarial(*ds, (c, h, h), config.loss, config.lr_d, (config.beta1, 0.999),
                           config.cycle, config.identity, config.pool)
    return pair, obj


def _fit(config: CycleGANConfig, splits: DataSplits, ctx: TrainContext) -> CycleGANRun:
    pyro.clear_param_store()
    torch.manual_seed(config.seed)
    pair, obj = _build(config, splits.shape)
    run = CycleGANRun(pair, obj, config, splits, ctx.out)
    x = splits.train * 2 - 1
    lr, beta1 = config.lr, config.beta1

    def adam(params: list[Tensor]) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=lr, betas=(beta1, 0.999))

    ctx.fit(pair.model, None, (x[:, 0], x[:, 1]), objective=obj, steps=config.steps,
            batch_size=config.batch_size, lr=lr, optimizer=adam, seed=config.seed,
            log_every=config.val_every, sample_fn=lambda n: run.sample(16).flatten(0, 1))
    return run


def _load(run_dir: Path, config: CycleGANConfig, data: dict[str, Any]) -> CycleGANRun:
    d_dir = runs.require_files(run_dir, ("weights.safetensors",), "cyclegan")
    pair, obj = _build(config, tuple(data["shape"]))
    weights = runs.load_tensors(d_dir / "weights.safetensors")
    parts = [("model.", pair)] + [(f"objective.{k}.", m) for k, m in obj.modules().items()]
    for prefix, module in parts:
        state = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        missing, unexpected = module.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise runs.RunFolderError(f"{d_dir}/weights.safetensors does not match cyclegan "
                                      f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return CycleGANRun(pair, obj, config, data, run_dir)


FAMILY = Family(
    name="cyclegan",
    description="CycleGAN: G_AB, G_BA against D_B, D_A with cycle and identity L1, unpaired",
    config=CycleGANConfig,
    fit=_fit,
    load=_load,
    kinds=("unpaired",),
    default_data="digits_unpaired",
    data_names=("digits_unpaired",),
    fast={"unpaired": {"steps": 10, "width": 8, "d_width": 8, "val_every": 5,
                       "batch_size": 8, "pool": 8}},
    likelihood=False,
)
