"""Graph files: load a network by name or path, save it as YAML or BIF.

``load(name)`` looks in this order: the YAML/BIF files shipped in the package
``probgen.graphs`` (the repo's ``graphs/`` folder), then the discrete networks that ship
inside pgmpy's wheel (``asia``, ``alarm``, ``child``, ... read offline with
``pgmpy.utils.get_example_model``). ``load(path)`` reads a ``.yaml``/``.yml``/``.bif``
(or ``.bif.gz``) file. [`available`][probgen.graph.io.available] lists every name.

The YAML graph format::

    name: sprinkler                 # optional (default: the file's stem)
    description: free text          # optional, kept in bn.graph.graph["description"]
    nodes:                          # a mapping, in file order; parents may come later
      Cloudy:
        states: [F, T]              # state names; the rows of the table
        cpd: [0.5, 0.5]             # a root: one probability per state
      Sprinkler:
        states: [F, T]
        parents: [Cloudy]           # column order of the table
        cpd:                        # pgmpy layout: one row per state of the node,
        - [0.5, 0.9]                #   one column per joint parent state, the LAST
        - [0.5, 0.1]                #   parent varying fastest
      x:
        type: linear_gaussian       # x ~ N(bias + sum_i weights[i] * parents[i], std^2)
        parents: [z]
        weights: [2.0]
        bias: 0.0
        std: 1.0
      z:                            # no cpd: a skeleton node (structure only), e.g. a
        kind: neural                #   neural conditional supplied in code
        description: free text
        latent: true                # any node: latent flag (shaded when drawn)
        plate: data                 # any node: the plate it sits in
        label: "z"                  # any node: display label

Node keys: ``type`` (``tabular``, the default when ``cpd`` is given; ``linear_gaussian``;
``skeleton``, the default otherwise), ``states``, ``parents``, ``cpd``, ``weights``,
``bias``, ``std``, ``latent``, ``plate``, ``label``, ``kind``, ``description`` and
``params`` (a free mapping kept on skeleton nodes, e.g. a mixture's means). A skeleton node
may declare ``states`` so that tabular children can name their columns. ``kind``,
``description``, ``params`` and skeleton ``states`` are node attributes of ``bn.graph``.
State names are strings or integers; ``yes``/``no``/``on``/``off`` stay strings (YAML 1.2
booleans: only ``true``/``false``). Unknown keys are errors, so typos don't pass silently.

BIF files go through pgmpy's ``BIFReader``/``BIFWriter``. probgen writes ``latent``,
``plate`` and ``label`` as BIF ``property`` lines and reads them back; BIF state names are
always read as strings.

Examples:
    >>> bn = load("sprinkler")
    >>> print(bn.cpd("WetGrass"))
    TabularCPD('WetGrass', states=['F', 'T'], parents=['Sprinkler', 'Rain'])
    >>> bn.cpd("WetGrass").probs(Sprinkler="T", Rain="F").tolist()
    [0.1, 0.9]
    >>> "alarm" in available()
    True
"""

from __future__ import annotations

import gzip
import os
import re
import warnings
from collections.abc import Hashable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from probgen.errors import CPDError, GraphError, ProbgenError
from probgen.graph.bayesnet import BayesNet
from probgen.graph.cpd import LinearGaussianCPD, TabularCPD
from probgen.graph.pgmpy_io import from_pgmpy, to_pgmpy

__all__ = ["load", "save", "available", "PGMPY_NETWORKS"]

#: Discrete networks shipped inside pgmpy's wheel (all load offline; the munin family,
#: pathfinder, diabetes, mildew and link take 5-20 s to parse).
PGMPY_NETWORKS = (
    "asia", "cancer", "earthquake", "sachs", "survey", "alarm", "barley", "child",
    "insurance", "mildew", "water", "hailfinder", "hepar2", "win95pts", "andes",
    "diabetes", "link", "munin1", "munin2", "munin3", "munin4", "pathfinder", "pigs",
    "munin",
)  # fmt: skip

_SUFFIXES = (".yaml", ".yml", ".bif", ".bif.gz")
_COMMON_KEYS = {"type", "parents", "latent", "plate", "label", "kind", "description"}
_KEYS = {
    "tabular": _COMMON_KEYS | {"states", "cpd"},
    "linear_gaussian": _COMMON_KEYS | {"weights", "bias", "std"},
    "skeleton": _COMMON_KEYS | {"states", "params"},
}
_EXTRA_ATTRS = ("kind", "description", "params", "states")


# --- YAML dialect: YAML 1.2 booleans, flow-style rows -------------------------------------
class _Loader(yaml.SafeLoader):
    """SafeLoader where only true/false are booleans (``yes``/``no`` are state names)."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class _Dumper(yaml.SafeDumper):
    """Writes lists of scalars (states, table rows) on one line."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(x, (list, dict)) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


# --- names --------------------------------------------------------------------------------
def _graph_dir() -> Any:
    """The folder of shipped graph files: the package ``probgen.graphs`` when installed,
    else (a source checkout that was not pip-installed) the repo's ``graphs/``."""
    try:
        return resources.files("probgen.graphs")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "graphs"


def _shipped() -> dict[str, Any]:
    out: dict[str, Any] = {}
    root = _graph_dir()
    if not root.is_dir():
        return out
    for f in sorted(root.iterdir(), key=lambda f: f.name):
        for suf in _SUFFIXES:
            if f.name.endswith(suf) and not f.name.startswith("."):
                out.setdefault(f.name[: -len(suf)], f)
    return out


def available() -> list[str]:
    """Every name [`load`][probgen.graph.io.load] accepts: shipped graph files first, then pgmpy's
    networks.

    Examples:
        >>> names = available()
        >>> names.index("sprinkler") < names.index("alarm")
        True
    """
    shipped = list(_shipped())
    return shipped + [n for n in PGMPY_NETWORKS if n not in shipped]


def _looks_like_path(name: str) -> bool:
    return name.endswith(_SUFFIXES) or "/" in name or os.sep in name


def load(name_or_path: str | os.PathLike) -> BayesNet:
    """Load a network by name (see [`available`][probgen.graph.io.available]) or from a YAML/BIF
    path.

    Raises:
        GraphError: an unknown name (the message lists the available ones), a missing
            file, or a malformed file (the message names the file and the node).
        CPDError: a malformed table (the message names the file and the node).

    Examples:
        >>> load("asia").cpd("either").parents
        ('lung', 'tub')
    """
    name = os.fspath(name_or_path)
    if not isinstance(name, str):
        raise GraphError(f"expected a graph name or path, got {name_or_path!r}")
    if isinstance(name_or_path, os.PathLike) or _looks_like_path(name):
        path = Path(name)
        if not path.is_file():
            raise GraphError(f"no graph file {str(path)!r}")
        return _load_file(path.name, path.read_bytes(), source=str(path))
    shipped = _shipped()
    if name in shipped:
        f = shipped[name]
        return _load_file(f.name, f.read_bytes(), source=f"probgen.graphs/{f.name}")
    if name in PGMPY_NETWORKS:
        from pgmpy.utils import get_example_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model = get_example_model(name)
        return from_pgmpy(model, name=name)
    raise GraphError(f"unknown graph {name!r}; available: {', '.join(available())}")


def _load_file(filename: str, data: bytes, *, source: str) -> BayesNet:
    stem = filename.split(".")[0]
    try:
        if filename.endswith((".yaml", ".yml")):
            return _from_yaml(data.decode("utf-8"), source=source, stem=stem)
        if filename.endswith(".bif.gz"):
            return _from_bif(gzip.decompress(data).decode("utf-8"), source=source, stem=stem)
        if filename.endswith(".bif"):
            return _from_bif(data.decode("utf-8"), source=source, stem=stem)
    except UnicodeDecodeError as e:
        raise GraphError(f"{source}: not a text file ({e})") from None
    raise GraphError(f"{source}: unknown graph file type; use one of {list(_SUFFIXES)}")


# --- YAML -> BayesNet ---------------------------------------------------------------------
def _from_yaml(text: str, *, source: str, stem: str) -> BayesNet:
    try:
        doc = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        raise GraphError(f"{source}: not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise GraphError(f"{source}: expected a mapping with a 'nodes' key at the top level")
    extra = set(doc) - {"name", "description", "nodes"}
    if extra:
        raise GraphError(f"{source}: unknown top-level keys {sorted(extra)}")
    nodes = doc.get("nodes")
    if not isinstance(nodes, dict) or not nodes:
        raise GraphError(f"{source}: 'nodes' must be a non-empty mapping of node name -> spec")
    bn = BayesNet(name=str(doc.get("name") or stem))
    if doc.get("description"):
        bn.graph.graph["description"] = str(doc["description"]).strip()
    specs: dict[str, dict] = {}
    for n, spec in nodes.items():
        try:
            specs[n] = _node_spec(n, spec)
            _add_node(bn, n, specs[n])
        except ProbgenError as e:
            raise type(e)(f"{source}: {e}") from None
    for n, spec in specs.items():
        try:
            for p in spec["parents"]:
                if p not in specs:
                    raise GraphError(f"node {n!r}: unknown parent {p!r}")
                bn.add_edge(p, n)
            cpd = _make_cpd(n, spec, specs)
            if cpd is not None:
                bn.add_cpds(cpd)
        except ProbgenError as e:
            raise type(e)(f"{source}: {e}") from None
    return bn


def _node_spec(n: Any, spec: Any) -> dict:
    if not isinstance(n, str) or not n:
        raise GraphError(f"node names must be non-empty strings, got {n!r}")
    spec = {} if spec is None else spec
    if not isinstance(spec, dict):
        raise GraphError(f"node {n!r}: expected a mapping of keys, got {spec!r}")
    kind = spec.get("type", "tabular" if "cpd" in spec else "skeleton")
    if kind not in _KEYS:
        raise GraphError(f"node {n!r}: unknown type {kind!r}; use one of {sorted(_KEYS)}")
    bad = set(spec) - _KEYS[kind]
    if bad:
        raise GraphError(
            f"node {n!r}: unknown keys {sorted(bad)} for type {kind!r}; "
            f"allowed: {sorted(_KEYS[kind])}"
        )
    parents = spec.get("parents") or []
    if isinstance(parents, str) or not isinstance(parents, list):
        raise GraphError(f"node {n!r}: 'parents' must be a list of names, got {parents!r}")
    if "states" in spec:
        states = spec["states"]
        if (
            not isinstance(states, list)
            or not states
            or not all(isinstance(s, (str, int)) and not isinstance(s, bool) for s in states)
        ):
            raise CPDError(
                f"node {n!r}: 'states' must be a non-empty list of strings or integers, "
                f"got {states!r}"
            )
    if kind == "tabular" and "states" not in spec:
        raise CPDError(f"node {n!r}: a tabular node needs 'states'")
    if kind == "tabular" and "cpd" not in spec:
        raise CPDError(f"node {n!r}: a tabular node needs 'cpd'")
    if "params" in spec and not isinstance(spec["params"], dict):
        raise GraphError(f"node {n!r}: 'params' must be a mapping")
    return {**spec, "type": kind, "parents": parents}


def _add_node(bn: BayesNet, n: str, spec: dict) -> None:
    latent = spec.get("latent", False)
    if not isinstance(latent, bool):
        raise GraphError(f"node {n!r}: 'latent' must be true or false, got {latent!r}")
    plate = spec.get("plate")
    bn.add_node(n, latent=latent, plate=None if plate is None else str(plate),
                label=spec.get("label"))  # fmt: skip
    for key in _EXTRA_ATTRS:
        if key in spec and not (key == "states" and spec["type"] == "tabular"):
            bn.graph.nodes[n][key] = spec[key]


def _make_cpd(n: str, spec: dict, specs: Mapping[str, dict]) -> Any:
    parents = spec["parents"]
    if spec["type"] == "tabular":
        parent_states: dict[str, list[Hashable]] = {}
        for p in parents:
            if "states" not in specs[p]:
                raise CPDError(
                    f"node {n!r}: tabular CPD needs the states of parent {p!r}, which declares none"
                )
            parent_states[p] = list(specs[p]["states"])
        try:
            return TabularCPD(n, spec["cpd"], states=spec["states"], parents=parents,
                              parent_states=parent_states)  # fmt: skip
        except (TypeError, ValueError) as e:
            if isinstance(e, ProbgenError):
                raise
            raise CPDError(f"node {n!r}: malformed 'cpd' table ({e})") from None
    if spec["type"] == "linear_gaussian":
        try:
            return LinearGaussianCPD(
                n,
                parents=parents,
                weights=spec.get("weights") or [],
                bias=spec.get("bias", 0.0),
                std=spec.get("std", 1.0),
            )
        except (TypeError, ValueError) as e:
            if isinstance(e, ProbgenError):
                raise
            raise CPDError(f"node {n!r}: weights, bias and std must be numbers ({e})") from None
    return None


# --- BayesNet -> YAML ---------------------------------------------------------------------
def _to_yaml(bn: BayesNet) -> str:
    doc: dict[str, Any] = {"name": bn.name}
    if bn.graph.graph.get("description"):
        doc["description"] = bn.graph.graph["description"]
    nodes: dict[str, dict] = {}
    cpds = bn.cpds
    for n in bn.nodes:
        attrs = bn.graph.nodes[n]
        cpd = cpds.get(n)
        spec: dict[str, Any] = {}
        if isinstance(cpd, TabularCPD):
            spec["states"] = list(cpd.states)
            if cpd.parents:
                spec["parents"] = list(cpd.parents)
            vals = cpd.values.tolist()
            spec["cpd"] = [row[0] for row in vals] if not cpd.parents else vals
        elif isinstance(cpd, LinearGaussianCPD):
            spec["type"] = "linear_gaussian"
            if cpd.parents:
                spec["parents"] = list(cpd.parents)
                spec["weights"] = list(cpd.weights)
            spec["bias"] = cpd.bias
            spec["std"] = cpd.std
        elif cpd is not None:
            raise CPDError(
                f"node {n!r}: a {type(cpd).__name__} holds code, not data; YAML saves "
                "tabular and linear-Gaussian CPDs (remove it to save a skeleton)"
            )
        else:
            if attrs.get("states") is not None:
                spec["states"] = list(attrs["states"])
            if bn.parents(n):
                spec["parents"] = bn.parents(n)
        for key in ("kind", "description", "params"):
            if attrs.get(key) is not None:
                spec[key] = attrs[key]
        if attrs.get("latent"):
            spec["latent"] = True
        if attrs.get("plate") is not None:
            spec["plate"] = attrs["plate"]
        if attrs.get("label") not in (None, n):
            spec["label"] = attrs["label"]
        nodes[n] = spec
    doc["nodes"] = nodes
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


# --- BIF ------------------------------------------------------------------------------------
def _from_bif(text: str, *, source: str, stem: str) -> BayesNet:
    from pgmpy.readwrite import BIFReader

    try:
        model = BIFReader(string=text, include_properties=True).get_model()
    except ProbgenError:
        raise
    except Exception as e:  # pgmpy's parser raises many kinds; name the file
        raise GraphError(f"{source}: cannot parse BIF ({type(e).__name__}: {e})") from None
    name = model.name if model.name and model.name != "unknown" else stem
    try:
        bn = from_pgmpy(model, name=name)
    except ProbgenError as e:
        raise type(e)(f"{source}: {e}") from None
    for n in bn.nodes:
        attrs = model.nodes[n]
        if str(attrs.get("latent", "")).lower() == "true":
            bn.graph.nodes[n]["latent"] = True
    return bn


_BIF_SAFE = re.compile(r"^[^;{}=\"]*$")


def _to_bif(bn: BayesNet) -> str:
    from pgmpy.readwrite import BIFWriter

    if not bn.is_discrete:
        bad = next((n for n in bn.nodes if not isinstance(bn.cpds.get(n), TabularCPD)), bn.name)
        raise CPDError(f"BIF stores discrete networks only; node {bad!r} has no tabular CPD")
    model = to_pgmpy(bn)
    for n in bn.nodes:
        model.nodes[n].clear()
        props: dict[str, Any] = {}
        if bn.is_latent(n):
            props["latent"] = "true"
        if bn.plate_of(n) is not None:
            props["plate"] = bn.plate_of(n)
        if bn.graph.nodes[n].get("label") not in (None, n):
            props["label"] = bn.graph.nodes[n]["label"]
        for key, val in props.items():
            if not _BIF_SAFE.match(str(val)):
                raise GraphError(f"node {n!r}: {key} {val!r} cannot be written to BIF")
            model.nodes[n][key] = val
    return str(BIFWriter(model))


def save(bn: BayesNet, path: str | os.PathLike) -> None:
    """Write ``bn`` to ``path``: YAML for ``.yaml``/``.yml``, BIF for ``.bif``.

    Raises:
        GraphError: an unknown file extension.
        CPDError: a CPD the format cannot hold (neural CPDs; non-tabular ones in BIF).

    Examples:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "sprinkler.yaml")
        >>> save(load("sprinkler"), path)
        >>> load(path).cpd("Rain").parents
        ('Cloudy',)
    """
    p = Path(path)
    if p.name.endswith((".yaml", ".yml")):
        text = _to_yaml(bn)
    elif p.name.endswith(".bif"):
        text = _to_bif(bn)
    else:
        raise GraphError(f"cannot save {str(p)!r}: use a .yaml, .yml or .bif extension")
    p.write_text(text, encoding="utf-8")
