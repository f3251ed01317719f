"""The launcher's checks before any worker starts: one line and exit 2, or one warning and go on."""

from __future__ import annotations

from pathlib import Path

import pytest

from merak_integration import launch
from merak_integration.config import RunConfig
from merak_integration.precheck import precheck
from perseus.client import PerseusClient
from perseus.pipeline.schedules import stage_orders
from perseus.plan import FrequencyPlan, PlannedInstruction
from perseus.server.app import ServerConfig, ServerThread


def _plan(path: Path, schedule: str, stages: int, microbatches: int, swap_first: bool = False) -> Path:
    """A valid all-1410 MHz plan of the given shape (``swap_first``: stage 0's first two instructions swapped)."""
    orders = stage_orders(schedule, stages, microbatches, 1)
    planned = [[PlannedInstruction(i.kind, i.microbatch, 1410, i.chunk) for i in order] for order in orders]
    if swap_first:
        planned[0][0], planned[0][1] = planned[0][1], planned[0][0]
    FrequencyPlan(schedule, stages, microbatches, 1.0, 100.0, tuple(tuple(s) for s in planned), name="p").save(path)
    return path


def _launch_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert launch.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("perseus: error: ") and "\n" not in err, err
    return err


def test_plan_for_another_pipeline_shape_fails_before_any_worker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = _plan(tmp_path / "pp4.json", "1f1b", 4, 8)
    err = _launch_error(["gpt3-tiny", "2", "4", "--pp", "2", "--plan", str(other)], capsys)
    assert str(other) in err and "4 stages, 8 microbatches" in err and "this run is 1f1b, 2 stages, 4 microbatches" in err
    swapped = _plan(tmp_path / "swapped.json", "1f1b", 2, 4, swap_first=True)
    err = _launch_error(["gpt3-tiny", "2", "4", "--pp", "2", "--plan", str(swapped)], capsys)
    assert str(swapped) in err and "stage 0: plan instruction #0 does not match" in err
    err = _launch_error(["gpt3-tiny", "2", "4", "--pp", "2", "--plan", str(tmp_path / "none.json")], capsys)
    assert "none.json: cannot read plan" in err


def test_a_fitting_plan_passes() -> None:
    cfg = RunConfig("gpt3-tiny", 2, 4, pp=2)
    assert precheck(cfg) == cfg


def test_server_job_of_another_shape_fails_and_an_absent_server_is_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with ServerThread(ServerConfig(port=0, db=f"sqlite:///{tmp_path / 'p.db'}")) as srv:
        address = f"127.0.0.1:{srv.port}"
        with PerseusClient(address) as client:
            client.register_job(job_id="shape", num_stages=4, num_microbatches=8)
        err = _launch_error(["gpt3-tiny", "2", "4", "--pp", "2", "--server", address, "--job_name", "shape"], capsys)
        assert "--job_name: job shape" in err and "4 stages, 8 microbatches" in err
        fresh = RunConfig("gpt3-tiny", 2, 4, pp=2, server=address, job_name="new-job")
        assert precheck(fresh) == fresh  # not registered yet: rank 0 registers it
    warnings: list[str] = []
    assert precheck(fresh, warn=warnings.append).server is None  # the server is gone now
    assert len(warnings) == 1 and f"server {address} did not answer" in warnings[0]
    assert "training runs without Perseus" in warnings[0]
