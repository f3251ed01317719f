"""Zero-bubble schedules: orders equal torch 2.13's schedule objects, DAGs, split profiles and plans."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.distributed.pipelining.schedules import (
    ScheduleDualPipeV,
    ScheduleInterleavedZeroBubble,
    ScheduleZBVZeroBubble,
)

from perseus.cli.main import main
from perseus.errors import InputError
from perseus.pipeline.costs import instruction_measurements
from perseus.pipeline.dag import PipelineDAG
from perseus.pipeline.evaluate import build_plan, evaluate_plan
from perseus.pipeline.instruction import placement, virtual_stage
from perseus.pipeline.schedules import stage_orders
from perseus.plan import FrequencyPlan
from perseus.plot import frontier_label
from perseus.profile import PipelineProfile, load_profile, split_backward
from perseus.profile.io import format_profile
from perseus.solver import compute_frontier
from tests.core.conftest import A100, write_csv

TORCH_SCHEDULES = {"zb": ScheduleInterleavedZeroBubble, "zbv": ScheduleZBVZeroBubble, "dualpipev": ScheduleDualPipeV}
TORCH_KINDS = {"F": "forward", "B": "backward", "I": "backward_input", "W": "backward_weight"}


class _StageShape:
    """What a torch schedule's constructor reads of its stages to compute ``pipeline_order``.

    ``pipeline_order`` holds every rank's actions and is computed identically on every rank
    from these numbers alone, so one schedule object built for rank 0 gives all ranks' orders.
    """

    def __init__(self, stage_index: int, num_stages: int, group_size: int) -> None:
        self.stage_index = stage_index
        self.num_stages = num_stages
        self.group_size = group_size
        self.group_rank = 0
        self.submod = torch.nn.Identity()
        self.stage_index_to_group_rank: dict[int, int] = {}


def torch_orders(schedule: str, num_stages: int, num_microbatches: int, num_chunks: int) -> list[list[tuple[Any, ...]]]:
    """Every rank's compute actions in torch's ``pipeline_order``, as (kind, microbatch, chunk)."""
    stages = [
        _StageShape(virtual_stage(schedule, num_stages, 0, c), num_stages * num_chunks, num_stages)
        for c in range(num_chunks)
    ]
    order = TORCH_SCHEDULES[schedule](list[Any](stages), num_microbatches).pipeline_order
    out: list[list[tuple[Any, ...]]] = []
    for rank in range(num_stages):
        ops: list[tuple[Any, ...]] = []
        for action in order[rank]:
            for sub in (action.sub_actions or (action,)) if action is not None else ():  # idle slots: None
                stage, chunk = placement(schedule, num_stages, sub.stage_index)
                assert stage == rank, f"{sub} placed on rank {rank}"
                ops.append((TORCH_KINDS[sub.computation_type.value], sub.microbatch_index, chunk))
        out.append(ops)
    return out


SHAPES = [(1, 4), (2, 4), (2, 6), (3, 6), (4, 8), (4, 12), (4, 16), (5, 10), (8, 16), (8, 24)]


@pytest.mark.parametrize(("num_stages", "num_microbatches"), SHAPES)
@pytest.mark.parametrize(("schedule", "num_chunks"), [("zb", 1), ("zb", 2), ("zb", 3), ("zbv", 2), ("dualpipev", 2)])
def test_order_equals_torch_schedule(schedule: str, num_chunks: int, num_stages: int, num_microbatches: int) -> None:
    ours = [
        [(i.kind, i.microbatch, i.chunk) for i in stage]
        for stage in stage_orders(schedule, num_stages, num_microbatches, num_chunks)
    ]
    assert ours == torch_orders(schedule, num_stages, num_microbatches, num_chunks)


def test_zbv_with_fewer_microbatches_than_the_v_equals_torch() -> None:
    # torch plans 2S - 1 microbatches and drops the surplus ones.
    ours = [[(i.kind, i.microbatch, i.chunk) for i in st] for st in stage_orders("zbv", 4, 3, 2)]
    assert ours == torch_orders("zbv", 4, 3, 2)


def test_zero_bubble_shape_errors_name_the_field() -> None:
    with pytest.raises(InputError, match=r"num_microbatches.*multiple of 2"):
        stage_orders("zb", 4, 9, 2)
    with pytest.raises(InputError, match="DualPipeV over 4 stages needs at least 8"):
        stage_orders("dualpipev", 4, 7, 2)
    with pytest.raises(InputError, match="num_chunks"):
        stage_orders("zb", 4, 8, 0)


def test_every_backward_is_split_and_weights_follow_inputs() -> None:
    for schedule in ("zb", "zbv"):
        for stage in stage_orders(schedule, 4, 8, 2):
            kinds = [i.kind for i in stage]
            assert "backward" not in kinds
            assert kinds.count("forward") == kinds.count("backward_input") == kinds.count("backward_weight") == 16
            for pos, inst in enumerate(stage):
                if inst.kind == "backward_weight":
                    assert stage.index(type(inst)(inst.stage, "backward_input", inst.microbatch, inst.chunk)) < pos


def _unit_durations(dag: PipelineDAG, chunk_share: float) -> np.ndarray:
    """F = B_input = W = 1 per whole stage, fused B = 2, each chunk its share."""
    cost = {"forward": 1.0, "backward_input": 1.0, "backward_weight": 1.0, "backward": 2.0}
    return np.array([cost[i.kind] * chunk_share for i in dag.nodes])


@pytest.mark.parametrize(("num_stages", "num_microbatches"), [(3, 6), (4, 8), (4, 12), (6, 12)])
def test_zb_h1_makespan_matches_the_closed_form(num_stages: int, num_microbatches: int) -> None:
    # With F = B = W, ZB-H1 leaves a bubble of (S - 1) * (F + B - W) where 1F1B leaves (S - 1) * (F + B + W).
    s, m = num_stages, num_microbatches
    zb = PipelineDAG.build("zb", s, m, 1)
    one_f_one_b = PipelineDAG.build("1f1b", s, m)
    assert zb.finish_times(_unit_durations(zb, 1.0)).max() == pytest.approx(3 * m + (s - 1))
    assert one_f_one_b.finish_times(_unit_durations(one_f_one_b, 1.0)).max() == pytest.approx(3 * (m + s - 1))


def test_v_shaped_dags_link_chunks_down_and_back_up() -> None:
    dag = PipelineDAG.build("zbv", 4, 8, 2)
    index = {inst: k for k, inst in enumerate(dag.nodes)}
    preds: dict[Any, list[Any]] = {node: [] for node in dag.nodes}
    for src, dst in dag.edges.tolist():
        preds[dag.nodes[dst]].append(dag.nodes[src])
    inst = type(dag.nodes[0])
    # Rank 3 holds virtual stages 3 and 4: its chunk-1 forward follows its own chunk-0 forward,
    # and the loss (virtual stage 7) sits on rank 0's chunk 1.
    assert inst(3, "forward", 2, 0) in preds[inst(3, "forward", 2, 1)]
    assert inst(0, "forward", 5, 1) in preds[inst(0, "backward_input", 5, 1)]
    assert inst(1, "backward_input", 5, 1) in preds[inst(2, "backward_input", 5, 1)]
    assert inst(0, "backward_input", 5, 0) in index
    for sched, chunks in (("zb", 2), ("zbv", 2), ("dualpipev", 2)):
        d = PipelineDAG.build(sched, 4, 8, chunks)
        assert d.predecessors.shape[1] <= 2 and d.successors.shape[1] <= 2  # scalar passes stay usable
        m = d.finish_times(_unit_durations(d, 0.5)).max()
        h1 = PipelineDAG.build("zb", 4, 8, 1)
        assert m < h1.finish_times(_unit_durations(h1, 1.0)).max()


def test_split_profile_rows_parse_and_fuse(tmp_path: Path) -> None:
    rows = ["0,forward,1000,1.0,100", "0,backward_input,1000,0.75,80", "0,backward_weight,1000,1.25,120",
            "0,forward,800,1.5,90", "0,backward_input,800,1.0,70", "0,backward_weight,800,1.5,100"]
    profile = load_profile(write_csv(tmp_path, rows), blocking_power=50.0)
    fused = profile[(0, "backward")]
    assert [(m.frequency, m.time, m.energy) for m in fused.measurements] == [(1000, 2.0, 200.0), (800, 2.5, 170.0)]
    assert profile.has_split_backward()


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["0,forward,1000,1,1", "0,backward_input,1000,1,1"], "backward_input but no backward_weight"),
        (["0,forward,1000,1,1", "0,backward_input,1000,1,1", "0,backward_weight,900,1,1"], "same frequencies"),
        (["0,forward,1000,1,1", "0,backward_split,1000,1,1"], "must be one of forward, backward, backward_input"),
        (["0,backward,1000,1,1"], "stage 0 has no forward"),
    ],
)
def test_bad_split_profiles_name_the_problem(tmp_path: Path, rows: list[str], message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_profile(write_csv(tmp_path, rows), blocking_power=50.0)


def test_split_backward_shares_time_and_energy(a100_profile: PipelineProfile) -> None:
    split = split_backward(a100_profile, 0.4)
    for stage in range(a100_profile.num_stages):
        for fused in a100_profile[(stage, "backward")].measurements:
            b = split[(stage, "backward_input")].at(fused.frequency)
            w = split[(stage, "backward_weight")].at(fused.frequency)
            assert (b.time, b.energy) == pytest.approx((0.4 * fused.time, 0.4 * fused.energy))
            assert (b.time + w.time, b.energy + w.energy) == pytest.approx((fused.time, fused.energy))
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        split_backward(a100_profile, 1.0)


def test_missing_split_kinds_is_one_clear_error(a100_profile: PipelineProfile) -> None:
    dag = PipelineDAG.build("zb", 8, 8, 1)
    with pytest.raises(InputError, match=r"no backward_input measurements.*--backward-input-share"):
        instruction_measurements(a100_profile, dag, 0, "backward_input", 0)


def test_v_shaped_per_virtual_stage_profile_uses_model_order(a100_profile: PipelineProfile) -> None:
    # A 4-GPU V over the 8-stage profile: GPU 0 chunk 1 is the model's last stage (7).
    split = split_backward(a100_profile, 0.5)
    dag = PipelineDAG.build("zbv", 4, 8, 2)
    got = instruction_measurements(split, dag, 0, "forward", 1)
    assert got == list(split[(7, "forward")].measurements)


@pytest.mark.parametrize("schedule", ["zb", "zbv", "dualpipev"])
def test_frontier_plans_round_trip_and_evaluate_exactly(a100_profile: PipelineProfile, schedule: str) -> None:
    profile = split_backward(a100_profile, 0.5)
    frontier = compute_frontier(profile, schedule, 4, 8, 2, None, None)
    fastest = frontier.fastest
    again = FrequencyPlan.from_json(fastest.to_json())
    assert again == fastest
    assert evaluate_plan(profile, again) == pytest.approx((fastest.iteration_time, fastest.energy))
    kinds = {p.instruction for stage in fastest.stages for p in stage}
    assert "backward_weight" in kinds
    # The least-energy plan slows weight gradients too: they are the cheapest to slow down.
    cheapest = frontier.min_energy
    top = max(profile.frequencies())
    assert any(p.frequency < top for stage in cheapest.stages for p in stage if p.instruction == "backward_weight")
    dag = PipelineDAG.build(schedule, 4, 8, 2)
    rebuilt = build_plan(dag, [top] * dag.num_nodes, 0.0, 0.0)
    assert [len(s) for s in rebuilt.stages] == [len(s) for s in fastest.stages]


def test_optimize_cli_zero_bubble_schedules_and_one_chart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small = tmp_path / "profile.csv"  # 4 stages, every 4th clock: keeps the three solves short
    full = load_profile(A100)
    keep = set(full.frequencies()[::4])
    small.write_text(format_profile(
        (p.stage, p.instruction, m) for p in full if p.stage < 4 for m in p.measurements if m.frequency in keep
    ))
    common = [str(small), "--stages", "4", "--microbatches", "8", "--blocking-power", "80"]
    assert main(["optimize", *common, "--out", str(tmp_path / "1f1b")]) == 0
    assert main(["optimize", *common, "--schedule", "zb", "--out", str(tmp_path / "zb")]) == 2
    assert "no backward_input measurements" in capsys.readouterr().err
    assert main(["optimize", *common, "--schedule", "zbv", "--chunks", "3", "--out", str(tmp_path / "zbv")]) == 2
    assert "--chunks: zbv runs 2 chunk(s) per stage, got 3" in capsys.readouterr().err
    for schedule in ("zb", "zbv"):
        out = tmp_path / schedule
        assert main(["optimize", *common, "--schedule", schedule, "--backward-input-share", "0.5", "--out", str(out),
                     "--plan-files"]) == 0
        plan = FrequencyPlan.load(sorted((out / "plans").glob("*.json"))[0])
        assert plan.schedule == schedule and plan.num_chunks == (2 if schedule == "zbv" else 1)
        assert {p.instruction for p in plan.stages[0]} == {"forward", "backward_input", "backward_weight"}
    assert "split every backward" in capsys.readouterr().out
    dirs = [str(tmp_path / s) for s in ("1f1b", "zb", "zbv")]
    assert main(["plot", "frontier", *dirs, "--out", str(tmp_path / "all.png")]) == 0
    assert (tmp_path / "all.png").stat().st_size > 1000
    assert frontier_label(tmp_path / "zbv") == "zbv (zbv, 2 chunks)"
    plan_path = sorted((tmp_path / "zbv" / "plans").glob("*.json"))[0]
    split = tmp_path / "zbv" / "split_profile" / "profile.csv"
    assert main(["plot", "timeline", str(plan_path), "--profile", str(split)]) == 0
    assert plan_path.with_suffix(".png").exists()
