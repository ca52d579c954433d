"""Energy-based models: one unnormalised factor ``exp(-E(x))`` in a Pyro program, trained by
score matching (exact, sliced, denoising, NCSN), contrastive divergence or NCE, sampled by
Langevin dynamics, guided towards a label by a noisy classifier or classifier-free
(`guidance`; see [`probgen.models.ebm.train`][probgen.models.ebm.train])."""

from probgen.models.ebm.contrastive import NCE, ContrastiveDivergence
from probgen.models.ebm.guidance import (
    LabelledNCSNLoss,
    NoisyClassifier,
    NoisyLabelLoss,
    classifier_free_score,
    classifier_guided_score,
)
from probgen.models.ebm.nets import EnergyConv, EnergyMLP, NoiseScoreNet, QuadraticEnergy
from probgen.models.ebm.program import EnergyProgram, energy_of
from probgen.models.ebm.quadrature import log_normaliser
from probgen.models.ebm.score_matching import (
    DenoisingScoreMatching,
    NCSNLoss,
    ScoreMatching,
    SlicedScoreMatching,
)

__all__ = ["EnergyProgram", "energy_of", "EnergyMLP", "EnergyConv", "QuadraticEnergy",
           "NoiseScoreNet", "ScoreMatching", "SlicedScoreMatching", "DenoisingScoreMatching",
           "NCSNLoss", "ContrastiveDivergence", "NCE", "log_normaliser", "NoisyClassifier",
           "NoisyLabelLoss", "LabelledNCSNLoss", "classifier_guided_score",
           "classifier_free_score"]
