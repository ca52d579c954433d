"""probgen: deep generative models as Pyro programs built on Bayesian-network graphs.

Examples:
    >>> import probgen
    >>> bn = probgen.BayesNet.load("sprinkler")
    >>> print(bn.query(["Rain"], evidence={"WetGrass": "T"}).values.round(4))
    [0.2921 0.7079]
"""

from probgen.errors import (
    CPDError,
    EvidenceError,
    GraphError,
    ProbgenError,
    QueryTooLargeError,
)
from probgen.graph import BayesNet, LinearGaussianCPD, NeuralCPD, TabularCPD
from probgen.infer.fit import fit
from probgen.program import Program, condition, do, graph_of

__version__ = "0.1.0"

__all__ = [
    "BayesNet", "TabularCPD", "LinearGaussianCPD", "NeuralCPD",
    "Program", "graph_of", "condition", "do", "fit",
    "ProbgenError", "GraphError", "CPDError", "EvidenceError", "QueryTooLargeError",
]
