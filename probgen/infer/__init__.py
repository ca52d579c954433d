"""probgen.infer."""
