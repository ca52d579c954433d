"""Layer 4: the model families, one per file (thin constructors over the shared engine)."""

from probgen.models.arm import ARM, ARMDistribution, build_net, chain_graph, load_arm_run, train_arm
from probgen.models.cnf import CNF, CNFTransform
from probgen.models.dequantize import (
    DiscreteNLL,
    UniformDequantization,
    VariationalDequantization,
    dequantized_model,
    discrete_nll,
    log_likelihood_bound,
)
from probgen.models.flow_plots import plot_density_2d, plot_samples_grid, plot_warp
from probgen.models.flow_train import (
    DATA_NAMES,
    FlowRun,
    coupling_flow,
    evaluate_flow,
    load_flow_run,
    train_flow,
)
from probgen.models.flow_vae import FlowVAE, compare_vae_guides, elbo_gain, train_flow_vae
from probgen.models.flows import (
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
from probgen.models.gpt import GPT, IGNORE_INDEX, GPTConfig
from probgen.models.gpt_pretrained import load_gpt2, save_gpt2
from probgen.models.gpt_train import GPTRun, generate_text, load_gpt_run, train_gpt
from probgen.models.instruct import (
    InstructExample,
    finetune,
    format_prompt,
    respond,
    toy_instructions,
)
from probgen.models.priors import MixturePrior, StandardPrior, VampPrior
from probgen.models.vae import VAE, VAERun, evaluate_vae, load_vae_run, refine_guide, train_vae
from probgen.models.vae_nets import Decoder, Encoder
from probgen.models.vq_prior import (
    fit_code_prior,
    nll_bound,
    sample_codes,
    sample_with_prior,
    train_vqvae_with_prior,
)
from probgen.models.vqvae import VQVAE, VectorQuantizer

__all__ = [
    "GPT", "GPTConfig", "IGNORE_INDEX", "load_gpt2", "save_gpt2",
    "train_gpt", "load_gpt_run", "generate_text", "GPTRun",
    "InstructExample", "format_prompt", "finetune", "respond", "toy_instructions",
    "Flow", "build_flow", "realnvp", "maf", "iaf", "nsf", "glow", "check_invertible",
    "flow_model", "UniformDequantization", "VariationalDequantization",
    "log_likelihood_bound", "discrete_nll", "DiscreteNLL", "dequantized_model",
    "CNF", "CNFTransform", "plot_density_2d", "plot_warp", "plot_samples_grid",
    "train_flow", "load_flow_run", "evaluate_flow", "FlowRun", "coupling_flow", "DATA_NAMES",
    "FlowVAE", "compare_vae_guides", "train_flow_vae", "elbo_gain",
    "ARM", "ARMDistribution", "chain_graph", "build_net", "train_arm", "load_arm_run",
    "VAE", "VAERun", "train_vae", "load_vae_run", "evaluate_vae", "refine_guide",
    "StandardPrior", "MixturePrior", "VampPrior", "Encoder", "Decoder", "VQVAE", "VectorQuantizer",
    "fit_code_prior", "sample_codes", "sample_with_prior", "nll_bound", "train_vqvae_with_prior",
]
