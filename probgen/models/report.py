"""``probgen report``: one Markdown page comparing run folders, with a sample grid each.

The table reads each run's ``config.json`` and ``metrics.json`` (nothing is recomputed):
family, data, test NLL and its kind, bits/dim, FD (digits) or energy distance (vectors),
training time and parameter count. Each run's sample picture is copied beside the page.

Examples:
    >>> import tempfile
    >>> from probgen.models.family import train
    >>> d = tempfile.mkdtemp()
    >>> _ = train("flow", data="moons", out=f"{d}/flow", fast=True, progress=False)
    >>> write_report([f"{d}/flow"], f"{d}/report").name
    'report.md'
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from probgen.errors import ProbgenError
from probgen.infer import runs

__all__ = ["write_report", "report_rows"]

_COLUMNS = ("run", "family", "data", "test NLL", "NLL kind", "bits/dim", "FD", "energy dist.",
            "train s", "params", "samples")


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def report_rows(folders: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """One dict per run folder: what the report's table shows."""
    rows = []
    for folder in folders:
        d = Path(folder)
        if not (d / "config.json").is_file():
            raise ProbgenError(f"runs: {str(folder)!r} is not a run folder (no config.json)")
        if not (d / "metrics.json").is_file():
            raise ProbgenError(f"runs: {str(folder)!r} has no metrics.json (unfinished run?)")
        config, metrics = runs.read_json(d / "config.json"), runs.read_json(d / "metrics.json")
        data = config.get("data", {})
        picture = next((d / n for n in ("samples.png", "samples.txt") if (d / n).is_file()),
                       None)
        rows.append({"folder": d, "family": config.get("family", "?"),
                     "data": data.get("name", "?") if isinstance(data, dict) else str(data),
                     "test_nll": metrics.get("test_nll"), "nll_kind": metrics.get("nll_kind"),
                     "test_bpd": metrics.get("test_bpd"), "fd": metrics.get("fd"),
                     "test_energy": metrics.get("test_energy"),
                     "train_seconds": metrics.get("train_seconds"),
                     "num_params": metrics.get("num_params"), "picture": picture})
    return rows


def write_report(folders: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Write ``out/report.md`` and a thumbnail per run; returns the page's path."""
    if not folders:
        raise ProbgenError("runs: give at least one run folder")
    rows = report_rows(folders)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# probgen report", "",
             "Test figures in nats per example (`NLL kind` says exact, importance-sampled or "
             "a bound); FD: Fréchet distance of 1000 samples to the digits test split in a "
             "digits classifier's features (train vs test: 3.0; independent pixels: 51).", "",
             "| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for i, r in enumerate(rows):
        thumb = "–"
        if r["picture"] is not None:
            name = f"{i:02d}-{r['family']}{r['picture'].suffix}"
            shutil.copyfile(r["picture"], out / name)
            thumb = f"![{r['family']}]({name})" if name.endswith(".png") else f"[text]({name})"
        cells = [f"`{r['folder']}`", r["family"], f"`{r['data']}`", _fmt(r["test_nll"]),
                 _fmt(r["nll_kind"]), _fmt(r["test_bpd"], 3), _fmt(r["fd"]),
                 _fmt(r["test_energy"], 4), _fmt(r["train_seconds"], 0),
                 f"{r['num_params']:,}" if isinstance(r["num_params"], int) else "–", thumb]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    page = out / "report.md"
    runs.atomic_write_bytes(page, ("\n".join(lines) + "\n").encode())
    return page
