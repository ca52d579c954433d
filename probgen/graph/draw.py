"""Draw a network with matplotlib alone (no Graphviz binary), or write it as DOT text.

[`draw`][probgen.graph.draw.draw] lays the DAG out in layers (parents above children, each node in
the first layer below all its parents), orders each layer to reduce crossings (barycentre sweeps),
keeps the members of a plate side by side, and draws:

- nodes as circles (ellipses when the label is long), latent nodes shaded grey and
  observed nodes white (``shade="observed"`` swaps that to the textbook convention);
  a legend says which is which;
- edges as arrows; plates as rounded boxes around their nodes, named in a corner.

It builds a bare `matplotlib.figure.Figure` (no pyplot state, safe on a headless
Agg machine) and returns it; notebooks display it when it is the cell's value.

Examples:
    >>> from probgen.graph import BayesNet
    >>> bn = BayesNet([("z", "x")], name="vae")
    >>> bn.add_node("z", latent=True, plate="data")
    >>> bn.add_node("x", plate="data")
    >>> type(draw(bn)).__name__
    'Figure'
    >>> print(to_dot(bn))  # doctest: +NORMALIZE_WHITESPACE
    digraph "vae" {
      node [shape=circle];
      subgraph "cluster_data" {
        label="data"; style=rounded;
        "z"; "x";
      }
      "z" [label="z", style=filled, fillcolor="gray80"];
      "x" [label="x"];
      "z" -> "x";
    }
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import networkx as nx

from probgen.errors import GraphError
from probgen.graph.bayesnet import BayesNet

__all__ = ["draw", "to_dot", "layered_layout"]

_LATENT_FILL = "#bdbdbd"
_OBSERVED_FILL = "white"
_RADIUS = 0.3  # node radius in layout units (one layer = 1 unit tall)
_CHAR_W = 0.12  # approximate width of one label character at the base font size


def _label(bn: BayesNet, n: str) -> str:
    return str(bn.graph.nodes[n].get("label") or n)


def _half_width(bn: BayesNet, n: str) -> float:
    return max(_RADIUS, 0.5 * _CHAR_W * len(_label(bn, n)) + 0.08)


def layered_layout(bn: BayesNet, *, sweeps: int = 4) -> dict[str, tuple[float, float]]:
    """Positions ``{node: (x, y)}``: layer ``k`` at ``y = -k``, parents above children.

    Examples:
        >>> from probgen.graph import BayesNet
        >>> pos = layered_layout(BayesNet([("a", "b"), ("a", "c")]))
        >>> pos["a"][1], pos["b"][1], pos["b"][0] < pos["c"][0]
        (0.0, -1.0, True)
    """
    g = bn.graph
    index = {n: i for i, n in enumerate(bn.nodes)}
    depth = {n: k for k, gen in enumerate(nx.topological_generations(g)) for n in gen}
    for n in g:  # pull each root down to just above its highest child: shorter edges
        if g.in_degree(n) == 0 and g.out_degree(n) > 0:
            depth[n] = min(depth[c] for c in g.successors(n)) - 1
    layers = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for n in sorted(g, key=index.__getitem__):
        layers[depth[n]].append(n)
    slot = max((2 * _half_width(bn, n) + 0.35 for n in g), default=1.0)
    slot = max(slot, 1.0)

    def order(layer: list[str], pos: dict[str, float], neighbours: Any) -> list[str]:
        bary = {}
        for n in layer:
            ps = [pos[m] for m in neighbours(n) if m in pos]
            bary[n] = sum(ps) / len(ps) if ps else pos.get(n, 0.0)
        plate_bary: dict[Any, list[float]] = {}
        for n in layer:
            plate_bary.setdefault(bn.plate_of(n), []).append(bary[n])
        key = {n: (sum(plate_bary[bn.plate_of(n)]) / len(plate_bary[bn.plate_of(n)])
                   if bn.plate_of(n) is not None else bary[n], bary[n], index[n])
               for n in layer}  # fmt: skip
        return sorted(layer, key=key.__getitem__)

    def coords(layers: list[list[str]]) -> dict[str, float]:
        return {n: i - (len(layer) - 1) / 2 for layer in layers for i, n in enumerate(layer)}

    layers = [order(layer, coords(layers), lambda n: []) for layer in layers]
    for _ in range(sweeps):
        for k in range(1, len(layers)):
            layers[k] = order(layers[k], coords(layers), g.predecessors)
        for k in range(len(layers) - 2, -1, -1):
            layers[k] = order(layers[k], coords(layers), g.successors)
    xs = coords(layers)
    return {
        n: (xs[n] * slot + 0.0, -float(k) + 0.0) for k, layer in enumerate(layers) for n in layer
    }


def _boundary(center: tuple[float, float], half_w: float, u: tuple[float, float]) -> float:
    """Distance from an ellipse's centre to its boundary along unit vector ``u``."""
    return 1.0 / math.sqrt((u[0] / half_w) ** 2 + (u[1] / _RADIUS) ** 2)


def draw(
    bn: BayesNet,
    path: str | os.PathLike | None = None,
    ax: Any = None,
    layout: str | Mapping[str, tuple[float, float]] = "auto",
    *,
    shade: str = "latent",
    title: str | None = None,
    dpi: int = 150,
) -> Any:
    """Draw ``bn`` and return the matplotlib ``Figure``; save a PNG when ``path`` is given.

    Args:
        bn: the network.
        path: where to write the image (format from the extension, e.g. ``.png``).
        ax: an existing matplotlib ``Axes`` to draw into (its figure is returned).
        layout: ``"auto"``/``"layered"`` (parents above children), ``"spring"``
            (networkx's force layout, seeded) or a mapping ``{node: (x, y)}``.
        shade: which nodes are filled grey, ``"latent"`` (default) or ``"observed"``.
        title: the title (default: the network's name).
        dpi: resolution of the saved image.

    Raises:
        GraphError: an unknown layout name, positions missing for some node, or an
            unknown ``shade``.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Ellipse, FancyArrowPatch, FancyBboxPatch

    if shade not in ("latent", "observed"):
        raise GraphError(f"shade must be 'latent' or 'observed', got {shade!r}")
    pos = _positions(bn, layout)
    half = {n: _half_width(bn, n) for n in bn.nodes}
    xs = [p[0] for p in pos.values()] or [0.0]
    ys = [p[1] for p in pos.values()] or [0.0]
    pad = 0.9
    x0, x1 = min(xs) - max(half.values(), default=_RADIUS) - pad, max(xs) + max(
        half.values(), default=_RADIUS) + pad  # fmt: skip
    y0, y1 = min(ys) - _RADIUS - pad, max(ys) + _RADIUS + pad
    scale = 1.0
    if ax is None:
        scale = min(1.0, 22.0 / max(x1 - x0, 1e-9))  # keep very wide graphs printable
        fig = Figure(figsize=(max(3.5, (x1 - x0) * scale), max(2.5, (y1 - y0) * scale)))
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    fontsize = max(4.0, 10.0 * scale)  # labels shrink with the drawing so they fit nodes

    # plates: rounded boxes around their members, drawn first (underneath)
    plates: dict[str, list[str]] = {}
    for n in bn.nodes:
        if bn.plate_of(n) is not None:
            plates.setdefault(str(bn.plate_of(n)), []).append(n)
    for k, (name, members) in enumerate(sorted(plates.items())):
        m = 0.22 + 0.08 * k
        bx0 = min(pos[n][0] - half[n] for n in members) - m
        bx1 = max(pos[n][0] + half[n] for n in members) + m
        by0 = min(pos[n][1] for n in members) - _RADIUS - m - 0.18
        by1 = max(pos[n][1] for n in members) + _RADIUS + m
        ax.add_patch(FancyBboxPatch((bx0, by0), bx1 - bx0, by1 - by0,
                                    boxstyle="round,pad=0,rounding_size=0.15",
                                    fill=False, linewidth=1.0, edgecolor="#555555"))  # fmt: skip
        ax.text(bx1 - 0.08, by0 + 0.06, name, ha="right", va="bottom",
                fontsize=fontsize - 1, color="#333333", style="italic")  # fmt: skip
        y0 = min(y0, by0 - 0.2)

    # edges
    for u, v in bn.edges:
        (ux, uy), (vx, vy) = pos[u], pos[v]
        d = math.hypot(vx - ux, vy - uy) or 1.0
        e = ((vx - ux) / d, (vy - uy) / d)
        start = (
            ux + e[0] * _boundary(pos[u], half[u], e),
            uy + e[1] * _boundary(pos[u], half[u], e),
        )
        end = (vx - e[0] * _boundary(pos[v], half[v], e), vy - e[1] * _boundary(pos[v], half[v], e))
        rad = 0.15 if abs(uy - vy) > 1.5 else 0.0
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=11,
                                     shrinkA=0, shrinkB=0, linewidth=0.9, color="#222222",
                                     connectionstyle=f"arc3,rad={rad}"))  # fmt: skip

    # nodes
    for n in bn.nodes:
        filled = bn.is_latent(n) == (shade == "latent")
        ax.add_patch(Ellipse(pos[n], 2 * half[n], 2 * _RADIUS, linewidth=1.2,
                             facecolor=_LATENT_FILL if filled else _OBSERVED_FILL,
                             edgecolor="black", zorder=3))  # fmt: skip
        ax.text(pos[n][0], pos[n][1], _label(bn, n), ha="center", va="center",
                fontsize=fontsize, zorder=4)  # fmt: skip

    shaded, plain = ("latent", "observed") if shade == "latent" else ("observed", "latent")
    handles = [
        Line2D([], [], marker="o", linestyle="", markersize=11, markeredgecolor="black",
               markerfacecolor=_LATENT_FILL, label=f"{shaded} (shaded)"),
        Line2D([], [], marker="o", linestyle="", markersize=11, markeredgecolor="black",
               markerfacecolor=_OBSERVED_FILL, label=plain),
    ]  # fmt: skip
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2,
              frameon=False, fontsize=9)  # fmt: skip
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(bn.name if title is None else title)
    if path is not None:
        fig.savefig(os.fspath(path), dpi=dpi, bbox_inches="tight")
    return fig


def _positions(
    bn: BayesNet, layout: str | Mapping[str, tuple[float, float]]
) -> dict[str, tuple[float, float]]:
    if isinstance(layout, Mapping):
        missing = [n for n in bn.nodes if n not in layout]
        if missing:
            raise GraphError(f"layout gives no position for nodes {missing}")
        return {n: (float(layout[n][0]), float(layout[n][1])) for n in bn.nodes}
    if layout in ("auto", "layered"):
        return layered_layout(bn)
    if layout == "spring":
        raw = nx.spring_layout(bn.graph, seed=0)
        k = 1.6 * math.sqrt(max(len(bn.nodes), 1))
        return {n: (float(p[0]) * k, float(p[1]) * k) for n, p in raw.items()}
    raise GraphError(f"unknown layout {layout!r}; use 'auto', 'layered', 'spring' or a mapping")


def _q(s: Any) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(bn: BayesNet) -> str:
    """The network in Graphviz DOT syntax: latent nodes filled grey, plates as
    ``cluster_<plate>`` subgraphs with rounded borders. Text only; render it with any
    Graphviz tool (``dot -Tpng``) or an online viewer.

    Examples:
        >>> from probgen.graph import BayesNet
        >>> print(to_dot(BayesNet([("a", "b")], name="g")).splitlines()[-2])
          "a" -> "b";
    """
    lines = [f"digraph {_q(bn.name)} {{", "  node [shape=circle];"]
    plates: dict[str, list[str]] = {}
    for n in bn.nodes:
        if bn.plate_of(n) is not None:
            plates.setdefault(str(bn.plate_of(n)), []).append(n)
    for name, members in sorted(plates.items()):
        lines += [
            f"  subgraph {_q('cluster_' + name)} {{",
            f"    label={_q(name)}; style=rounded;",
            "    " + " ".join(f"{_q(n)};" for n in members),
            "  }",
        ]
    for n in bn.nodes:
        style = ', style=filled, fillcolor="gray80"' if bn.is_latent(n) else ""
        lines.append(f"  {_q(n)} [label={_q(_label(bn, n))}{style}];")
    for u, v in bn.edges:
        lines.append(f"  {_q(u)} -> {_q(v)};")
    lines.append("}")
    return "\n".join(lines)
