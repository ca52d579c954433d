"""Stored notebook outputs are clean: no absolute path of the machine that ran them, no
warning. (The docs site shows the stored outputs as they are; the notebooks are not
executed when the site is built.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("*.ipynb"))

# A path rooted at a machine's file system: POSIX roots where users, builds and temporary
# files live, and Windows drive letters (C:\ or C:/). "train/val/test" and URLs don't match.
ABSOLUTE_PATH = re.compile(
    r"(?<![\w.~/-])/(?:work|home|root|tmp|Users|usr|opt|var|private|mnt|srv|scratch|data|"
    r"content|kaggle|builds|github|runner)/"
    r"|(?<![A-Za-z0-9])[A-Za-z]:(?:\\\\?|/)(?=[\w .-])")
# A warning as Python, logging or a library prints one.
WARNING = re.compile(r"\b\w*Warning\b|^WARNING\b|\bwarnings\.warn\b|^\s*warn\(", re.M)
TEXT_TYPES = ("text/plain", "text/html", "text/markdown", "text/latex", "application/json")


def output_texts(output: dict) -> list[tuple[str, str]]:
    """(kind, text) pairs of one stored output; binary payloads (images) are left out."""
    kind = output.get("output_type")
    if kind == "stream":
        return [(f"stream:{output.get('name')}", _text(output.get("text", "")))]
    if kind == "error":
        return [("error", "\n".join([output.get("ename", ""), output.get("evalue", ""),
                                     *output.get("traceback", [])]))]
    data = output.get("data", {})
    return [(mime, _text(data[mime])) for mime in TEXT_TYPES if mime in data]


def _text(value) -> str:
    if isinstance(value, (dict, list)) and not all(isinstance(v, str) for v in value):
        return json.dumps(value)
    return "".join(value) if isinstance(value, list) else str(value)


def problems(output: dict) -> list[str]:
    found = []
    for kind, text in output_texts(output):
        path = ABSOLUTE_PATH.search(text)
        if path:
            line = next(x for x in text.splitlines() if path.group(0) in x)
            found.append(f"{kind}: absolute path {path.group(0)!r} in {line.strip()[:120]!r}")
        warn = WARNING.search(text)
        if warn or (kind == "stream:stderr" and "warning" in text.lower()):
            found.append(f"{kind}: warning {text.strip()[:120]!r}")
    return found


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.name)
def test_stored_outputs_are_clean(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    bad = [f"cell {i}: {p}" for i, cell in enumerate(nb["cells"]) if cell["cell_type"] == "code"
           for output in cell.get("outputs", []) for p in problems(output)]
    assert not bad, f"{path.name}:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.name)
def test_no_widget_state_stored(path):
    """Stored widget state makes the docs page load the widget manager from a CDN (offline:
    nothing). Execute with ``--ExecutePreprocessor.store_widget_state=False``; a progress bar
    then shows as its text."""
    metadata = json.loads(path.read_text(encoding="utf-8"))["metadata"]
    assert "widgets" not in metadata, f"{path.name} stores widget state"


def _stream(text: str, name: str = "stderr") -> dict:
    return {"output_type": "stream", "name": name, "text": [text]}


@pytest.mark.parametrize("output", [
    _stream("/work/main/.venv/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning: "
            "IProgress not found.\n  from .autonotebook import tqdm as notebook_tqdm\n"),
    _stream("saved to /tmp/tmpab12/run\n", "stdout"),
    _stream("home is /home/student/probgen\n", "stdout"),
    _stream("C:\\Users\\student\\runs\\vae\n", "stdout"),
    _stream("see D:/courses/dgm/run\n", "stdout"),
    _stream("UserWarning: converting a masked element to nan.\n"),
    _stream("WARNING:root:falling back to the CPU\n"),
    {"output_type": "execute_result", "data": {"text/plain": ["PosixPath('/root/x.png')"]},
     "metadata": {}, "execution_count": 1},
    {"output_type": "error", "ename": "ValueError", "evalue": "bad",
     "traceback": ['File "/work/main/probgen/fit.py", line 3']},
], ids=["tqdm-warning", "tmp", "home", "windows", "windows-slash", "userwarning", "logging",
        "result-path", "traceback"])
def test_detector_flags_leaks_and_warnings(output):
    assert problems(output)


@pytest.mark.parametrize("text", [
    "split 1000 / 350 / 447 train/val/test\n", "see https://pyro.ai/examples/vae.html\n",
    "fit: 100%|##########| 200/200 [00:02<00:00, 95.1it/s]\n", "p(x | z): 0.25\n",
    "relative path runs/vae/samples.png\n", "~/.cache/probgen\n",
])
def test_detector_passes_clean_outputs(text):
    assert not problems(_stream(text, "stdout"))
