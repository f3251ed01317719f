"""The C entry point's argument table: which arrays the compiled step loop takes, in what order.

Shared by :mod:`perseus.solver.native_build` (which compiles the entry, and imports numba) and
:mod:`perseus.solver.native` (which calls it, and must not), so both read the same list.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

ARRAYS: tuple[tuple[str, type[np.generic], int], ...] = (
    ("predecessors", np.int64, 2),
    ("successors", np.int64, 2),
    ("edges", np.int64, 2),
    ("node_class", np.int64, 1),
    ("class_time", np.float64, 2),
    ("class_energy", np.float64, 2),
    ("class_cost", np.float64, 2),
    ("class_count", np.int64, 1),
    ("next_option", np.int64, 2),
    ("rate_table", np.float64, 2),
    ("out_first", np.int64, 1),
    ("out_edges", np.int64, 1),
    ("in_first", np.int64, 1),
    ("in_edges", np.int64, 1),
    ("first", np.int32, 1),
    ("head", np.int32, 1),
    ("tail", np.int32, 1),
    ("partner", np.int32, 1),
    ("arc", np.int32, 1),
    ("slot", np.int32, 1),
    ("flow", np.float64, 1),
    ("choice", np.int64, 1),
    ("finish", np.float64, 1),
    ("latest", np.float64, 1),
    ("candidate_time", np.float64, 1),
    ("candidate_energy", np.float64, 1),
    ("candidate_choice", np.int16, 2),
    ("real", np.float64, 1),
    ("counts", np.int64, 1),
)
"""Name, element type and dimensions of every array, in the order the entry unpacks them."""
ENTRY_ARGUMENT_SLOTS = 3 * len(ARRAYS)
"""Per array: its address, then its shape (rows, and columns or 0)."""

# Slots of the ``real`` state array (floats carried between calls).
RESOLUTION, DEADLINE, PREVIOUS_MAKESPAN, BLOCKING_POWER, LAST_MAKESPAN = range(5)
NUM_REALS = 5
# Slots of the ``counts`` state array (integers carried between calls).
ITERATIONS, CAP, STATUS, HAVE_FINISH, HAVE_LATEST, NUM_CANDIDATES, NUM_STAGES, STEP_BUDGET, HAVE_PREVIOUS = range(9)
NUM_COUNTS = 9
# ``counts[STATUS]`` after a call.
RUNNING, DONE, CAPPED, CANDIDATES_FULL = range(4)
"""Step budget used up (call again); the fastest plan reached; the step cap reached; the candidate
buffer is full (grow it, call again). A call leaves the state between two steps in every case."""


def argument_table(arrays: Mapping[str, npt.NDArray[np.generic]]) -> npt.NDArray[np.int64]:
    """The table the entry reads: each array's address and shape, checked against :data:`ARRAYS`
    (a wrong type or a strided view would be read as garbage by the compiled code)."""
    table = np.zeros(ENTRY_ARGUMENT_SLOTS, dtype=np.int64)
    for k, (name, dtype, ndim) in enumerate(ARRAYS):
        array = arrays[name]
        if array.dtype != dtype or array.ndim != ndim or not array.flags.c_contiguous:
            raise TypeError(f"{name}: expected a C-contiguous {ndim}-d {np.dtype(dtype)} array, got {array.dtype} {array.shape}")
        if ndim == 2 and (name == "edges" and array.shape[1] != 2):
            raise TypeError(f"{name}: expected 2 columns, got {array.shape}")
        table[3 * k] = array.ctypes.data
        table[3 * k + 1 : 3 * k + 1 + ndim] = array.shape
    return table
