"""Drawing with matplotlib (Agg, no Graphviz) and DOT export."""

from __future__ import annotations

import re

import matplotlib
import pytest

from probgen.errors import GraphError
from probgen.graph.bayesnet import BayesNet
from probgen.graph.draw import draw, layered_layout, to_dot
from probgen.graph.io import load

matplotlib.use("Agg")


@pytest.mark.parametrize("name", ["asia", "vae", "alarm", "hmm", "gaussian_mixture", "ebm"])
def test_draw_writes_a_valid_png(name, tmp_path):
    from matplotlib.figure import Figure
    from matplotlib.image import imread

    path = tmp_path / f"{name}.png"
    fig = draw(load(name), path)
    assert isinstance(fig, Figure)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    assert img[..., :3].std() > 0  # not a blank canvas


def test_draw_into_given_axes_and_legend_names_the_shading():
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot(1, 1, 1)
    assert draw(load("vae"), ax=ax, layout="spring") is fig
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["latent (shaded)", "observed"]
    texts = {t.get_text() for t in ax.texts}
    assert {"z", "x", "data"} <= texts  # node labels and the plate name


def test_shade_observed_swaps_the_legend():
    fig = draw(load("vae"), shade="observed")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["observed (shaded)", "latent"]


def test_layered_layout_puts_parents_above_children():
    for name in ["asia", "alarm", "diffusion", "arm"]:
        bn = load(name)
        pos = layered_layout(bn)
        assert set(pos) == set(bn.nodes)
        assert all(pos[u][1] > pos[v][1] for u, v in bn.edges)
        assert len(set(pos.values())) == len(pos)  # no two nodes on one spot


def test_bad_layout_or_shade_raises():
    bn = load("vae")
    with pytest.raises(GraphError, match="circular"):
        draw(bn, layout="circular")
    with pytest.raises(GraphError, match="'x'"):
        draw(bn, layout={"z": (0, 0)})
    with pytest.raises(GraphError, match="shade"):
        draw(bn, shade="nothing")


@pytest.mark.parametrize("name", ["asia", "vae", "alarm", "diffusion"])
def test_dot_has_every_node_edge_latent_and_plate(name):
    bn = load(name)
    dot = to_dot(bn)
    assert dot.startswith(f'digraph "{name}" {{') and dot.rstrip().endswith("}")
    assert dot.count("{") == dot.count("}")
    edges = set(re.findall(r'^\s*"([^"]+)" -> "([^"]+)";$', dot, flags=re.M))
    assert edges == set(bn.edges)
    declared = re.findall(r'^\s*"([^"]+)" \[label=', dot, flags=re.M)
    assert sorted(declared) == sorted(bn.nodes)
    for n in bn.latent_nodes():
        assert re.search(rf'^\s*"{re.escape(n)}" \[.*style=filled', dot, flags=re.M)
    for plate in {bn.plate_of(n) for n in bn.nodes} - {None}:
        assert f'subgraph "cluster_{plate}"' in dot


def test_dot_escapes_quotes():
    bn = BayesNet([('say "hi"', "b")], name="q")
    assert '"say \\"hi\\"" -> "b";' in bn.to_dot()
