"""Compiling the solver's step loop to machine code, once per machine: the only place numba runs.

:func:`build` wraps :func:`perseus.solver.sweep.run_steps` in a C entry point (numba's
``cfunc``), takes the optimised LLVM IR numba produced for it and everything it calls, and
has llvmlite emit it as an object file for this CPU. :mod:`perseus.solver.native` stores that
object and, in every later process, loads it with llvmlite alone: no numba import (0.3 s), no
numba CPU target (0.3 s), no cache index to read per function.

Every function the entry calls is compiled here from source (none uses numba's own cache), so
LLVM sees and inlines the whole loop: built around cached callees the object was 11% larger and
the 16 x 256 solve 30% slower.

The entry takes one argument, a table of ``(address, rows, columns)`` per array in
:data:`ARRAYS` order, so the C signature does not change when the loop gains an array.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import llvmlite.binding as llvm
from numba import carray as _carray
from numba import cfunc, types
from numba.core.typing.templates import Signature
from numba.extending import intrinsic

from perseus.solver import sweep
from perseus.solver.native_abi import ARRAYS, ENTRY_ARGUMENT_SLOTS


def _address_as(dtype: types.Type) -> Callable[..., object]:
    """A compiled cast from an integer address to a pointer to ``dtype`` (LLVM ``inttoptr``)."""

    @intrinsic
    def address_as(typingctx: object, address: types.Type) -> tuple[Signature, Callable[..., object]]:
        signature = types.CPointer(dtype)(types.int64)

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

        return signature, codegen

    return address_as


_f64, _i64, _i32, _i16 = (_address_as(t) for t in (types.float64, types.int64, types.int32, types.int16))
carray: Any = _carray  # numba's compiled view of a pointer (its stubs only know ctypes pointers)


def _solve_steps(table: Any) -> int:  # pragma: no cover - compiled
    """C entry: unpack the array table and run :func:`sweep.run_steps`; returns 0."""
    d = carray(table, (ENTRY_ARGUMENT_SLOTS,))
    predecessors = carray(_i64(d[0]), (d[1], d[2]))
    successors = carray(_i64(d[3]), (d[4], d[5]))
    edges = carray(_i64(d[6]), (d[7], d[8]))
    node_class = carray(_i64(d[9]), (d[10],))
    class_time = carray(_f64(d[12]), (d[13], d[14]))
    class_energy = carray(_f64(d[15]), (d[16], d[17]))
    class_cost = carray(_f64(d[18]), (d[19], d[20]))
    class_count = carray(_i64(d[21]), (d[22],))
    next_option = carray(_i64(d[24]), (d[25], d[26]))
    rate_table = carray(_f64(d[27]), (d[28], d[29]))
    layout = (
        carray(_i64(d[30]), (d[31],)),  # out_first
        carray(_i64(d[33]), (d[34],)),  # out_edges
        carray(_i64(d[36]), (d[37],)),  # in_first
        carray(_i64(d[39]), (d[40],)),  # in_edges
        carray(_i32(d[42]), (d[43],)),  # first
        carray(_i32(d[45]), (d[46],)),  # head
        carray(_i32(d[48]), (d[49],)),  # tail
        carray(_i32(d[51]), (d[52],)),  # partner
        carray(_i32(d[54]), (d[55],)),  # arc
        carray(_i32(d[57]), (d[58],)),  # slot
    )
    flow = carray(_f64(d[60]), (d[61],))
    choice = carray(_i64(d[63]), (d[64],))
    finish = carray(_f64(d[66]), (d[67],))
    latest = carray(_f64(d[69]), (d[70],))
    candidate_time = carray(_f64(d[72]), (d[73],))
    candidate_energy = carray(_f64(d[75]), (d[76],))
    candidate_choice = carray(_i16(d[78]), (d[79], d[80]))
    real = carray(_f64(d[81]), (d[82],))
    counts = carray(_i64(d[84]), (d[85],))
    sweep.run_steps(
        predecessors, successors, edges, node_class, class_time, class_energy, class_cost, class_count,
        next_option, rate_table, layout, flow, choice, finish, latest,
        candidate_time, candidate_energy, candidate_choice, real, counts,
    )  # fmt: skip
    return 0


@dataclass(frozen=True)
class BuiltObject:
    """An object file for this CPU and what loading it needs."""

    code: bytes
    entry_symbol: str
    """The C entry point's symbol in ``code``."""
    externals: tuple[str, ...]
    """Symbols ``code`` calls but does not define: numba's runtime helpers, libc, CPython."""


def build(target_machine: llvm.TargetMachine) -> BuiltObject:
    """Compile the entry point (numba, a few seconds) and emit it as an object for ``target_machine``."""
    assert len(ARRAYS) * 3 == ENTRY_ARGUMENT_SLOTS
    entry = cfunc(types.int64(types.CPointer(types.int64)), error_model="numpy")(_solve_steps)
    module = llvm.parse_assembly(entry.inspect_llvm())
    module.verify()
    externals = tuple(
        sorted(
            {f.name for f in module.functions if f.is_declaration and not f.name.startswith("llvm.")}
            | {g.name for g in module.global_variables if g.is_declaration}
        )
    )
    return BuiltObject(target_machine.emit_object(module), entry.native_name, externals)
