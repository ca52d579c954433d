"""``python -m probgen`` runs the command line (also ``torchrun -m probgen ...``)."""

import sys

from probgen.cli import main

sys.exit(main())
