"""probgen.program."""
