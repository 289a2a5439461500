"""Scheduling algorithms: the interface, the shared validator and the built-in algorithms."""

from optivgi.algorithms.base import Algorithm, Problem
from optivgi.algorithms.validate import validate_schedule

__all__ = ["Algorithm", "Problem", "validate_schedule"]
