"""A GAN is a Pyro program on the graph ``z -> x`` (``graphs/gan.yaml``) with an implicit
conditional.

[`GAN`][probgen.models.gan.gan.GAN] compiles the graph with
[`probgen.program.Program`][probgen.program.compile.Program]: ``z ~ N(0, I)`` (a prior CPD), and
``x`` drawn from ``Delta(G(z))``, a point mass at the generator's output
([`Implicit`][probgen.models.gan.gan.Implicit]): sampling is ancestral as in every Bayesian network,
but ``p(x)`` has no density (the pushforward of ``N(0, I)`` through ``G`` lives on a manifold of
dimension at most ``latent_dim``). A class-conditional GAN adds a label ``y`` as a given parent of
``x`` (``x = G(z, y)``); an image-to-image GAN (pix2pix) replaces ``z`` by a source image ``a``
(``x = G(a)``, the noise being the generator's dropout). Training is by an adversarial objective
([`Adversarial`][probgen.models.gan.objective.Adversarial]), which reads the site ``x`` of a trace
of ``gan.model``.

Examples:
    >>> from probgen.nn.dcgan import MLPGenerator
    >>> gan = GAN(MLPGenerator(2, 2, hidden=8), latent_dim=2, data_shape=(2,))
    >>> sorted(gan.model(torch.zeros(5, 2)))  # the values of one run of the program
    ['x', 'z']
    >>> gan.sample(3).shape
    torch.Size([3, 2])
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import Tensor, nn

from probgen.errors import ProbgenError
from probgen.graph import BayesNet, NeuralCPD
from probgen.models.vae.priors import StandardPrior
from probgen.program import Program

__all__ = ["Implicit", "GAN", "GivenInput", "implicit_program"]


class Implicit(nn.Module):
    """The implicit conditional ``p(x | parents) = Delta(G(*parents))``, reshaped to
    ``data_shape`` (the generator's output is flattened to it).

    Examples:
        >>> d = Implicit(nn.Linear(3, 4), (4,))(torch.zeros(2, 3))
        >>> d.event_shape, d.has_rsample
        (torch.Size([4]), True)
    """

    def __init__(self, generator: nn.Module, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.generator, self.data_shape = generator, tuple(data_shape)

    def forward(self, *parents: Tensor) -> dist.Delta:
        x = self.generator(*parents)
        x = x.reshape(x.shape[0], *self.data_shape)
        return dist.Delta(x, event_dim=len(self.data_shape))


class GivenInput:
    """The CPD module of an input node (a label, a source image): given, never sampled."""

    def __call__(self, *_: Tensor) -> None:
        raise ProbgenError("an input node of a GAN program is given, never sampled")


def implicit_program(generator: nn.Module, data_shape: tuple[int, ...],
                     noise: nn.Module | None, inputs: tuple[str, ...] = ()) -> Program:
    """The program ``[z ~ noise,] x = G([z,] *inputs)`` on ``graphs/gan.yaml``'s skeleton.

    ``noise=None`` drops ``z`` (pix2pix: the generator's only noise is dropout); each name of
    ``inputs`` becomes a given parent of ``x``.

    Examples:
        >>> p = implicit_program(nn.Linear(2, 3), (3,), StandardPrior(2))
        >>> p(num_rows=4)["x"].shape
        torch.Size([4, 3])
    """
    if noise is not None:
        bn, parents = BayesNet.load("gan"), ["z"]  # z -> x
    else:
        bn, parents = BayesNet(nodes=["x"], name="gan_image_to_image"), []
        bn.add_node("x", plate="data")
    for name in inputs:
        bn.add_node(name, plate="data", label=f"{name} (given)")
        bn.add_edge(name, "x")
        bn.add_cpds(NeuralCPD(name, GivenInput()))
        parents.append(name)
    if noise is not None:
        bn.add_cpds(NeuralCPD("z", noise, event_dim=1))
    bn.add_cpds(NeuralCPD("x", Implicit(generator, data_shape), parents=parents,
                          event_dim=len(data_shape)))
    return Program(bn, observed=[], inputs=list(inputs), name="gan")


class GAN(nn.Module):
    """A generator as an implicit Pyro program, optionally class-conditional.

    Args:
        generator: ``G(z[, y]) -> x`` (e.g. [`DCGANGenerator`][probgen.nn.dcgan.DCGANGenerator]).
        latent_dim: dimension of ``z``.
        data_shape: shape of one example ``x``.
        num_classes: ``> 0`` for a class-conditional GAN (``y`` in ``0..num_classes-1``).

    ``gan.model(x[, y])`` runs the program for ``len(x)`` rows (``x`` is not observed: the
    real examples only set the number of rows, the objective compares them with the fakes).
    ``gan.sample(n, y, ema=...)`` draws with the generator or with a copy of it (its EMA).
    """

    def __init__(self, generator: nn.Module, latent_dim: int, data_shape: tuple[int, ...],
                 num_classes: int = 0) -> None:
        super().__init__()
        self.generator, self.latent_dim = generator, int(latent_dim)
        self.data_shape, self.num_classes = tuple(data_shape), int(num_classes)
        self.noise = StandardPrior(latent_dim)
        inputs = ("y",) if num_classes else ()
        # a tuple keeps the program out of the state_dict (its nets are registered here)
        self._program = (implicit_program(generator, self.data_shape, self.noise, inputs),)

    @property
    def graph(self) -> BayesNet:
        """The Bayesian network the program was compiled from."""
        return self._program[0].bn

    def _labels(self, y: Tensor | None, n: int) -> dict[str, Tensor]:
        if not self.num_classes:
            if y is not None:
                raise ProbgenError("y: this GAN is unconditional (num_classes=0)")
            return {}
        if y is None:
            raise ProbgenError("y: a class-conditional GAN needs labels y")
        y = torch.as_tensor(y).long().reshape(-1)
        if len(y) != n:
            raise ProbgenError(f"y: {len(y)} labels for {n} rows")
        if int(y.min()) < 0 or int(y.max()) >= self.num_classes:
            raise ProbgenError(f"y: labels must be in 0..{self.num_classes - 1}")
        return {"y": y}

    def model(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """The program for ``len(x)`` rows: ``{"z": noise, "x": G(z[, y])}``."""
        return self._program[0](num_rows=len(x), **self._labels(y, len(x)))

    def ema_copy(self) -> nn.Module:
        """A frozen copy of the generator (what an EMA objective averages into)."""
        from probgen.models.gan.objective import ema_copy

        return ema_copy(self.generator)

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, generator: nn.Module | None = None
               ) -> Tensor:
        """``n`` generated examples ``(n, *data_shape)`` at the generator's scale, in eval mode
        (``generator`` replaces ``G``, e.g. by its EMA copy)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ProbgenError(f"n: must be a positive integer, got {n!r}")
        g = generator if generator is not None else self.generator
        device = next(g.parameters()).device
        labels = self._labels(y, n)
        was = g.training
        g.eval()
        try:
            z = torch.randn(n, self.latent_dim, device=device)
            x = g(z, *[v.to(device) for v in labels.values()])
        finally:
            g.train(was)
        return x.reshape(n, *self.data_shape)
