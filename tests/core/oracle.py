"""Independent oracles for the solver: a pipeline evaluator and brute force written for the tests.

Nothing here uses perseus.pipeline or perseus.solver: the dependencies of a pipeline are
derived from each stage's instruction order (as a plan lists it) and the data flow between
virtual stages, the longest path is a plain topological sweep over that graph (graphlib), and
the profile is the test's own table of options. The tests compare the project's solver and
evaluator with these.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from graphlib import TopologicalSorter

import numpy as np
import numpy.typing as npt

from perseus.plan import FrequencyPlan
from perseus.profile import PipelineProfile

Node = tuple[int, str, int, int]
"""(stage, kind, microbatch, chunk) of one instruction."""
Option = tuple[int, float, float]
"""(frequency MHz, time s, energy J) of one profiled point."""


@dataclass(frozen=True)
class ToyProfile:
    """Options of every (virtual stage, kind): all profiled points, dominated ones included."""

    options: dict[tuple[int, str], list[Option]]
    blocking_power: float

    @classmethod
    def of(cls, profile: PipelineProfile, num_stages: int, freq_step: int = 1) -> ToyProfile:
        """The first ``num_stages`` stages of a real profile, every ``freq_step``-th clock of each."""
        options = {
            (p.stage, p.instruction): [(m.frequency, m.time, m.energy) for m in p.measurements][::freq_step]
            for p in profile
            if p.stage < num_stages
        }
        return cls(options, profile.blocking_power)

    def csv(self) -> str:
        lines = ["stage,instruction,frequency,time,energy"]
        for (stage, kind), opts in sorted(self.options.items()):
            lines += [f"{stage},{kind},{f},{t!r},{e!r}" for f, t, e in opts]
        return "\n".join(lines) + "\n"


def random_profile(
    rng: np.random.Generator, virtual_stages: int, options: int, blocking_power: float = 60.0
) -> ToyProfile:
    """Lower clock: slower and usually cheaper; one option in four is a noisy, dominated point.

    Options are 10-40% apart in time, far coarser than real 15 MHz steps, so a wrong choice shows.
    """
    table: dict[tuple[int, str], list[Option]] = {}
    for stage in range(virtual_stages):
        for kind, base in (("forward", 1.0), ("backward", 2.0)):
            t0 = base * rng.uniform(0.6, 1.4)
            points: list[Option] = []
            slow = 1.0
            for k in range(options):
                power = 300 * rng.uniform(0.85, 1.15) / slow**2
                if k and rng.uniform() < 0.25:  # measured slower *and* dearer than the previous clock
                    power = 1.3 * points[-1][2] / (t0 * slow)
                points.append((1400 - 150 * k, t0 * slow, power * t0 * slow))
                slow *= 1 + rng.uniform(0.1, 0.4)
            table[(stage, kind)] = points
    return ToyProfile(table, blocking_power)


class ToyPipeline:
    """The dependency graph of one iteration, built from per-stage instruction orders.

    Edges: consecutive instructions of a stage; the forward of a microbatch on virtual stage
    ``v`` after its forward on ``v - 1``; its backward on ``v`` after its backward on ``v + 1``,
    or after its own forward on the last virtual stage.
    """

    def __init__(self, orders: list[list[tuple[str, int, int]]]) -> None:
        self.num_stages = len(orders)
        self.num_chunks = 1 + max(chunk for order in orders for _, _, chunk in order)
        last = self.num_stages * self.num_chunks - 1
        preds: dict[Node, list[Node]] = {}
        for stage, order in enumerate(orders):
            previous: Node | None = None
            for kind, mb, chunk in order:
                node = (stage, kind, mb, chunk)
                preds[node] = [] if previous is None else [previous]
                previous = node
        for node in preds:
            stage, kind, mb, chunk = node
            v = chunk * self.num_stages + stage
            if kind == "forward" and v > 0:
                preds[node].append(self._at(v - 1, "forward", mb))
            elif kind == "backward":
                preds[node].append(self._at(v + 1, "backward", mb) if v < last else (stage, "forward", mb, chunk))
        self.preds = preds
        self.order: list[Node] = list(TopologicalSorter(preds).static_order())
        self.index = {node: k for k, node in enumerate(self.order)}

    def _at(self, virtual: int, kind: str, mb: int) -> Node:
        return (virtual % self.num_stages, kind, mb, virtual // self.num_stages)

    @classmethod
    def of_plan(cls, plan: FrequencyPlan) -> ToyPipeline:
        return cls([[(p.instruction, p.microbatch, p.chunk) for p in stage] for stage in plan.stages])

    def virtual_stage(self, node: Node) -> int:
        return node[3] * self.num_stages + node[0]

    def iteration_time(self, durations: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Longest path for each row of ``durations`` (``(K, N)``, columns in ``self.order``)."""
        finish = np.zeros_like(durations)
        for k, node in enumerate(self.order):
            start = np.zeros(durations.shape[0])
            for p in self.preds[node]:
                start = np.maximum(start, finish[:, self.index[p]])
            finish[:, k] = start + durations[:, k]
        return np.asarray(finish.max(axis=1))

    def evaluate(
        self, profile: ToyProfile, times: npt.NDArray[np.float64], energies: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(iteration time, energy) per row: instruction energy plus blocking power on every idle GPU-second."""
        t = self.iteration_time(times)
        idle = self.num_stages * t - times.sum(axis=1)
        return t, energies.sum(axis=1) + profile.blocking_power * idle

    def node_options(self, profile: ToyProfile) -> list[list[Option]]:
        return [profile.options[(self.virtual_stage(node), node[1])] for node in self.order]

    def chosen_options(self, profile: ToyProfile, frequency: dict[Node, int]) -> list[Option]:
        """Each node's profiled point at its frequency, in ``self.order``."""
        chosen = []
        for node, opts in zip(self.order, self.node_options(profile), strict=True):
            (point,) = [o for o in opts if o[0] == frequency[node]]
            chosen.append(point)
        return chosen

    def evaluate_plan(self, profile: ToyProfile, plan: FrequencyPlan) -> tuple[float, float]:
        """The plan's (iteration time, energy), looked up in the toy profile's own table."""
        chosen = self.chosen_options(profile, plan_frequencies(plan))
        t, e = self.evaluate(profile, np.array([[o[1] for o in chosen]]), np.array([[o[2] for o in chosen]]))
        return float(t[0]), float(e[0])

    def cheaper_single_slowdowns(self, profile: ToyProfile, plan: FrequencyPlan) -> list[tuple[Node, int, float]]:
        """Every (node, slower frequency, energy saved) that keeps the plan's iteration time and saves energy.

        A plan after the solver's reclaim pass has none: reclaiming slack means slowing each
        instruction to the cheapest option that still fits.
        """
        chosen = self.chosen_options(profile, plan_frequencies(plan))
        times, energies = np.array([o[1] for o in chosen]), np.array([o[2] for o in chosen])
        moves: list[tuple[int, Option]] = [
            (k, o) for k, opts in enumerate(self.node_options(profile)) for o in opts if o[1] > chosen[k][1]
        ]
        if not moves:
            return []
        rows_t = np.repeat(times[None], len(moves), axis=0)
        rows_e = np.repeat(energies[None], len(moves), axis=0)
        for row, (k, (_, t, e)) in enumerate(moves):
            rows_t[row, k], rows_e[row, k] = t, e
        base = float(self.evaluate(profile, times[None], energies[None])[1][0])
        new_t, new_e = self.evaluate(profile, rows_t, rows_e)
        fits = (new_t <= plan.iteration_time * (1 + 1e-12)) & (new_e < base * (1 - 1e-12))
        return [(self.order[k], o[0], base - float(new_e[row])) for row, (k, o) in enumerate(moves) if fits[row]]

    def brute_force(self, profile: ToyProfile) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(time, energy) of every combination of every node's options, dominated ones included."""
        opts = self.node_options(profile)
        combos = np.array(list(itertools.product(*[range(len(o)) for o in opts])), dtype=np.int64)
        times = np.stack([np.array([o[1] for o in node])[combos[:, k]] for k, node in enumerate(opts)], axis=1)
        energies = np.stack([np.array([o[2] for o in node])[combos[:, k]] for k, node in enumerate(opts)], axis=1)
        return self.evaluate(profile, times, energies)


def plan_frequencies(plan: FrequencyPlan) -> dict[Node, int]:
    return {
        (stage, p.instruction, p.microbatch, p.chunk): p.frequency
        for stage, planned in enumerate(plan.stages)
        for p in planned
    }


def optimal_energy_within(points: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]], deadline: float) -> float:
    """The least energy of any brute-force point no slower than ``deadline``."""
    times, energies = points
    return float(energies[times <= deadline * (1 + 1e-12)].min())
