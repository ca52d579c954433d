"""Exceptions raised by probgen. Every one is a ``ValueError`` so callers can catch broadly."""

from __future__ import annotations

__all__ = ["ProbgenError", "GraphError", "CPDError", "EvidenceError", "QueryTooLargeError"]


class ProbgenError(ValueError):
    """Base class of probgen's input errors."""


class GraphError(ProbgenError):
    """The graph is malformed: a cycle, an unknown node, parents that don't match."""


class CPDError(ProbgenError):
    """A conditional distribution is malformed: bad shape, columns not summing to one."""


class EvidenceError(ProbgenError):
    """A query or evidence is malformed: unknown variable or state, impossible evidence."""


class QueryTooLargeError(ProbgenError):
    """An exact query would need more memory than allowed."""
