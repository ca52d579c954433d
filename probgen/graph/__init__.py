"""Layer 1: the DAG, conditional distributions, validation, interop, I/O, inspection."""

from probgen.graph.bayesnet import BayesNet
from probgen.graph.cpd import CPD, LinearGaussianCPD, NeuralCPD, TabularCPD

__all__ = ["BayesNet", "CPD", "TabularCPD", "LinearGaussianCPD", "NeuralCPD"]
