"""``--log_to``: each iteration's time, energy and plan reach TensorBoard and Weights & Biases."""

from __future__ import annotations

from pathlib import Path

import pytest
from workers_helpers import iterations, launch

from merak_integration.config import RunConfig
from merak_integration.runlog import WandbLog, parse_sinks
from perseus.errors import InputError


def test_tensorboard_gets_every_iteration(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "train"
    run = launch("gpt3-tiny", "2", "4", "--pp", "2", "--device", "sim", "--max_steps", "3", "--sim_time_scale", "0.05",
                 "--out_dir", str(out), "--log_to", "tensorboard")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    rows = iterations(out)
    for tag, key in (("perseus/iteration_time_s", "time"), ("perseus/iteration_energy_j", "energy")):
        logged = [(e.step, e.value) for e in events.Scalars(tag)]
        assert logged == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in rows]
    assert "perseus/plan/text_summary" in events.Tags()["tensors"]


def test_wandb_run_gets_the_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    log = WandbLog(tmp_path, RunConfig(model="gpt3-tiny", microbatch_size=2, num_microbatches=4, job_name="t"))
    try:
        log.log(0, {"time": 1.5, "energy": 300.0, "loss": 2.0, "at_planned_clock": None, "plan": "p003"})
        log.log(1, {"time": 1.25, "energy": 250.0, "loss": 1.5, "at_planned_clock": 1.0, "plan": "p003"})
        summary = log._run.summary
        assert (summary["perseus/iteration_energy_j"], summary["perseus/iteration_time_s"]) == (250.0, 1.25)
        assert summary["perseus/plan"] == "p003"
    finally:
        log.close()
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))


def test_log_to_names_what_it_takes() -> None:
    assert parse_sinks("tensorboard, wandb") == ("tensorboard", "wandb")
    with pytest.raises(InputError, match=r"--log_to: expected tensorboard, wandb or both comma-separated, got 'mlflow'"):
        parse_sinks("mlflow")
