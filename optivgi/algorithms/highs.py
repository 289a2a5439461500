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
import numpy.typing as npt
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
        rounds: pricing rounds of column generation (0 without it).
    """

    status: str
    optimal: bool
    x: FloatArray | None
    seconds: float
    rounds: int = 0


def _pass_model(solver: highspy.Highs, cost: FloatArray, a_csc: sp.csc_matrix, row_upper: FloatArray,
                col_lower: FloatArray, col_upper: FloatArray, maximize: bool) -> bool:
    n_rows, n_cols = a_csc.shape
    status = solver.passModel(
        n_cols, n_rows, a_csc.nnz, int(highspy.MatrixFormat.kColwise),
        int(highspy.ObjSense.kMaximize if maximize else highspy.ObjSense.kMinimize), 0.0,
        np.ascontiguousarray(cost, dtype=np.float64), np.ascontiguousarray(col_lower, dtype=np.float64),
        np.ascontiguousarray(col_upper, dtype=np.float64), np.full(n_rows, -highspy.kHighsInf),
        np.ascontiguousarray(row_upper, dtype=np.float64), np.asarray(a_csc.indptr, dtype=np.int32),
        np.asarray(a_csc.indices, dtype=np.int32), np.ascontiguousarray(a_csc.data, dtype=np.float64),
        np.zeros(n_cols, dtype=np.int32))
    return bool(status != highspy.HighsStatus.kError)


def solve_lp(
    cost: FloatArray,
    a_csc: sp.csc_matrix,
    row_upper: FloatArray,
    col_lower: FloatArray,
    col_upper: FloatArray,
    *,
    maximize: bool,
    options: Mapping[str, Any],
    start_columns: npt.NDArray[np.bool_] | None = None,
    max_rounds: int = 12,
) -> LPResult:
    """Optimise ``cost @ x`` subject to ``a_csc @ x <= row_upper`` and column bounds.

    ``options`` are HiGHS options (``time_limit`` included). Never prints. HiGHS errors come
    back as a non-optimal :class:`LPResult` (``x`` None), never as an exception.

    With ``start_columns`` (a mask; the columns left out must have ``col_lower == 0``), HiGHS
    first solves the LP restricted to those columns (the others held at 0), then prices every
    column left out with the row duals (reduced cost ``cost_j - a_j . dual``) and adds those that
    would improve the objective, re-solving from the last basis, until none would: the result
    is then optimal for the whole LP, often in a fraction of the time when most columns stay at
    0 (column generation). After ``max_rounds`` rounds every column left is added.
    """
    solver = new_highs()
    for key, value in options.items():
        solver.setOptionValue(key, value)
    t0 = time.perf_counter()
    n_cols = a_csc.shape[1]
    cols = np.arange(n_cols) if start_columns is None else np.flatnonzero(start_columns)
    sub = a_csc if start_columns is None else a_csc[:, cols]
    if not _pass_model(solver, cost[cols], sub, row_upper, col_lower[cols], col_upper[cols], maximize):
        return LPResult("model rejected", False, None, 0.0)
    del sub
    solver.run()
    sign = 1.0 if maximize else -1.0
    rounds = 0
    while start_columns is not None and cols.size < n_cols:
        if solver.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            break
        dual = np.asarray(solver.getSolution().row_dual, dtype=np.float64)
        reduced = sign * (cost - a_csc.T @ dual)
        out = np.ones(n_cols, dtype=bool)
        out[cols] = False
        rounds += 1
        new = np.flatnonzero(out & (reduced > 1e-9)) if rounds < max_rounds else np.flatnonzero(out)
        if new.size == 0:
            break
        add = a_csc[:, new]
        solver.addCols(new.size, cost[new], col_lower[new], col_upper[new], add.nnz,
                       add.indptr[:-1].astype(np.int32), add.indices.astype(np.int32),
                       np.ascontiguousarray(add.data, dtype=np.float64))
        cols = np.concatenate([cols, new])
        solver.run()
    seconds = time.perf_counter() - t0
    status = solver.getModelStatus()
    text = solver.modelStatusToString(status)
    info = solver.getInfo()
    x = None
    if info.primal_solution_status != 0:  # kSolutionStatusNone: HiGHS has no values at all
        x = np.zeros(n_cols)
        x[cols] = np.asarray(solver.getSolution().col_value, dtype=np.float64)
    del solver
    _release_freed_memory()
    return LPResult(text, status == highspy.HighsModelStatus.kOptimal, x, seconds, rounds)


def _release_freed_memory() -> None:
    """Hand the heap HiGHS just freed back to the OS (glibc keeps it otherwise), so a planner
    that solves every minute does not carry the largest solve's memory between cycles."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
