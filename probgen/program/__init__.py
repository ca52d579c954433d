"""Layer 2: graph <-> Pyro program (compile, trace back, conditioning and intervention)."""

from probgen.program.compile import Program, encode_column
from probgen.program.handlers import condition, do
from probgen.program.trace import graph_of

__all__ = ["Program", "encode_column", "condition", "do", "graph_of"]
