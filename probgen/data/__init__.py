"""probgen.data."""
