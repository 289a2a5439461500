"""A silent, direct HiGHS call for an LP given as sparse matrices.

The ``lp`` algorithm hands HiGHS its column-wise constraint matrix as it is (``scipy.sparse``
CSC arrays go straight into a ``HighsLp``): no modelling layer copies or canonicalises it, so
building costs what numpy costs and memory stays linear in the number of non-zeros.

HiGHS writes a banner to the process's standard output (file descriptor 1, below Python's
``sys.stdout``) the first time a solver object is created in a process, whatever its options.
:func:`new_highs` creates that first object with descriptor 1 pointed at ``/dev/null`` for the
moment it takes, so ``optivgi plan > out.json`` stays valid JSON and no banner reaches an
operator's console; every object it returns has ``output_flag`` and ``log_to_console`` off.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

import attrs
import highspy
import numpy as np
import scipy.sparse as sp

from optivgi.algorithms.base import FloatArray

__all__ = ["LPResult", "new_highs", "solve_lp"]

_LOCK = threading.Lock()
_banner_swallowed = False


def _flush_c_stdout() -> None:
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # no C library to flush (not Linux/glibc): nothing buffered there
        pass


def new_highs() -> highspy.Highs:
    """A HiGHS solver object that prints nothing (see the module doc for the first one)."""
    global _banner_swallowed
    with _LOCK:
        if _banner_swallowed:
            solver = highspy.Highs()  # type: ignore[no-untyped-call]
        else:
            sys.stdout.flush()
            saved = os.dup(1)
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, 1)
                solver = highspy.Highs()  # type: ignore[no-untyped-call]
                _flush_c_stdout()
            finally:
                os.dup2(saved, 1)
                os.close(saved)
                os.close(null)
            _banner_swallowed = True
    solver.setOptionValue("output_flag", False)
    solver.setOptionValue("log_to_console", False)
    return solver


@attrs.frozen
class LPResult:
    """What :func:`solve_lp` found.

    Attributes:
        status: HiGHS model status as text (``"Optimal"``, ``"Time limit reached"``, ...).
        optimal: True when HiGHS proved the solution optimal.
        x: the column values HiGHS ended with (optimal or not), or None when it has none.
        seconds: HiGHS's own run time [s].
    """

    status: str
    optimal: bool
    x: FloatArray | None
    seconds: float


def solve_lp(
    cost: FloatArray,
    a_csc: sp.csc_matrix,
    row_upper: FloatArray,
    col_lower: FloatArray,
    col_upper: FloatArray,
    *,
    maximize: bool,
    options: Mapping[str, Any],
) -> LPResult:
    """Optimise ``cost @ x`` subject to ``a_csc @ x <= row_upper`` and column bounds.

    ``options`` are HiGHS options (``time_limit`` included). Never prints. HiGHS errors come
    back as a non-optimal :class:`LPResult` (``x`` None), never as an exception.
    """
    n_rows, n_cols = a_csc.shape
    lp = highspy.HighsLp()
    lp.num_col_ = n_cols
    lp.num_row_ = n_rows
    lp.col_cost_ = np.ascontiguousarray(cost, dtype=np.float64)
    lp.col_lower_ = np.ascontiguousarray(col_lower, dtype=np.float64)
    lp.col_upper_ = np.ascontiguousarray(col_upper, dtype=np.float64)
    lp.row_lower_ = np.full(n_rows, -highspy.kHighsInf)
    lp.row_upper_ = np.ascontiguousarray(row_upper, dtype=np.float64)
    lp.sense_ = highspy.ObjSense.kMaximize if maximize else highspy.ObjSense.kMinimize
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.num_col_ = n_cols
    lp.a_matrix_.num_row_ = n_rows
    lp.a_matrix_.start_ = a_csc.indptr.astype(np.int32)
    lp.a_matrix_.index_ = a_csc.indices.astype(np.int32)
    lp.a_matrix_.value_ = a_csc.data.astype(np.float64)
    solver = new_highs()
    for key, value in options.items():
        solver.setOptionValue(key, value)
    t0 = time.perf_counter()
    if solver.passModel(lp) == highspy.HighsStatus.kError:
        return LPResult("model rejected", False, None, 0.0)
    del lp
    solver.run()
    seconds = time.perf_counter() - t0
    status = solver.getModelStatus()
    text = solver.modelStatusToString(status)
    info = solver.getInfo()
    x = None
    if info.primal_solution_status != 0:  # kSolutionStatusNone: HiGHS has no values at all
        x = np.asarray(solver.getSolution().col_value, dtype=np.float64)
    return LPResult(text, status == highspy.HighsModelStatus.kOptimal, x, seconds)
