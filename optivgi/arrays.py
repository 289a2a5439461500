"""Array type aliases and converters shared by the models and the algorithms."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

__all__ = ["FloatArray", "IntArray", "as_float", "as_ids", "as_int"]

#: A float64 numpy array (powers in kW, limits, prices).
FloatArray = npt.NDArray[np.float64]
#: An int64 numpy array (step indices).
IntArray = npt.NDArray[np.int64]


def as_ids(value: Iterable[str]) -> tuple[str, ...]:
    """Identifiers as a tuple of strings."""
    return tuple(str(v) for v in value)


def as_float(value: object) -> FloatArray:
    """``value`` as a contiguous float64 array."""
    return np.ascontiguousarray(np.asarray(value, dtype=np.float64))


def as_int(value: object) -> IntArray:
    """``value`` as a contiguous int64 array."""
    return np.ascontiguousarray(np.asarray(value, dtype=np.int64))
