"""Schedules and DAGs: instruction orders and longest paths with hand-derivable answers."""

from __future__ import annotations

import numpy as np
import pytest

from perseus.errors import InputError
from perseus.pipeline.dag import PipelineDAG
from perseus.pipeline.schedules import gpipe, interleaved_one_f_one_b, one_f_one_b


def names(order: list) -> list[str]:  # type: ignore[type-arg]
    return [i.name for i in order]


def test_1f1b_order_warmup_steady_cooldown() -> None:
    order = one_f_one_b(3, 4)
    assert names(order[0]) == ["forward:0", "forward:1", "forward:2", "backward:0", "forward:3",
                               "backward:1", "backward:2", "backward:3"]
    assert names(order[2]) == ["forward:0", "backward:0", "forward:1", "backward:1", "forward:2",
                               "backward:2", "forward:3", "backward:3"]
    # Fewer microbatches than warm-up slots.
    assert names(one_f_one_b(4, 1)[0]) == ["forward:0", "backward:0"]


def test_gpipe_order() -> None:
    assert names(gpipe(2, 2)[1]) == ["forward:0", "forward:1", "backward:0", "backward:1"]


def test_interleaved_covers_every_chunk_once() -> None:
    order = interleaved_one_f_one_b(4, 8, 2)
    for stage in order:
        assert len(stage) == 8 * 2 * 2
        assert len(set(stage)) == len(stage)
        assert {i.chunk for i in stage} == {0, 1}
    with pytest.raises(InputError, match="multiple of the number of stages"):
        interleaved_one_f_one_b(4, 6, 2)


@pytest.mark.parametrize(("stages", "microbatches"), [(1, 1), (2, 3), (4, 4), (4, 8), (8, 3)])
def test_1f1b_and_gpipe_makespan_formulas(stages: int, microbatches: int) -> None:
    # With forward time f and backward time b on every stage, both schedules take
    # (M + S - 1) * (f + b): the classic bubble formula.
    f, b = 1.0, 2.0
    for schedule in ("1f1b", "gpipe"):
        dag = PipelineDAG.build(schedule, stages, microbatches)
        assert dag.num_nodes == 2 * stages * microbatches
        durations = np.array([f if n.kind == "forward" else b for n in dag.nodes])
        assert dag.finish_times(durations).max() == pytest.approx((microbatches + stages - 1) * (f + b))


def test_interleaved_shrinks_the_bubble() -> None:
    stages, microbatches, chunks = 4, 8, 2
    plain = PipelineDAG.build("1f1b", stages, microbatches)
    inter = PipelineDAG.build("interleaved-1f1b", stages, microbatches, chunks)
    assert inter.num_nodes == 2 * stages * microbatches * chunks
    t_plain = plain.finish_times(np.array([1.0 if n.kind == "forward" else 2.0 for n in plain.nodes])).max()
    # Each chunk holds half the layers: half the time per instruction.
    t_inter = inter.finish_times(np.array([0.5 if n.kind == "forward" else 1.0 for n in inter.nodes])).max()
    busy = microbatches * 3.0
    assert busy < t_inter < t_plain


def test_edges_respect_data_dependencies() -> None:
    dag = PipelineDAG.build("1f1b", 3, 2)
    ids = {(n.stage, n.kind, n.microbatch): k for k, n in enumerate(dag.nodes)}
    edges = {tuple(e) for e in dag.edges.tolist()}
    assert (ids[(0, "forward", 1)], ids[(1, "forward", 1)]) in edges
    assert (ids[(2, "backward", 0)], ids[(1, "backward", 0)]) in edges
    assert (ids[(2, "forward", 0)], ids[(2, "backward", 0)]) in edges
    assert all(src < dst for src, dst in edges)  # ids are a topological order


def test_latest_finish_gives_zero_slack_on_critical_path() -> None:
    dag = PipelineDAG.build("1f1b", 2, 2)
    durations = np.array([1.0 if n.kind == "forward" else 2.0 for n in dag.nodes])
    finish = dag.finish_times(durations)
    latest = dag.latest_finish_times(durations, float(finish.max()))
    slack = latest - finish
    assert slack.min() == pytest.approx(0.0)
    assert np.all(slack >= -1e-12)
