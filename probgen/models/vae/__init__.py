"""Variational autoencoders: the graph z -> x with a neural decoder and the guide x -> z;
priors (standard, mixture, VampPrior), the autoregressive pixel decoder, VQ-VAE and its
learned code prior."""

from probgen.models.vae.nets import Decoder, Encoder
from probgen.models.vae.priors import MixturePrior, StandardPrior, VampPrior
from probgen.models.vae.train import VAEConfig, VAERun, evaluate_vae, refine_guide
from probgen.models.vae.vae import VAE
from probgen.models.vae.vq_prior import (
    fit_code_prior,
    nll_bound,
    sample_codes,
    sample_with_prior,
    train_vqvae_with_prior,
)
from probgen.models.vae.vqvae import VQVAE, VectorQuantizer

__all__ = [
    "VAE", "VAEConfig", "VAERun", "evaluate_vae", "refine_guide",
    "StandardPrior", "MixturePrior", "VampPrior", "Encoder", "Decoder", "VQVAE", "VectorQuantizer",
    "fit_code_prior", "sample_codes", "sample_with_prior", "nll_bound", "train_vqvae_with_prior",
]
