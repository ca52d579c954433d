"""Layer 0: data sets, all offline (embedded or generated), and the user's local files."""

from probgen.data.densities import DENSITIES, load_density
from probgen.data.digits import load_digit_labels, load_digits
from probgen.data.local import load_images, load_tensor
from probgen.data.shapes import FACTORS, make_shapes, render_shapes
from probgen.data.text import default_corpus, load_text, sample_batch, split_tokens

__all__ = [
    "load_digits", "load_digit_labels", "load_density", "DENSITIES",
    "make_shapes", "render_shapes", "FACTORS", "load_tensor", "load_images",
    "default_corpus", "load_text", "split_tokens", "sample_batch",
]
