"""GANs: implicit Pyro programs ``z -> x`` trained by an adversarial objective (DCGAN,
class-conditional GANs, the losses and stabilisers of one objective, mode and memorisation
studies)."""

from probgen.models.gan.gan import GAN, Implicit, implicit_program
from probgen.models.gan.objective import LOSSES, Adversarial
from probgen.models.gan.properties import GRID, RING, mixture_samples, mode_report, nearest_distance

__all__ = ["GAN", "Implicit", "implicit_program", "Adversarial", "LOSSES", "RING", "GRID",
           "mixture_samples", "mode_report", "nearest_distance"]
