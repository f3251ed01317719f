"""The compact plan store: lossless, small, and readable as DIR:PLAN by every consumer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from perseus.cli.main import main
from perseus.errors import InputError
from perseus.pipeline.evaluate import evaluate_plan
from perseus.plan import FrequencyPlan
from perseus.plan.store import PLANS_FILENAME, ROW_PREFIX, PlanStore, decode_plan, encode_plan, load_plan
from perseus.profile import PipelineProfile
from perseus.solver import compute_frontier

from .conftest import A100


@pytest.mark.parametrize(("schedule", "microbatches", "chunks"), [("1f1b", 6, 1), ("interleaved-1f1b", 8, 2)])
def test_store_round_trips_every_plan(
    tmp_path: Path, a100_profile: PipelineProfile, schedule: str, microbatches: int, chunks: int
) -> None:
    frontier = compute_frontier(a100_profile, schedule, 8, microbatches, chunks)
    frontier.store.save(tmp_path / PLANS_FILENAME)
    loaded = PlanStore.load(tmp_path)
    assert loaded.plans() == frontier.plans
    assert len(frontier.plans) > 10
    # The store is the solver's own output: every plan re-evaluates to its recorded time and energy.
    for plan in frontier.plans[:: max(1, len(frontier.plans) // 5)]:
        assert evaluate_plan(a100_profile, plan) == pytest.approx((plan.iteration_time, plan.energy))
    # Rebuilding a store from plan objects gives the same frequency matrix.
    assert np.array_equal(PlanStore.from_plans(frontier.plans).frequencies, loaded.frequencies)


def test_store_is_much_smaller_than_plan_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["optimize", str(A100), "--stages", "8", "--microbatches", "12", "--out", str(out), "--plan-files"]
    assert main(argv) == 0
    json_bytes = sum(p.stat().st_size for p in (out / "plans").iterdir())
    assert (out / PLANS_FILENAME).stat().st_size * 50 < json_bytes


def test_export_and_dir_colon_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["optimize", str(A100), "--stages", "8", "--microbatches", "4", "--out", str(out)]) == 0
    assert not (out / "plans").exists()
    names = [row.split(",")[0] for row in (out / "frontier.csv").read_text().splitlines()[1:]]
    capsys.readouterr()
    assert main(["plan", "export", str(out), names[0], names[-1], "--out", str(tmp_path / "json")]) == 0
    assert capsys.readouterr().out == f"wrote 2 plan(s) to {tmp_path / 'json'}\n"
    exported = FrequencyPlan.load(tmp_path / "json" / f"{names[-1]}.json")
    assert exported == load_plan(f"{out}:{names[-1]}")
    assert set(json.loads((tmp_path / "json" / f"{names[0]}.json").read_text())) == {
        "schedule", "num_stages", "num_microbatches", "iteration_time", "energy", "stages", "name"
    }
    assert main(["plan", "export", str(out), "--all", "--out", str(tmp_path / "all")]) == 0
    assert sorted(p.stem for p in (tmp_path / "all").iterdir()) == sorted(names)


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["OUT", "p999", "--out", "X"], "OUT: no plan named 'p999' (plans are listed in frontier.csv)"),
        (["OUT", "--out", "X"], "perseus plan export: name the plans to export, or pass --all (not both)"),
        (["OUT", "p000", "--all", "--out", "X"], "perseus plan export: name the plans to export, or pass --all (not both)"),
        (["OUT", "--all", "--out", "OUT/frontier.csv"], "--out: OUT/frontier.csv is a file, expected a directory"),
        (["MISSING", "--all", "--out", "X"], "MISSING: no such file"),
        (["BROKEN", "--all", "--out", "X"], "BROKEN/plans.npz: not a Perseus plan store (not a zip archive)"),
    ],
)
def test_export_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], line: str
) -> None:
    out = tmp_path / "out"
    assert main(["optimize", str(A100), "--stages", "8", "--microbatches", "2", "--out", str(out)]) == 0
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / PLANS_FILENAME).write_bytes(b"not a zip")
    subst = {"OUT": str(out), "X": str(tmp_path / "x"), "MISSING": str(tmp_path / "missing"),
             "BROKEN": str(tmp_path / "broken")}

    def fill(text: str) -> str:
        for key, value in subst.items():
            text = text.replace(key, value)
        return text

    capsys.readouterr()
    assert main(["plan", "export", *(fill(a) for a in argv)]) == 2
    assert capsys.readouterr().err == f"perseus: error: {fill(line)}\n"


def test_load_plan_names_the_missing_plan(tmp_path: Path, a100_profile: PipelineProfile) -> None:
    compute_frontier(a100_profile, "1f1b", 8, 2).store.save(tmp_path / PLANS_FILENAME)
    with pytest.raises(InputError, match=r"no plan named 'p999' in "):
        load_plan(f"{tmp_path}:p999")
    assert load_plan(f"{tmp_path}:p000").name == "p000"


def test_compact_row_round_trips_and_is_small(a100_profile: PipelineProfile) -> None:
    """What the server writes per plan row: lossless, about 1-2% of the plan JSON."""
    frontier = compute_frontier(a100_profile, "interleaved-1f1b", 8, 16, 2)
    for plan in frontier.plans[:: max(1, len(frontier.plans) // 4)]:
        text = encode_plan(plan)
        assert text.startswith(ROW_PREFIX)
        assert decode_plan(text) == plan
        assert len(text) * 20 < len(plan.to_json())
    assert decode_plan(frontier.plans[0].to_json()) == frontier.plans[0]  # rows written before stay readable


@pytest.mark.parametrize(
    "text",
    [ROW_PREFIX + "{}\n", ROW_PREFIX + '{"slots": 1e30}\nAAAA', ROW_PREFIX + "not json\n", ROW_PREFIX + "{\"slots\":3}\n!!"],
)
def test_compact_row_garbage_is_an_input_error(text: str) -> None:
    with pytest.raises(InputError, match=r"^row 7: not a compact plan \("):
        decode_plan(text, source="row 7")


def test_worker_plan_flag_takes_dir_colon_plan(tmp_path: Path, a100_profile: PipelineProfile) -> None:
    """`--plan DIR:PLAN` gives a rank the same schedule as the exported JSON, checked against its order."""
    from merak_integration.config import RunConfig
    from merak_integration.plans import load_plan_schedule

    frontier = compute_frontier(a100_profile, "1f1b", 8, 4)
    frontier.store.save(tmp_path / PLANS_FILENAME)
    plan = frontier.plans[3]
    expected = [p.name for p in plan.stages[2]]
    cfg = RunConfig(model="gpt3-tiny", microbatch_size=1, num_microbatches=4, pp=8, plan=f"{tmp_path}:{plan.name}")
    assert load_plan_schedule(cfg, 2, expected).frequencies() == [p.frequency for p in plan.stages[2]]
    with pytest.raises(InputError, match="does not match the pipeline's order"):
        load_plan_schedule(cfg, 2, list(reversed(expected)))
