"""Trains the digits VAE through ``fit``; run by ``tests/test_distributed.py`` under torchrun
(``python -m torch.distributed.run --nproc_per_node 2 tests/dist_worker.py ...``) and in the
test process itself, so both sides train exactly the same thing.

Each process records the file-system writes it makes under the run folder (Python audit
events) in ``writes-rank{RANK}.json`` beside the folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pyro
import torch
from torch import nn
from torch.nn.functional import softplus

from probgen.infer.objectives import ELBO, Objective

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


class CriticELBO(Objective):
    """The ELBO for the VAE, plus a critic with its own module and optimizer, stepped in
    ``before_step``: it learns to tell digits from their mirror images (a summed logistic
    loss), the way a GAN's discriminator learns beside its generator."""

    name = "critic_elbo"

    def __init__(self) -> None:
        self.elbo = ELBO()
        gen = torch.Generator().manual_seed(7)
        self.critic = nn.Linear(64, 1)
        with torch.no_grad():
            self.critic.weight.copy_(torch.randn(1, 64, generator=gen) * 0.1)
            self.critic.bias.zero_()
        self.opt = torch.optim.Adam(self.critic.parameters(), lr=0.01)

    def modules(self) -> dict[str, nn.Module]:
        return {"critic": self.critic}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"critic": self.opt}

    def before_step(self, model, guide, x):  # noqa: ANN001, ANN201 - the protocol's
        real = x.float() / 16.0
        fake = real.flip(-1)
        loss = softplus(-self.critic(real)).sum() + softplus(self.critic(fake)).sum()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"critic_loss": loss.item() / len(x)}

    def loss(self, model, guide, *batch):  # noqa: ANN001, ANN201
        return self.elbo.loss(model, guide, *batch)


def train(out: Path, steps: int, objective: str, resume: bool = False) -> None:
    """The run every side of the test makes: the digits VAE (pixel decoder), 40 examples a
    step, validation every 10 steps."""
    from probgen.data.splits import load_splits
    from probgen.infer.fit import fit
    from probgen.models.vae.vae import VAE

    splits = load_splits("digits")
    pyro.clear_param_store()
    torch.manual_seed(0)
    vae = VAE((64,), 4, likelihood="pixelcnn", num_levels=17, hidden=(32,))
    obj = CriticELBO() if objective == "critic" else None
    # reduction="mean" with lr 40 x 5e-5: the same steps as SGD on the batch sum (the default
    # "sum" estimates the loss of all 1000 examples, 25x the batch sum, too large a step here).
    # At lr 8e-3 the run is chaotic: float32 rounding of the two half-batch gradients (1e-7
    # relative) grew to 2e-5 in 5 steps and 5e-3 in 45; at 2e-3 the two sides stay within 1e-6
    # over all 45 steps, so the test's 1e-5 catches a real difference, not rounding.
    fit(vae, None, splits.train, objective=obj, steps=steps, batch_size=40, lr=2e-3, seed=3,
        optimizer=_sgd, reduction="mean", val_data=splits.val[:90], val_every=10, log_every=10,
        progress=False, out=out, resume=resume, sample_fn=vae.sample_images, num_samples=4)


def _sgd(params: list[torch.Tensor]) -> torch.optim.Optimizer:
    # SGD rather than Adam: Adam divides each gradient by its own running size, which turns
    # float32 rounding in gradients whose terms cancel (about 1e-7) into steps of size lr
    return torch.optim.SGD(params, lr=2e-3, momentum=0.9)


def _audit(out: Path, log: list[list[str]]) -> None:
    root = str(out.resolve())

    def under(p: object) -> bool:
        try:
            return str(Path(os.fsdecode(p)).resolve()).startswith(root)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & _WRITE_FLAGS)
            if writes and under(path):
                log.append([event, str(path)])
        elif event in ("os.rename", "os.replace", "os.remove", "os.mkdir", "os.rmdir",
                       "shutil.rmtree", "tempfile.mkdtemp", "tempfile.mkstemp"):
            if args and under(args[0]):
                log.append([event, str(args[0])])

    sys.addaudithook(hook)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--objective", nargs="+", choices=["elbo", "critic"], default=["elbo"])
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    log: list[list[str]] = []
    _audit(args.out, log)
    try:
        for objective in args.objective:
            train(args.out / objective, args.steps, objective, args.resume)
    finally:
        rank = os.environ.get("RANK", "0")
        (args.out.parent / f"writes-{args.out.name}-rank{rank}.json").write_text(json.dumps(log))


if __name__ == "__main__":
    main()
