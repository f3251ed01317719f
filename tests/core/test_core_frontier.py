"""Frontier properties, checked against the LP bound and the baselines (brute force: test_core_oracles)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from perseus.cli.main import main
from perseus.pipeline.costs import OptionTable
from perseus.pipeline.dag import PipelineDAG
from perseus.pipeline.evaluate import evaluate_plan
from perseus.plan import FrequencyPlan
from perseus.profile import PipelineProfile
from perseus.solver import compute_frontier, kernels, mincut
from perseus.solver.baselines import max_frequency_plan
from perseus.solver.frontier import GraphCutSolver
from perseus.solver.lower_bound import LowerBound
from perseus.solver.mincut import ArcLayout, CutNetwork

from .conftest import A100


def test_frontier_is_monotone_and_exact(a100_profile: PipelineProfile, a100_frontier) -> None:  # type: ignore[no-untyped-def]
    plans = a100_frontier.plans
    assert len(plans) > 20
    for a, b in itertools.pairwise(plans):
        assert a.iteration_time < b.iteration_time
        assert a.energy > b.energy
    for plan in [*plans[::max(1, len(plans) // 10)], plans[-1]]:
        assert evaluate_plan(a100_profile, plan) == pytest.approx((plan.iteration_time, plan.energy), rel=1e-12)


def test_frontier_endpoints(a100_profile: PipelineProfile, a100_frontier) -> None:  # type: ignore[no-untyped-def]
    baseline = max_frequency_plan(a100_profile, "1f1b", 8, 6)
    fastest = a100_frontier.fastest
    # No slowdown at all against running everything at the highest clock, and less energy.
    assert fastest.iteration_time <= baseline.iteration_time * (1 + 1e-12)
    assert fastest.energy < baseline.energy * 0.95
    # The cheapest end is no worse than every instruction at its own least-energy option.
    dag = PipelineDAG.build("1f1b", 8, 6)
    table = OptionTable.build(a100_profile, dag)
    slowest = table.node_count - 1
    t_slow = float(dag.finish_times(table.durations(slowest)).max())
    assert a100_frontier.min_energy.energy <= table.iteration_energy(slowest, t_slow) + 1e-6


def test_lower_bound_holds_and_gap_is_small(a100_profile: PipelineProfile, a100_frontier) -> None:  # type: ignore[no-untyped-def]
    """Every plan within the measured gap of the convex relaxation.

    Measured 2026-11-30 on all 155 plans of the igraph solver: 0.041% to 0.150% above the bound, 0.083%
    on average; on the 150 plans of the numba solver that replaced it: at most 0.166%, 0.082% on average.
    Bounds about 10% above that: 0.185% worst, 0.09% mean. Without the reclaim pass the gaps are 0.37% /
    0.24%; with the forward reclaim sweep only, 0.177% / 0.094% (the mean bound catches both).
    """
    bound = LowerBound(OptionTable.build(a100_profile, PipelineDAG.build("1f1b", 8, 6)))
    gaps = []
    for plan in a100_frontier.plans:
        lb = bound.energy_at(plan.iteration_time)
        assert lb <= plan.energy * (1 + 1e-9), plan.name
        gaps.append(plan.energy / lb - 1)
    assert max(gaps) <= 0.00185, f"worst gap {max(gaps):.4%}"
    assert sum(gaps) / len(gaps) <= 0.0009, f"mean gap {sum(gaps) / len(gaps):.4%}"
    assert bound.energy_at(a100_frontier.fastest.iteration_time * 0.9) == float("inf")


@pytest.mark.parametrize(("schedule", "chunks"), [("gpipe", 1), ("interleaved-1f1b", 2)])
def test_other_schedules(a100_profile: PipelineProfile, schedule: str, chunks: int) -> None:
    frontier = compute_frontier(a100_profile, schedule, 8, 8, chunks)
    baseline = max_frequency_plan(a100_profile, schedule, 8, 8, chunks)
    assert frontier.fastest.iteration_time <= baseline.iteration_time * (1 + 1e-12)
    assert frontier.fastest.energy < baseline.energy
    assert all(a.energy > b.energy for a, b in zip(frontier.plans, frontier.plans[1:], strict=False))
    plan = frontier.plans[len(frontier.plans) // 2]
    assert evaluate_plan(a100_profile, plan) == pytest.approx((plan.iteration_time, plan.energy))


def test_optimize_cli_writes_frontier_and_plans(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["optimize", str(A100), "--stages", "8", "--microbatches", "4", "--out", str(out), "--lower-bound",
                 "--plan-files"])
    assert code == 0
    rows = (out / "frontier.csv").read_text().splitlines()
    assert rows[0] == "plan,iteration_time,energy,lower_bound,gap_percent"
    times = [float(r.split(",")[1]) for r in rows[1:]]
    assert times == sorted(times)
    first = rows[1].split(",")[0]
    plan = FrequencyPlan.load(out / "plans" / f"{first}.json")
    assert plan.schedule == "1f1b" and plan.num_stages == 8 and len(plan.stages[0]) == 2 * 4
    assert set(plan.stages[0][0].to_dict()) == {"instruction", "microbatch", "frequency"}
    assert "optimality gap" in capsys.readouterr().out
    assert main(["plot", "frontier", str(out)]) == 0
    assert (out / "frontier.png").stat().st_size > 1000
    assert main(["plot", "timeline", str(out / "plans" / f"{first}.json"), "--profile", str(A100)]) == 0
    assert (out / "plans" / f"{first}.png").exists()


@pytest.mark.parametrize(
    ("schedule", "stages", "microbatches", "chunks"),
    [("1f1b", 8, 12, 1), ("1f1b", 8, 1, 1), ("gpipe", 8, 6, 1), ("interleaved-1f1b", 8, 16, 2)],
)
def test_scalar_and_vectorised_passes_agree(
    a100_profile: PipelineProfile, schedule: str, stages: int, microbatches: int, chunks: int
) -> None:
    """Narrow DAGs take per-node Python loops, wide ones per-level numpy calls: same answers."""
    dag = PipelineDAG.build(schedule, stages, microbatches, chunks)
    solver = GraphCutSolver(OptionTable.build(a100_profile, dag))
    rng = np.random.default_rng(7)
    for _ in range(5):
        choice = rng.integers(0, 10_000, dag.num_nodes) % solver.table.node_count
        durations = solver.table.durations(choice)
        deadline = float(dag.finish_times(durations).max()) * 1.01
        outputs = []
        for scalar in (True, False):
            dag.__dict__["scalar_passes"] = scalar  # override the cached choice
            finish = dag.finish_times(durations)
            latest = dag.latest_finish_times(durations, deadline)
            reclaimed = solver.reclaim(choice, deadline)
            outputs.append((finish, latest, reclaimed))
        (f1, l1, r1), (f2, l2, r2) = outputs
        np.testing.assert_allclose(f1, f2, rtol=1e-12)
        np.testing.assert_allclose(l1, l2, rtol=1e-12)
        assert (r1 == r2).all()
        assert (r1 >= choice).all()  # reclaim only ever slows instructions down
        assert solver.makespan(r1) <= deadline * (1 + 1e-9)


def test_cut_network_finds_cheapest_vertex_cut() -> None:
    """Diamond 0 -> {1, 2} -> 3: the cheapest way to shorten every path, on the critical part only."""
    edges = np.array([[0, 1], [0, 2], [1, 3], [2, 3]])
    network = CutNetwork(4, edges)
    everything = np.ones(4, dtype=bool)
    start, end = np.array([0]), np.array([3])
    assert network.min_cut(np.array([10.0, 2.0, 3.0, 6.0]), everything, start, end).tolist() == [1, 2]
    assert network.min_cut(np.array([4.0, 2.0, 3.0, 6.0]), everything, start, end).tolist() == [0]
    # Node 2 off the critical DAG (capacity 0, its edges slack): only the path through 1 needs cutting.
    tight = np.array([True, False, True, False])
    assert network.min_cut(np.array([10.0, 2.0, 0.0, 6.0]), tight, start, end).tolist() == [1]
    # A node that cannot be cut (already at full speed) pushes the cut elsewhere.
    assert network.min_cut(np.array([10.0, np.inf, 3.0, 6.0]), everything, start, end).tolist() == [3]


def _is_cut(
    removed: set[int], capacity: np.ndarray, edges: np.ndarray, tight: np.ndarray, sources: np.ndarray, sinks: np.ndarray
) -> bool:
    """Whether removing ``removed`` leaves no source-to-sink path among the critical nodes and edges."""
    alive = {int(v) for v in np.flatnonzero(capacity > 0)} - removed
    reach = {int(s) for s in sources if int(s) in alive}
    for (u, v), t in zip(edges.tolist(), tight, strict=True):  # sorted by source, nodes topological
        if t and u in reach and v in alive:
            reach.add(v)
    return not reach & {int(t) for t in sinks}


def _cheapest_cut_by_brute_force(
    capacity: np.ndarray, edges: np.ndarray, tight: np.ndarray, sources: np.ndarray, sinks: np.ndarray
) -> float:
    """The least total capacity of a node set whose removal leaves no source-to-sink path."""
    finite = [int(v) for v in np.flatnonzero(capacity > 0) if np.isfinite(capacity[v])]
    return min(
        (
            float(capacity[list(removed)].sum())
            for size in range(len(finite) + 1)
            for removed in itertools.combinations(finite, size)
            if _is_cut(set(removed), capacity, edges, tight, sources, sinks)
        ),
        default=np.inf,
    )


def test_cut_network_warm_starts_stay_minimum() -> None:
    """A run of cuts on one network, as the solver makes them (capacities, critical nodes and edges
    changing a little each time, so every max-flow starts from a trimmed earlier flow), each as
    cheap as the brute-force minimum."""
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(6):
        n = 9
        edges = np.array([(u, v) for u in range(n) for v in range(u + 1, n) if rng.random() < 0.45] or [(0, n - 1)])
        network = CutNetwork(n, edges)
        capacity = rng.uniform(1, 10, n)
        tight = np.ones(len(edges), dtype=bool)
        sources, sinks = np.array([0, 1]), np.array([n - 2, n - 1])
        for _ in range(12):
            changed = rng.integers(0, n, 2)
            capacity[changed] = rng.choice([0.0, np.inf, *rng.uniform(1, 10, 4)], 2)
            capacity[[*sources, *sinks]] = np.where(capacity[[*sources, *sinks]] > 0, capacity[[*sources, *sinks]], 5.0)
            tight = tight ^ (rng.random(len(edges)) < 0.1)
            best = _cheapest_cut_by_brute_force(capacity, edges, tight, sources, sinks)
            if not np.isfinite(best):
                continue  # some path is all at full speed: the solver never asks for this cut
            cut = network.min_cut(capacity.copy(), tight, sources, sinks)
            assert _is_cut(set(cut.tolist()), capacity, edges, tight, sources, sinks)
            assert float(capacity[cut].sum()) == pytest.approx(best, rel=1e-9)
            checked += 1
    assert checked > 30


def test_clipped_flow_takes_a_detour_instead_of_being_trimmed() -> None:
    """Diamond 0 -> {1, 2} -> 3 carrying 4 through node 1, whose capacity drops to 1: trimming alone keeps
    a flow of 1; rerouting first sends the other 3 around through node 2 and keeps all 4, as a flow
    within every capacity and conserved at every node."""
    edges = np.array([[0, 1], [0, 2], [1, 3], [2, 3]])
    layout = ArcLayout(4, edges)
    n, e = 4, len(edges)
    capacity = np.zeros(layout.num_pairs)
    capacity[:n] = [10.0, 1.0, 10.0, 10.0]
    capacity[n : n + e] = np.inf
    capacity[n + e + 0] = capacity[2 * n + e + 3] = np.inf  # source into node 0, node 3 into the sink
    old = np.zeros(layout.num_pairs)
    old[[0, 1, 3]] = 4.0  # nodes 0, 1 and 3
    old[[n + 0, n + 2]] = 4.0  # edges 0 -> 1 and 1 -> 3
    old[[n + e + 0, 2 * n + e + 3]] = 4.0

    def repaired(flow: np.ndarray) -> float:
        args = (layout.edges, layout.out_first, layout.out_edges, layout.in_first, layout.in_edges, flow)
        return float(mincut._repair_flow(capacity, *args))

    assert repaired(old.copy()) == pytest.approx(1.0)
    flow = old.copy()
    eps = mincut._saturation_eps(capacity, n)
    assert mincut._reroute(capacity, flow, n, layout.first, layout.head, layout.tail, layout.partner, layout.arc,
                           layout.slot, eps)
    assert repaired(flow) == pytest.approx(4.0)
    assert (flow <= capacity).all() and (flow >= 0).all()
    assert flow[2] == pytest.approx(3.0) and flow[1] == pytest.approx(1.0)  # node 2 took what node 1 lost
    inflow = flow[n + e : 2 * n + e].copy()
    np.add.at(inflow, edges[:, 1], flow[n : n + e])
    outflow = flow[2 * n + e :].copy()
    np.add.at(outflow, edges[:, 0], flow[n : n + e])
    assert inflow == pytest.approx(flow[:n]) and outflow == pytest.approx(flow[:n])


def test_arc_layout_pairs_every_arc_with_its_reverse() -> None:
    """Every stored arc's partner is its reverse (tail and head swapped), and each vertex's arcs are contiguous."""
    dag = PipelineDAG.build("1f1b", 4, 6)
    layout = ArcLayout(dag.num_nodes, dag.edges)
    slots = np.arange(len(layout.head))
    assert (layout.partner[layout.partner] == slots).all()
    assert (layout.head[layout.partner] == layout.tail).all() and (layout.tail[layout.partner] == layout.head).all()
    assert (layout.slot[layout.arc] == slots).all()
    for vertex in (0, 5, 2 * dag.num_nodes, 2 * dag.num_nodes + 1):
        assert (layout.tail[layout.first[vertex] : layout.first[vertex + 1]] == vertex).all()
    assert len(layout.head) == 2 * (3 * dag.num_nodes + len(dag.edges))


def test_critical_network_kernel_matches_its_definition() -> None:
    """Critical nodes (slack within tol), tight edges, sources and sinks, against the numpy definition."""
    dag = PipelineDAG.build("1f1b", 4, 8)
    rng = np.random.default_rng(3)
    for tol in (0.0, 0.05, 0.3):
        durations = rng.choice([1.0, 1.1, 1.5, 2.0], dag.num_nodes)
        finish = dag.finish_times(durations)
        makespan = float(finish.max())
        latest = dag.latest_finish_times(durations, makespan)
        critical, tight, sources, sinks = kernels.critical_network(dag.edges, durations, finish, latest, makespan, tol)
        expected = latest - finish <= tol
        src, dst = dag.edges[:, 0], dag.edges[:, 1]
        assert (critical == expected).all()
        assert (tight == (expected[src] & expected[dst] & ((latest[dst] - durations[dst]) - finish[src] <= tol))).all()
        assert sources.tolist() == np.flatnonzero(expected & (latest - durations <= tol)).tolist()
        assert sinks.tolist() == np.flatnonzero(expected & (finish >= makespan - tol)).tolist()
        assert len(sources) and len(sinks)


def test_series_ties_join_the_cut_within_the_resolution() -> None:
    """Chain 0 -> 1 -> 2 -> 3 -> 4 (all in series), equal rates on 1-3: cutting 2 brings its tied
    neighbours along while their steps fit the resolution; 0 (another rate) and slack edges never."""
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 4]])
    rate = np.array([5.0, 2.0, 2.0, 2.0, 2.0])
    step = np.full(5, 0.001)
    tight = np.ones(4, dtype=bool)
    assert kernels.batch_series_ties(np.array([2]), rate, edges, tight, step, 0.0035).tolist() == [2, 3, 4]  # later first
    assert kernels.batch_series_ties(np.array([2]), rate, edges, tight, step, 0.01).tolist() == [1, 2, 3, 4]
    assert kernels.batch_series_ties(np.array([2]), rate, edges, tight, step, 0.001).tolist() == [2]
    tight[2] = False  # 2 -> 3 slack: 3 is no longer in series with 2
    assert kernels.batch_series_ties(np.array([2]), rate, edges, tight, step, 0.01).tolist() == [1, 2]
