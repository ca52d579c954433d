"""Measuring conditional generation on digits: does the digits classifier of the Fréchet
distance ([`digits_classifier`][probgen.metrics.frechet.digits_classifier]) read the requested
label in the samples, and what does guidance cost in ``fd``?

- [`label_agreement`][probgen.models.diffusion.conditional.label_agreement]: the fraction of
  samples the classifier assigns to the requested label;
- [`guidance_sweep`][probgen.models.diffusion.conditional.guidance_sweep]: agreement and ``fd``
  of a class-conditional diffusion run over a range of guidance scales (one table row each);
- [`train_noisy_classifier`][probgen.models.diffusion.conditional.train_noisy_classifier]: the
  noise-aware classifier of classifier guidance, trained through [`fit`][probgen.infer.fit.fit]
  with [`NoisyClassification`][probgen.models.diffusion.guidance.NoisyClassification].

Examples:
    >>> from probgen.data.digits import load_digits, load_digit_labels
    >>> x, y = load_digits("test"), load_digit_labels("test")
    >>> label_agreement(x, y) > 0.9  # the test images themselves
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from probgen.errors import ProbgenError
from probgen.models.diffusion.ddpm import DDPM
from probgen.models.diffusion.guidance import NoisyClassification
from probgen.nn.time_embedding import TimeMLP

__all__ = ["label_agreement", "guidance_sweep", "train_noisy_classifier"]


def label_agreement(samples: Tensor, labels: Tensor, levels: int = 17) -> float:
    """Fraction of digit samples (integer levels ``(N, 64)``) that the digits classifier
    labels as requested."""
    from probgen.metrics.frechet import digits_classifier

    if samples.shape[0] != labels.shape[0]:
        raise ProbgenError(f"labels: {labels.shape[0]} labels for {samples.shape[0]} samples")
    with torch.no_grad():
        pred = digits_classifier()(samples.float().reshape(-1, 64) / (levels - 1)).argmax(1)
    return float((pred == labels.long()).float().mean())


def guidance_sweep(run: Any, scales: Sequence[float], n: int = 500, seed: int = 0,
                   **sampling: Any) -> list[dict[str, float]]:
    """``[{"guidance", "agreement", "fd"}, ...]`` for a class-conditional digits run
    (labels ``0..9`` in turn; other sample-time settings from ``sampling``, e.g.
    ``sampler="ddim", steps=50``). The run's settings are restored afterwards."""
    from probgen.metrics.frechet import digits_frechet_distance

    if not getattr(run, "ddpm", None) or not run.ddpm.num_classes or run.kind != "digits":
        raise ProbgenError("run: guidance_sweep needs a class-conditional diffusion run on "
                           "digits")
    saved = dict(vars(run.sampling))
    levels = int(run.data_info.get("levels", 17))
    test = run.splits.test.float() / (levels - 1)
    rows = []
    try:
        for s in scales:
            run.set_sampling(**{**sampling, "guidance": float(s), "label": None})
            x = run.sample(n, seed=seed)
            y = run.labels(n)
            rows.append({"guidance": float(s), "agreement": label_agreement(x, y, levels),
                         "fd": digits_frechet_distance(x.float() / (levels - 1), test)})
    finally:
        run.set_sampling(**saved)
    return rows


def train_noisy_classifier(ddpm: DDPM, x: Tensor, y: Tensor, steps: int = 2000,
                           hidden: Sequence[int] = (256, 256), lr: float = 1e-3,
                           batch_size: int = 128, seed: int = 0, progress: bool = False
                           ) -> TimeMLP:
    """A classifier ``p(y | x_t, t)`` on noisy examples of ``ddpm``'s forward process
    (``x`` at data scale, ``y`` labels), as a [`TimeMLP`][probgen.nn.time_embedding.TimeMLP]
    on flat examples; trained by [`fit`][probgen.infer.fit.fit]."""
    from probgen.infer.fit import fit

    k = int(y.max()) + 1
    dim = int(torch.tensor(ddpm.data_shape).prod())
    torch.manual_seed(seed)
    clf = TimeMLP(dim, hidden=hidden, out_dim=k)
    fit(clf, None, (x, y), objective=NoisyClassification(ddpm), steps=steps,
        batch_size=min(batch_size, len(x)), lr=lr, seed=seed, progress=progress)
    return clf.eval()
