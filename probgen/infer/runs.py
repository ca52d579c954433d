"""Run folders: atomic writes, checkpoints that resume exactly, loading that never runs code.

A run folder written by [`probgen.infer.fit.fit`][probgen.infer.fit.fit] holds::

    config.json            resolved configuration
    weights.safetensors    final weights (model, guide, objective modules, Pyro params);
                           after early stopping, the best ones
    best.safetensors       the best weights so far (when validating)
    metrics.jsonl          history, one JSON object per logged step
    metrics.json           final figures
    samples/*.png          sample grids (when the model can sample)
    checkpoints/step-NNNNNNNN/   the latest complete checkpoint (and best-*/ when validating)
        weights.safetensors, optimizer.safetensors, rng.safetensors, state.json,
        history.jsonl, manifest.json (SHA-256 of every other file)

Every file is written to a temporary name, flushed, fsynced and renamed (``os.replace``),
and a checkpoint is a folder built under a temporary name and renamed whole, so a run
killed at any moment leaves the previous checkpoint intact. Tensors are read with
``safetensors`` only, JSON with ``json``: a tampered, truncated or pickled file raises
[`RunFolderError`][probgen.infer.runs.RunFolderError] and nothing in it is executed.

Examples:
    >>> import tempfile, torch
    >>> d = tempfile.mkdtemp()
    >>> save_checkpoint(d, 3, {"w": torch.ones(2)}, {}, {"step": 3}, []).name
    'step-00000003'
    >>> load_checkpoint(d).state["step"]
    3
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from probgen.errors import ProbgenError

__all__ = [
    "RunFolderError",
    "require_files",
    "Checkpoint",
    "atomic_write_bytes",
    "atomic_write_json",
    "save_tensors",
    "load_tensors",
    "read_json",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "load_run_weights",
    "read_history",
    "write_history",
    "rng_state",
    "set_rng_state",
    "optimizer_to_flat",
    "optimizer_from_flat",
]


class RunFolderError(ProbgenError):
    """A run folder or one of its files is missing, truncated, tampered with or not ours."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see either the old file or the new one.

    The file gets the usual permissions (``0o666`` less the umask), not the private mode of
    a temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def _jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()


def write_history(path: str | os.PathLike, rows: list[dict]) -> None:
    """Atomically write a history as JSON lines."""
    atomic_write_bytes(path, _jsonl_bytes(rows))


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor]) -> None:
    """Atomically save a dict of tensors as safetensors (contiguous CPU copies)."""
    from safetensors.torch import save

    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write_bytes(path, save(flat))


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a safetensors file; any malformed file raises
    [`RunFolderError`][probgen.infer.runs.RunFolderError]."""
    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"path: {path} does not exist")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise RunFolderError(
            f"{path} is not a valid safetensors file (truncated, tampered or a pickle?): {exc}"
        ) from None


def require_files(run_dir: str | os.PathLike, names: tuple[str, ...], kind: str) -> Path:
    """``Path(run_dir)`` after checking it holds every file in ``names`` (a ``kind`` run).

    Examples:
        >>> import tempfile
        >>> require_files(tempfile.mkdtemp(), ("weights.safetensors",), "VAE")
        Traceback (most recent call last):
        ...
        probgen.infer.runs.RunFolderError: run_dir: ... has no weights.safetensors (not a VAE run)
    """
    d = Path(run_dir)
    for name in names:
        if not (d / name).is_file():
            raise RunFolderError(f"run_dir: {str(run_dir)!r} has no {name} (not a {kind} run)")
    return d


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; malformed content raises
    [`RunFolderError`][probgen.infer.runs.RunFolderError]."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise RunFolderError(f"path: {path} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFolderError(f"{path} is not valid JSON (truncated or tampered?): {exc}") from None


def read_history(path: str | os.PathLike) -> list[dict]:
    """Read a ``.jsonl`` history file written by the engine."""
    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"path: {path} does not exist")
    rows = []
    for i, line in enumerate(path.read_text().splitlines()):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise RunFolderError(f"{path}: line {i + 1} is not valid JSON") from None
    return rows


# ----------------------------------------------------------------------------- RNG state


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state of torch's CPU generator (tensors) and Python's and NumPy's (JSON).

    Examples:
        >>> t, j = rng_state(); set_rng_state(t, j); sorted(j)
        ['numpy', 'python']
    """
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    js = {
        "python": [version, list(internal), gauss],
        "numpy": [
            np_state[0],
            np_state[1].tolist(),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
    }
    return tensors, js


def set_rng_state(tensors: dict[str, torch.Tensor], js: dict[str, Any]) -> None:
    """Restore what [`rng_state`][probgen.infer.runs.rng_state] returned."""
    try:
        torch.set_rng_state(tensors["torch_cpu"])
        cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)
        version, internal, gauss = js["python"]
        random.setstate((version, tuple(internal), gauss))
        name, keys, pos, has_gauss, cached = js["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise RunFolderError(f"malformed RNG state in checkpoint: {exc}") from None


# ----------------------------------------------------------------------------- optimizer


def optimizer_to_flat(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer ``state_dict`` into tensors (for safetensors) and JSON."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in state_dict["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{idx}/{k}"] = v
            else:
                scalars.setdefault(str(idx), {})[k] = v
    groups = json.loads(json.dumps(state_dict["param_groups"], default=_json_default))
    return tensors, {"param_groups": groups, "scalars": scalars}


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    raise TypeError(f"cannot store {type(obj).__name__} in an optimizer config")


def optimizer_from_flat(tensors: dict[str, torch.Tensor], js: dict[str, Any]) -> dict:
    """Rebuild an optimizer ``state_dict`` from
    [`optimizer_to_flat`][probgen.infer.runs.optimizer_to_flat]'s output."""
    try:
        state: dict[int, dict[str, Any]] = {}
        for key, v in tensors.items():
            idx, k = key.split("/", 1)
            state.setdefault(int(idx), {})[k] = v
        for idx, d in js["scalars"].items():
            state.setdefault(int(idx), {}).update(d)
        groups = js["param_groups"]
        for g in groups:
            if "betas" in g:
                g["betas"] = tuple(g["betas"])
        return {"state": state, "param_groups": groups}
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise RunFolderError(f"malformed optimizer state in checkpoint: {exc}") from None


# ----------------------------------------------------------------------------- checkpoints


@dataclass
class Checkpoint:
    """A loaded checkpoint: weights, optimizer states, RNG state, engine state, history."""

    path: Path
    weights: dict[str, torch.Tensor]
    optimizers: dict[str, dict]
    state: dict[str, Any]
    history: list[dict]
    extra: dict[str, torch.Tensor]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_checkpoint(
    out: str | os.PathLike,
    step: int,
    weights: dict[str, torch.Tensor],
    optimizers: dict[str, dict],
    state: dict[str, Any],
    history: list[dict],
    extra: dict[str, torch.Tensor] | None = None,
    name: str | None = None,
    keep_previous: bool = False,
) -> Path:
    """Write a complete checkpoint folder atomically; older ``step-*`` folders are removed.

    ``optimizers`` maps a name to an optimizer ``state_dict``; ``extra`` holds other tensors
    (RNG states, the data order). ``state`` must be JSON-able. Returns the folder.
    """
    root = Path(out) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / (name or f"step-{step:08d}")
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        # clones: tied weights (one tensor under two names) cannot share storage in a file
        save_file({k: v.detach().cpu().clone() for k, v in weights.items()},
                  str(tmp / "weights.safetensors"))
        opt_json: dict[str, Any] = {}
        opt_tensors: dict[str, torch.Tensor] = {}
        for oname, sd in optimizers.items():
            t, j = optimizer_to_flat(sd)
            opt_tensors.update(
                {f"{oname}/{k}": v.detach().cpu().contiguous() for k, v in t.items()})
            opt_json[oname] = j
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        save_file({k: v.detach().cpu().contiguous() for k, v in (extra or {}).items()},
                  str(tmp / "extra.safetensors"))
        (tmp / "state.json").write_text(
            json.dumps({"step": step, "engine": state, "optimizers": opt_json}, sort_keys=True)
        )
        (tmp / "history.jsonl").write_bytes(_jsonl_bytes(history))
        files = sorted(p.name for p in tmp.iterdir())
        manifest = {f: _sha256(tmp / f) for f in files}
        (tmp / "manifest.json").write_text(json.dumps(manifest, sort_keys=True))
        for p in tmp.iterdir():
            os.chmod(p, 0o666 & ~_umask())  # safetensors writes private (0600) files
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if name is None and not keep_previous:
        for old in root.glob("step-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-*"):
        if stale != tmp:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """The newest complete ``step-*`` checkpoint folder of a run, or ``None``."""
    root = Path(out) / "checkpoints"
    if not root.is_dir():
        return None
    steps = sorted(root.glob("step-*"))
    return steps[-1] if steps else None


def load_checkpoint(out: str | os.PathLike, name: str | None = None) -> Checkpoint:
    """Load and verify the latest (or the named) checkpoint of a run folder.

    Every file's SHA-256 is checked against the manifest before anything is parsed.
    """
    path = Path(out) / "checkpoints" / name if name else latest_checkpoint(out)
    if path is None or not path.is_dir():
        raise RunFolderError(f"out: {out} holds no checkpoint")
    manifest = read_json(path / "manifest.json")
    if not isinstance(manifest, dict):
        raise RunFolderError(f"{path}/manifest.json is malformed")
    expected = {"weights.safetensors", "optimizer.safetensors", "extra.safetensors",
                "state.json", "history.jsonl"}
    if set(manifest) != expected:
        raise RunFolderError(
            f"{path}: manifest lists {sorted(manifest)}, expected {sorted(expected)}")
    for fname, digest in manifest.items():
        f = path / fname
        if not f.is_file():
            raise RunFolderError(f"{f} is missing")
        if _sha256(f) != digest:
            raise RunFolderError(f"{f} does not match its checksum (tampered or truncated)")
    weights = load_tensors(path / "weights.safetensors")
    extra = load_tensors(path / "extra.safetensors")
    opt_tensors = load_tensors(path / "optimizer.safetensors")
    state = read_json(path / "state.json")
    optimizers = {}
    for oname, js in state.get("optimizers", {}).items():
        prefix = f"{oname}/"
        t = {k[len(prefix):]: v for k, v in opt_tensors.items() if k.startswith(prefix)}
        optimizers[oname] = optimizer_from_flat(t, js)
    return Checkpoint(path, weights, optimizers, state["engine"],
                      read_history(path / "history.jsonl"), extra)


def load_run_weights(out: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The final weights of a run folder (``weights.safetensors``), safely.

    Keys are prefixed by role: ``model.``, ``guide.``, ``objective.<name>.``, ``pyro.``.
    """
    return load_tensors(Path(out) / "weights.safetensors")
