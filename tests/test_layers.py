"""Imports point down the layers of shared/ARCHITECTURE.md (module-level imports only)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "probgen"
LAYER = {"nn": 0, "data": 0, "metrics": 0, "errors": 0, "graph": 1, "program": 2, "infer": 3,
         "models": 4, "cli": 5, "__init__": 5, "graphs": 0}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "probgen":
        return None
    return LAYER.get(parts[1] if len(parts) > 1 else "__init__")


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        yield ".".join(rel.parts), path


@pytest.mark.parametrize("module, path", list(_modules()), ids=lambda x: str(x))
def test_module_imports_point_down(module, path):
    own = _layer(module if not module.endswith("__init__") else module.rsplit(".", 1)[0])
    if module == "probgen.__init__":
        own = 5
    tree = ast.parse(path.read_text())
    for node in tree.body:  # module level only: methods may delegate upwards lazily
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            target = _layer(name)
            if target is not None and own is not None:
                assert target <= own, f"{module} (layer {own}) imports {name} (layer {target})"


def test_time_mlp_is_conditioned_on_time_and_label():
    import torch

    from probgen.nn.time_embedding import TimeMLP, sinusoidal_embedding

    e = sinusoidal_embedding(torch.tensor([0.0, 3.0]), 6)
    # cos(0) = 1 and sin(0) = 0 in every frequency; at t = 3 the first pair is (cos 3, sin 3)
    assert torch.allclose(e[0], torch.tensor([1.0, 1, 1, 0, 0, 0]))
    assert abs(float(e[1, 0]) - float(torch.cos(torch.tensor(3.0)))) < 1e-6
    torch.manual_seed(0)
    net = TimeMLP(3, hidden=(16, 16), num_classes=2)
    x = torch.randn(4, 3)
    a, b = net(x, torch.zeros(4)), net(x, torch.ones(4))
    assert a.shape == (4, 3) and not torch.allclose(a, b)
    assert not torch.allclose(net(x, torch.zeros(4), torch.zeros(4, dtype=torch.long)), a)
