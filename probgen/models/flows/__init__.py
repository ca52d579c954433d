"""Normalizing flows: TransformedDistributions (RealNVP, MAF/IAF, NSF, Glow pieces), the
continuous-time CNF, dequantization for discrete data, flows as VAE guides and priors."""

from probgen.models.flows.cnf import CNF, CNFTransform
from probgen.models.flows.dequantize import (
    DiscreteNLL,
    UniformDequantization,
    VariationalDequantization,
    dequantized_model,
    discrete_nll,
    log_likelihood_bound,
)
from probgen.models.flows.flow_vae import FlowVAE, compare_vae_guides, elbo_gain, train_flow_vae
from probgen.models.flows.flows import (
    Flow,
    build_flow,
    check_invertible,
    flow_model,
    glow,
    iaf,
    maf,
    nsf,
    realnvp,
)
from probgen.models.flows.plots import plot_warp
from probgen.models.flows.train import FlowConfig, FlowRun, coupling_flow

__all__ = [
    "Flow", "build_flow", "realnvp", "maf", "iaf", "nsf", "glow", "check_invertible",
    "flow_model", "UniformDequantization", "VariationalDequantization",
    "log_likelihood_bound", "discrete_nll", "DiscreteNLL", "dequantized_model",
    "CNF", "CNFTransform", "plot_warp",
    "FlowConfig", "FlowRun", "coupling_flow",
    "FlowVAE", "compare_vae_guides", "train_flow_vae", "elbo_gain",
]
