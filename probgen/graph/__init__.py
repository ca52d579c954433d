"""Layer 1: the DAG, conditional distributions, validation, interop, I/O, inspection."""

from probgen.graph.bayesnet import BayesNet
from probgen.graph.cpd import CPD, LinearGaussianCPD, NeuralCPD, TabularCPD
from probgen.graph.draw import draw, to_dot
from probgen.graph.inspect import active_trail_nodes, factorization, is_dseparated, markov_blanket
from probgen.graph.io import PGMPY_NETWORKS, available, load, save
from probgen.graph.pgmpy_io import from_pgmpy, to_pgmpy

__all__ = [
    "BayesNet", "CPD", "TabularCPD", "LinearGaussianCPD", "NeuralCPD",
    "load", "save", "available", "PGMPY_NETWORKS", "from_pgmpy", "to_pgmpy",
    "is_dseparated", "active_trail_nodes", "markov_blanket", "factorization", "draw", "to_dot",
]
