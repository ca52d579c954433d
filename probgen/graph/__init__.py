"""probgen.graph."""
