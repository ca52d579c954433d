"""probgen.nn."""
