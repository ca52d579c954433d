"""How [`fit`][probgen.infer.fit.fit]'s arithmetic runs: mixed precision and compiled networks.

- [`Precision`][probgen.infer.precision.Precision]: ``"fp32"`` (the default: nothing
  changes), ``"bf16"`` or ``"fp16"``: the objective's loss (and ``before_step``) run under
  ``torch.autocast`` on the training device, so matrix products and convolutions run in the
  16-bit type while reductions, ``log_softmax`` and the parameters stay in float32 (PyTorch's
  autocast op lists). fp16's narrow exponent range needs loss scaling:
  ``torch.amp.GradScaler`` scales the loss before ``backward``, unscales the gradients before
  clipping and skips a step whose gradients overflowed (lowering the scale); its state is
  saved with the run so that a resumed fp16 run continues exactly. bf16 has float32's range
  and needs no scaler.
- [`compile_networks`][probgen.infer.precision.compile_networks]: ``torch.compile`` of the
  networks inside the trained modules (opt-in; the first steps pay the compilation).

Each is a one-line [`ProbgenError`][probgen.errors.ProbgenError] where the machine lacks it
(bf16 on a GPU without it, fp16 autocast on a CPU build without it, no C++ compiler for
``torch.compile``'s CPU code).

Examples:
    >>> p = Precision("bf16", torch.device("cpu"))
    >>> with p.autocast():
    ...     y = torch.nn.Linear(4, 2)(torch.ones(3, 4))
    >>> y.dtype
    torch.bfloat16
    >>> Precision("fp32", torch.device("cpu")).enabled
    False
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Callable, Iterable
from typing import Any

import torch

from probgen.errors import ProbgenError

__all__ = ["Precision", "PRECISIONS", "compile_networks", "check_compile"]

#: accepted values of ``precision``
PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """Autocast and (fp16) gradient scaling for one training device; see the module docstring.

    Args:
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        device: the training device.
    """

    def __init__(self, precision: str, device: torch.device) -> None:
        if precision not in PRECISIONS:
            raise ProbgenError(f"precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
        self.precision = precision
        self.device = torch.device(device)
        self.enabled = precision != "fp32"
        self.dtype = _DTYPES.get(precision, torch.float32)
        self.scaler: Any = None
        if not self.enabled:
            return
        kind = self.device.type
        if not torch.amp.is_autocast_available(kind):
            raise ProbgenError(f"precision: {precision} autocast is not available on {kind}")
        if kind == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise ProbgenError(f"precision: bf16 needs a GPU that supports it (this one, "
                               f"{torch.cuda.get_device_name(self.device)}, does not); "
                               "use fp16")
        try:  # the CPU build may lack fp16 (or bf16) kernels for autocast
            with torch.autocast(kind, dtype=self.dtype):
                torch.ones(2, 2, device=self.device) @ torch.ones(2, 2, device=self.device)
        except (RuntimeError, TypeError) as exc:
            raise ProbgenError(f"precision: {precision} autocast fails on {kind} here: "
                               f"{str(exc).splitlines()[0]}") from None
        if precision == "fp16":
            self.scaler = torch.amp.GradScaler(kind)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of the loss (a no-op for fp32)."""
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def wrap(self, objective: Any) -> Any:
        """``objective`` with its ``loss`` and ``before_step`` under autocast (itself for fp32).

        fp16 with an objective that steps optimizers of its own is refused: their backward
        passes happen inside ``before_step``, beyond the engine's loss scaling.
        """
        if not self.enabled:
            return objective
        if self.scaler is not None and (getattr(objective, "optimizers", dict)() or {}):
            raise ProbgenError("precision: fp16 needs loss scaling, which an objective that "
                               "steps its own optimizers does not get; use bf16")
        return _Autocast(objective, self)

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, scaled under fp16."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Gradients back to their true size before clipping (fp16)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``; under fp16 skipped when gradients overflowed."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state(self) -> dict[str, Any] | None:
        """The scaler's state for a checkpoint (``None`` without a scaler)."""
        return None if self.scaler is None else {
            k: float(v) if isinstance(v, float) else v
            for k, v in self.scaler.state_dict().items()}

    def load(self, state: dict[str, Any] | None) -> None:
        """Restore what [`state`][probgen.infer.precision.Precision.state] returned."""
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


class _Autocast:
    """An objective whose loss and ``before_step`` run under autocast; float32 loss out."""

    def __init__(self, objective: Any, precision: Precision) -> None:
        self.objective = objective
        self._precision = precision

    def __getattr__(self, name: str) -> Any:
        return getattr(self.objective, name)

    def loss(self, model: Callable, guide: Callable | None, *batch: torch.Tensor
             ) -> torch.Tensor:
        with self._precision.autocast():
            value = self.objective.loss(model, guide, *batch)
        return value.float() if value.dtype in (torch.float16, torch.bfloat16) else value

    def before_step(self, model: Callable, guide: Callable | None, *batch: torch.Tensor
                    ) -> dict[str, float]:
        hook = getattr(self.objective, "before_step", None)
        if hook is None:
            return {}
        with self._precision.autocast():
            return hook(model, guide, *batch)


def _find_compiler() -> str | None:
    """The C++ compiler inductor would use for CPU code (``CXX``, else g++ / c++ / clang++)."""
    for name in (os.environ.get("CXX", ""), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def check_compile(device: torch.device) -> None:
    """A one-line error when ``torch.compile`` cannot run here (no dynamo for this Python,
    no C++ compiler for CPU code, no Triton for CUDA code)."""
    if not torch._dynamo.is_dynamo_supported():
        raise ProbgenError(f"compile: torch.compile does not support Python "
                           f"{sys.version.split()[0]} with torch {torch.__version__}")
    if device.type == "cpu":
        if _find_compiler() is None:
            raise ProbgenError("compile: torch.compile needs a C++ compiler for CPU code "
                               "(install g++ or clang++, or set CXX)")
    elif device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            raise ProbgenError("compile: torch.compile needs Triton for CUDA code "
                               "(pip install triton)") from None


def compile_networks(modules: Iterable[torch.nn.Module], device: torch.device) -> list[str]:
    """Compile, in place, the networks inside ``modules``; return their names.

    Pyro calls a family's programs (``vae.model``, ``vae.guide``), not the top module's
    ``forward``, so the networks compiled are the largest plain submodules with parameters
    (encoders, decoders, conditionals), found by descending through containers
    (``ModuleList``/``ModuleDict``) and Pyro modules. Distribution objects built around their
    outputs stay uncompiled.

    Examples:
        >>> net = torch.nn.ModuleDict({"enc": torch.nn.Linear(2, 2)})
        >>> compile_networks([net], torch.device("cpu"))
        ['enc']
    """
    check_compile(device)
    names: list[str] = []

    def visit(module: torch.nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            path = f"{prefix}{name}"
            if not any(p.requires_grad for p in child.parameters()):
                continue
            container = isinstance(child, (torch.nn.ModuleList, torch.nn.ModuleDict))
            if container or type(child).__module__.startswith("pyro."):
                visit(child, f"{path}.")
                continue
            child.compile()
            names.append(path)

    for m in modules:
        visit(m, "")
    return names
