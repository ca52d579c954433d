"""Typed run configurations: dataclasses with defaults and help, set from text or files.

Every family's config is a dataclass derived from [`RunConfig`][probgen.models.config.RunConfig]
(the settings all families share). Fields are declared with [`option`][probgen.models.config.option]
(a default and a one-line help). Values come, in this order, from the dataclass defaults, the
family's presets for the kind of data, fast-mode settings, a YAML/JSON file (``--config``) and
``key=value`` pairs (``--set``); [`build_config`][probgen.models.config.build_config] checks every
key and converts every value to the field's type, so ``--set beta=abc`` or an unknown key is a
one-line error that lists the valid keys.

Examples:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Demo(RunConfig):
    ...     beta: float = option(1.0, "KL weight")
    ...     hidden: tuple[int, ...] = option((64, 64), "hidden widths")
    >>> cfg = build_config(Demo, sets=["beta=4", "hidden=32,32"])
    >>> cfg.beta, cfg.hidden
    (4.0, (32, 32))
    >>> build_config(Demo, sets=["bta=1"])
    Traceback (most recent call last):
    ...
    probgen.models.config.ConfigError: --set: unknown key 'bta'; valid keys: batch_size, beta, ...
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from probgen.errors import ProbgenError

__all__ = ["ConfigError", "RunConfig", "SampleConfig", "option", "build_config", "config_fields",
           "config_to_dict", "describe_config", "coerce", "parse_sets"]


class ConfigError(ProbgenError):
    """A configuration key is unknown or its value does not fit the field's type."""


def option(default: Any, help: str) -> Any:  # noqa: A002 - the natural name
    """A dataclass field with a default and a one-line help text."""
    return field(default=default, metadata={"help": help})


@dataclass
class RunConfig:
    """Settings every family shares; a family's config subclasses it and adds its own."""

    steps: int = option(1000, "training steps (early stopping may end sooner)")
    batch_size: int = option(128, "examples per step")
    lr: float = option(1e-3, "learning rate")
    seed: int = option(0, "seed of the weights, the batches and the evaluation")
    val_every: int = option(100, "steps between validations (and log lines)")
    patience: int | None = option(10, "stop after this many validations without improvement "
                                      "(none: never)")
    device: str = option("cpu", "torch device: cpu, cuda, cuda:1, ...")
    threads: int = option(0, "torch CPU threads (0: automatic, see probgen.models.family)")
    precision: Literal["fp32", "bf16", "fp16"] = option(
        "fp32", "arithmetic of the loss: fp32, or bf16 / fp16 autocast (fp16 with loss scaling)")
    compile: bool = option(False, "torch.compile the networks (the first steps compile)")

    def validate(self) -> None:
        """Range checks shared by every family (a subclass adds its own and calls this)."""
        for name in ("steps", "batch_size", "val_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr: must be a positive number, got {self.lr}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"patience: must be >= 1 or none, got {self.patience}")
        if self.threads < 0:
            raise ConfigError(f"threads: must be >= 0 (0: automatic), got {self.threads}")


@dataclass
class SampleConfig:
    """Base of a family's *sample-time* settings (e.g. a diffusion run's sampler and number
    of steps): chosen when sampling or evaluating a trained run, not when training it
    (``probgen sample RUN --set key=value``,
    [`Run.set_sampling`][probgen.models.family.Run.set_sampling]). A family subclasses it with
    [`option`][probgen.models.config.option] fields."""

    def validate(self) -> None:
        """Range checks (a subclass adds its own)."""


def config_fields(cls: type) -> dict[str, tuple[Any, Any, str]]:
    """``name -> (type, default, help)`` for every field of a config dataclass."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out[f.name] = (hints[f.name], default, f.metadata.get("help", ""))
    return out


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return "none" if tp is type(None) else getattr(tp, "__name__", str(tp))


_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` (text from ``--set``, or a JSON/YAML value) converted to the type ``tp``.

    Examples:
        >>> coerce("3", int, "steps"), coerce("none", int | None, "patience")
        (3, None)
        >>> coerce("x", float, "lr")
        Traceback (most recent call last):
        ...
        probgen.models.config.ConfigError: lr: expected float, got 'x'
    """
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        is_none = value is None or (isinstance(value, str)
                                    and value.strip().lower() in ("none", "null"))
        if type(None) in args and is_none:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, key)
            except ConfigError:
                pass
        raise bad
    if origin is Literal:
        choices = typing.get_args(tp)
        for c in choices:
            if value == c or (isinstance(value, str) and str(c) == value.strip()):
                return c
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, choices))}")
    if origin is tuple:
        (item,) = typing.get_args(tp)[:1]
        if isinstance(value, str):
            text = value.strip().strip("[]()")
            parts = [p for p in text.replace(" ", ",").split(",") if p]
        elif isinstance(value, (list, tuple)):
            parts = list(value)
        else:
            raise bad
        return tuple(coerce(p, item, key) for p in parts)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                raise bad from None
            if f.is_integer():
                return int(f)
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    raise ConfigError(f"{key}: fields of type {_type_name(tp)} cannot be set")


def parse_sets(sets: Iterable[str]) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``; a pair without ``=`` or a repeated key
    is an error."""
    out: dict[str, str] = {}
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set: {item!r} must look like key=value")
        key, value = item.split("=", 1)
        key = key.strip()
        if key in out:
            raise ConfigError(f"--set: {key!r} is given twice")
        out[key] = value
    return out


def _read_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config: {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # yaml / json syntax errors
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"--config: {path} is not valid YAML/JSON: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {path} must hold a mapping of keys to values")
    return data


def build_config(cls: type, layers: Iterable[Mapping[str, Any]] = (),
                 file: str | Path | None = None, sets: Iterable[str] = (),
                 values: Mapping[str, Any] | None = None) -> Any:
    """An instance of config class ``cls``: defaults, then each mapping of ``layers``, then
    ``file``, then ``sets`` (``key=value`` text), then ``values`` (Python values); validated.
    """
    spec = config_fields(cls)
    valid = ", ".join(sorted(spec))
    merged: dict[str, Any] = {}
    sources: list[tuple[str, Mapping[str, Any]]] = [("preset", m) for m in layers]
    if file is not None:
        sources.append((f"--config {file}", _read_file(file)))
    sources.append(("--set", parse_sets(sets)))
    if values:
        sources.append(("argument", values))
    for where, mapping in sources:
        for key, value in mapping.items():
            if key not in spec:
                raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {valid}")
            merged[key] = coerce(value, spec[key][0], key)
    cfg = cls(**merged)
    cfg.validate()
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """JSON-able dict of a config (tuples become lists);
    [`build_config`][probgen.models.config.build_config] reads it back."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def describe_config(cls: type, layers: Iterable[Mapping[str, Any]] = ()) -> str:
    """Every key with its type, default (after ``layers``) and help: ``--show-config``."""
    spec = config_fields(cls)
    defaults = {k: v[1] for k, v in spec.items()}
    for m in layers:
        defaults.update(m)
    width = max(len(k) for k in spec)
    lines = []
    for key, (tp, _, help_) in spec.items():
        value = defaults[key]
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else (
            "none" if value is None else str(value))
        lines.append(f"{key:<{width}}  = {shown:<12} [{_type_name(tp)}]  {help_}")
    return "\n".join(lines)
