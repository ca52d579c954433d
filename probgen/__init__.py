"""probgen: deep generative models as Pyro programs built on Bayesian-network graphs."""

__version__ = "0.1.0"
