"""Layer 0: sample-quality metrics and pictures."""

from probgen.metrics.distances import energy_distance, mmd
from probgen.metrics.frechet import digits_features, digits_frechet_distance, frechet_distance
from probgen.metrics.grids import make_grid, save_grid, save_samples, save_scatter

__all__ = [
    "mmd", "energy_distance", "frechet_distance", "digits_frechet_distance", "digits_features",
    "make_grid", "save_grid", "save_samples", "save_scatter",
]
