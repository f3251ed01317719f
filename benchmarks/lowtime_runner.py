"""Run lowtime 0.3.0 (the Perseus paper's solver) on a 1F1B pipeline, in a killable subprocess.

The setup mirrors the paper's driver (lowtime's ``examples/perseus.py``):

* Every (stage, instruction) gets one ``ExecutionOption`` per profiled frequency (cost = raw
  energy); ``CandidateExecutionOptions`` keeps the Pareto options, quantises time to
  ``unit_time`` (1 ms in the paper) and dedups equal quantised times.
* Cost becomes *effective* energy, ``energy - P_block * quant_time * unit_time``, and an
  ``ExponentialModel`` is fitted to it (default grid search of initial guesses).
* The DAG is ``Synchronous1F1B`` per stage, chained in execution order, plus forward
  (stage s -> s+1) and backward (stage s+1 -> s) dependencies of the same microbatch, with a
  dummy source and sink. The paper found these edges with an all-pairs scan; we add them
  directly (same edges, less setup time charged to lowtime).
* ``PhillipsDessouky.run()`` is iterated to the end; after every iteration the plan is the
  ``assigned_knob`` of every instruction, i.e. the slowest profiled frequency whose quantised
  time fits the instruction's planned duration (exactly what the paper writes out).

The child process streams one message per iteration over a pipe, so the parent can enforce a
wall-clock timeout and still keep every plan produced before it.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import numpy.typing as npt

#: One profiled point: (stage, kind, frequency MHz, time s, energy J).
ProfileRow = tuple[int, str, int, float, float]
#: An instruction of the pipeline: (stage, kind, microbatch).
InstructionKey = tuple[int, str, int]


@dataclass(frozen=True)
class LowtimeConfig:
    """What to solve: the pipeline shape, the profile and the paper's solver settings."""

    rows: tuple[ProfileRow, ...]
    num_stages: int
    num_microbatches: int
    blocking_power: float
    unit_time: float = 0.001


@dataclass(frozen=True)
class LowtimeIteration:
    """The plan lowtime holds after one Phillips-Dessouky iteration."""

    iteration: int
    quant_time: int
    cost: float
    """lowtime's own (fitted-model) effective energy of the plan."""
    frequencies: npt.NDArray[np.int32]
    """Chosen frequency of every instruction, in ``LowtimeRun.keys`` order."""


@dataclass
class LowtimeRun:
    """Everything one lowtime run produced, complete or cut off by the timeout."""

    keys: list[InstructionKey] = field(default_factory=list)
    """Instructions in stage-major execution order (the order of every frequency array)."""
    iterations: list[LowtimeIteration] = field(default_factory=list)
    expected_iterations: int | None = None
    """lowtime's own estimate (max - min quantised time + 1), logged before the first iteration."""
    fit_seconds: float = 0.0
    dag_seconds: float = 0.0
    pd_seconds: float = 0.0
    """Time spent inside the solver's iterations (not our per-iteration snapshot)."""
    total_seconds: float = 0.0
    """Child wall time from setup to the end, snapshots and pipe transfers included."""
    end_to_end_seconds: float = 0.0
    """Parent wall time from starting the process to its last plan received (or the timeout):
    interpreter start, imports, fitting, DAG, iterations and every plan handed back."""
    timed_out: bool = False
    error: str | None = None

    @property
    def solver_seconds(self) -> float:
        """lowtime's own cost: fitting, DAG construction and PD iterations."""
        return self.fit_seconds + self.dag_seconds + self.pd_seconds


def run_lowtime(config: LowtimeConfig, timeout: float) -> LowtimeRun:
    """Solve ``config`` with lowtime in a subprocess; kill it after ``timeout`` seconds."""
    ctx = mp.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(config, sender), daemon=True)
    started = time.perf_counter()
    proc.start()
    sender.close()  # so EOF reaches us if the child dies
    run = LowtimeRun()
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not receiver.poll(remaining):
                run.timed_out = True
                break
            try:
                message = receiver.recv()
            except EOFError:
                run.error = run.error or f"lowtime process exited with code {proc.exitcode}"
                break
            if _apply_message(run, message):
                break
    finally:
        run.end_to_end_seconds = time.perf_counter() - started
        if proc.is_alive():
            proc.kill()
        proc.join()
        receiver.close()
    return run


def _apply_message(run: LowtimeRun, message: tuple[Any, ...]) -> bool:
    """Record one child message into ``run``; True when the run is over."""
    kind = message[0]
    if kind == "setup":
        _, run.keys, run.fit_seconds, run.dag_seconds = message
    elif kind == "expected":
        run.expected_iterations = message[1]
    elif kind == "iteration":
        _, iteration, quant_time, cost, frequencies, pd_seconds = message
        run.iterations.append(LowtimeIteration(iteration, quant_time, cost, frequencies))
        run.pd_seconds = pd_seconds
    elif kind == "done":
        _, run.pd_seconds, run.total_seconds = message
        return True
    elif kind == "error":
        run.error = message[1]
        return True
    return False


# ---------------------------------------------------------------- child process


def _child_main(config: LowtimeConfig, conn: Connection) -> None:
    """Subprocess entry point: solve and stream results; report any exception as text."""
    try:
        _solve(config, conn)
    except Exception:
        conn.send(("error", traceback.format_exc(limit=8)))
    finally:
        conn.close()


def _solve(config: LowtimeConfig, conn: Connection) -> None:
    from lowtime.solver import PhillipsDessouky

    started = time.perf_counter()
    specs = _operation_specs(config)
    fitted = time.perf_counter()
    dag, instructions = _build_dag(config, specs)
    built = time.perf_counter()
    keys = [_key(inst) for inst in instructions]
    conn.send(("setup", keys, fitted - started, built - fitted))

    expected = _ExpectedIterations(logging.getLogger("lowtime.solver"))
    runner = PhillipsDessouky(dag).run()
    pd_seconds = 0.0
    for step in itertools.count():
        tick = time.perf_counter()
        result = next(runner, None)
        pd_seconds += time.perf_counter() - tick
        if step == 0:  # the estimate is logged before the first iteration
            conn.send(("expected", expected.value))
        if result is None:
            break
        frequencies = np.fromiter((inst.assigned_knob for inst in instructions), dtype=np.int32)
        conn.send(("iteration", result.iteration, result.quant_time, result.cost, frequencies, pd_seconds))
    conn.send(("done", pd_seconds, time.perf_counter() - started))


class _ExpectedIterations(logging.Handler):
    """Captures lowtime's 'Expected number of PD iterations' estimate, then stops listening.

    lowtime's solver logs several INFO lines per iteration; turning INFO off again as soon as
    the estimate arrives keeps that logging out of the measured iterations.
    """

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logging.INFO)
        self.value: int | None = None
        self.logger = logger
        logger.addHandler(self)
        logger.setLevel(logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("Expected number of PD iterations"):
            self.value = int(record.getMessage().rsplit(":", 1)[1])
            self.logger.setLevel(logging.WARNING)


def _operation_specs(config: LowtimeConfig) -> dict[tuple[int, str], Any]:
    """One fitted ``OperationSpec`` per (stage, kind), as the paper builds them."""
    from lowtime.cost_model import ExponentialModel
    from lowtime.operation import CandidateExecutionOptions, ExecutionOption, OperationSpec

    grouped: dict[tuple[int, str], list[Any]] = {}
    for stage, kind, frequency, seconds, energy in config.rows:
        option = ExecutionOption[int](real_time=seconds, unit_time=config.unit_time, cost=energy, knob=frequency)
        grouped.setdefault((stage, kind), []).append(option)
    specs = {}
    for key, options in sorted(grouped.items()):
        candidates = CandidateExecutionOptions[int](options=options)
        for option in candidates.options:  # effective energy, on the quantised time
            option.cost -= config.blocking_power * option.quant_time * option.unit_time
        specs[key] = OperationSpec[int](options=candidates, cost_model=ExponentialModel(candidates))
    return specs


def _build_dag(config: LowtimeConfig, specs: dict[tuple[int, str], Any]) -> tuple[Any, list[Any]]:
    """The paper's activity-on-node 1F1B DAG; returns it and its instructions, stage-major."""
    import networkx as nx
    from lowtime.graph_utils import add_sink_node, add_source_node
    from lowtime.perseus.instruction import Backward, Forward
    from lowtime.perseus.schedule import Synchronous1F1B

    dag = nx.DiGraph()
    node_of: dict[InstructionKey, int] = {}
    instructions = []
    next_id = 2  # 0 and 1 are the dummy source and sink
    for stage in range(config.num_stages):
        spec_map = {Forward: specs[(stage, "forward")], Backward: specs[(stage, "backward")]}
        previous = None
        for inst in Synchronous1F1B(config.num_stages, config.num_microbatches, stage, spec_map):
            dag.add_node(next_id, op=inst)
            node_of[_key(inst)] = next_id
            instructions.append(inst)
            if previous is not None:
                dag.add_edge(previous, next_id)
            previous, next_id = next_id, next_id + 1
    for (stage, kind, microbatch), node in node_of.items():
        if kind == "forward" and stage + 1 < config.num_stages:
            dag.add_edge(node, node_of[(stage + 1, "forward", microbatch)])
        if kind == "backward" and stage > 0:
            dag.add_edge(node, node_of[(stage - 1, "backward", microbatch)])
    add_source_node(dag, 0)
    add_sink_node(dag, 1)
    dag.graph["source_node"] = 0
    dag.graph["sink_node"] = 1
    return dag, instructions


def _key(inst: Any) -> InstructionKey:
    from lowtime.perseus.instruction import Forward

    kind = "forward" if isinstance(inst, Forward) else "backward"
    return (inst.stage_id, kind, inst.micro_batch_id)
