"""Workers on (fake) NVML GPUs: clock control is checked before the first iteration, and measure-only
runs change nothing and say so in every report."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path

from workers_helpers import ROOT, ServerProcess, launch

DEVICE_TESTS = ROOT / "tests" / "device"
sys.path.insert(0, str(DEVICE_TESTS))
import fake_nvml  # noqa: E402


def _fake_env(tmp: Path, *devices: fake_nvml.FakeDevice) -> dict[str, str]:
    shared = tmp / "gpus.json"
    fake_nvml.share_state(shared, list(devices))
    fake_nvml.configure()
    return {
        "PYTHONPATH": f"{ROOT}{os.pathsep}{DEVICE_TESTS}",
        "PERSEUS_NVML_MODULE": "fake_nvml",
        "FAKE_NVML_STATE": str(shared),
        "FAKE_NVML_JOURNAL": str(tmp / "journal.txt"),
        "PERSEUS_STATE_DIR": str(tmp / "state"),
    }


def test_profiling_a_gpu_whose_clocks_cannot_be_set_stops_before_training(tmp_path: Path) -> None:
    """Both ranks stop with the same reason: the user reads it once, last, and no torchrun traceback."""
    mig = [fake_nvml.FakeDevice(uuid=f"GPU-{i}{i}", mig_mode=fake_nvml.NVML_DEVICE_MIG_ENABLE) for i in range(2)]
    extra = _fake_env(tmp_path, *mig)
    run = launch("gpt3-tiny", "2", "4", "--pp", "2", "--device", "nvml", "--profile", "true", "--profile_dir",
                 str(tmp_path), extra_env=extra)
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("perseus: error:")]
    assert len(errors) == 1 and "cannot set GPU clocks: GPU " in errors[0], run.stderr
    assert "has MIG mode enabled" in errors[0] and "--measure_only" in errors[0]
    assert errors[0].endswith("(and 1 more worker)")
    assert run.stderr.splitlines()[-1] == errors[0], run.stderr
    # Exactly one line about the GPU: no "measure-only" notice before the error (the run is not measure-only).
    assert [line for line in run.stderr.splitlines() if "MIG" in line] == errors, run.stderr
    assert "is measure-only" not in run.stderr + run.stdout, run.stderr
    assert "Traceback" not in run.stderr and "ChildFailedError" not in run.stderr, run.stderr
    assert "failed (exitcode" not in run.stderr, run.stderr
    assert "profiled" not in run.stdout
    assert not (tmp_path / "journal.txt").exists()


def test_measure_only_changes_nothing_and_says_so(tmp_path: Path) -> None:
    """Also with a server: its profiling sweep and plans are not applied, and every report it stores
    says measure-only, with the clock read back from the GPU."""
    extra = _fake_env(tmp_path, fake_nvml.FakeDevice())
    server = ServerProcess(tmp_path)
    try:
        run = launch("gpt3-tiny", "2", "4", "--device", "nvml", "--measure_only", "--max_steps", "2",
                     "--num_warmup_steps", "0", "--num_prof_steps", "1", "--server", server.address,
                     "--job_name", "mo", "--out_dir", str(tmp_path / "out"), extra_env=extra)
    finally:
        server.stop()
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "measure-only: no GPU clock or power limit is changed" in run.stdout
    assert "profiling sweep and plans are not applied" in run.stdout and "profiled" not in run.stdout
    assert all("(measure-only)" in line for line in run.stdout.splitlines() if line.startswith("iteration"))
    rows = json.loads((tmp_path / "out" / "iterations.json").read_text())
    assert len(rows) == 2 and all(r["measure_only"] for r in rows)
    assert json.loads((tmp_path / "out" / "rank0.json").read_text())["measure_only"] is True
    assert not (tmp_path / "journal.txt").exists()  # not one NVML setting call
    with sqlite3.connect(tmp_path / "perseus.db") as db:
        stored = db.execute("SELECT iteration, measure_only, clock_mhz, planned_instructions, plan_name "
                            "FROM scheduler_iteration_reports WHERE job_id = 'mo' ORDER BY iteration").fetchall()
    boost = max(fake_nvml.FakeDevice().graphics_clocks)
    assert stored == [(0, 1, boost, 0, ""), (1, 1, boost, 0, "")]


def test_measure_only_with_a_plan_file_applies_it_nowhere_and_names_it_nowhere(tmp_path: Path) -> None:
    """No server: the plan is checked, not applied; rows, records and instructions name no plan or clock."""
    from test_workers_precheck import _plan

    plan = _plan(tmp_path / "plan.json", "1f1b", 1, 4)
    extra = _fake_env(tmp_path, fake_nvml.FakeDevice())
    run = launch("gpt3-tiny", "2", "4", "--device", "nvml", "--measure_only", "--plan", str(plan), "--max_steps",
                 "2", "--out_dir", str(tmp_path / "out"), extra_env=extra)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    notices = [line for line in run.stdout.splitlines() if "is not applied" in line]
    assert notices == ["perseus: measure-only: plan p is not applied; iterations run at default clocks and name no plan"]
    rows = json.loads((tmp_path / "out" / "iterations.json").read_text())
    assert [(r["plan"], r["measure_only"], r["at_planned_clock"]) for r in rows] == [("", True, None)] * 2
    record = json.loads((tmp_path / "out" / "rank0.json").read_text())
    assert record["fraction_at_planned_clock"] is None
    assert all(i[1] is None for it in record["iterations"] for i in it["instructions"])  # no requested clock
    assert not (tmp_path / "journal.txt").exists()  # not one NVML setting call
