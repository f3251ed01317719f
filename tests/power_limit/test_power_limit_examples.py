"""The examples run end to end on simulated GPUs (real torch training, real gloo processes)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FAST = ["--epochs", "1", "--steps-per-epoch", "16", "--batch-size", "8", "--pl-step", "100", "--warmup-steps", "1"]


def run(args: list[str], tmp_path: Path, **env: str) -> str:
    environ = {**os.environ, "PERSEUS_DEVICE": "sim", "PERSEUS_SIM_TIME_SCALE": "0.2", **env}
    proc = subprocess.run(
        args, cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=240, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def slowdown_choice(profile_path: Path, factor: float) -> float:
    """The limit MaxSlowdownConstraint must pick from a saved profile, by hand: the lowest limit
    whose time is within ``factor`` of the time at the highest limit."""
    measurements = json.loads(profile_path.read_text())["measurements"]
    fastest = max(measurements, key=lambda m: m["power_limit"])
    return float(min(m["power_limit"] for m in measurements if m["time"] <= fastest["time"] * factor))


def test_single_gpu_profiles_then_reuses_the_saved_profile(tmp_path: Path) -> None:
    profile = tmp_path / "pl.json"
    cmd = [sys.executable, str(EXAMPLES / "single_gpu.py"), *FAST, "--profile-path", str(profile)]
    first = run(cmd, tmp_path, PERSEUS_MAX_SLOWDOWN="1.5")
    assert "MaxSlowdownConstraint(factor=1.5)" in first
    assert "power-limit profiling done" in first
    chosen = float(re.findall(r"optimal power limit: (\S+) W", first)[-1])
    saved = json.loads(profile.read_text())
    assert [m["power_limit"] for m in saved["measurements"]] == [400, 300, 200, 100]
    assert chosen == slowdown_choice(profile, 1.5)

    second = run(cmd, tmp_path, PERSEUS_MAX_SLOWDOWN="1.5")
    assert "power-limit profiling done" not in second and "loaded power-limit profile" in second
    assert float(re.findall(r"optimal power limit: (\S+) W", second)[-1]) == chosen


def test_bad_environment_is_one_line_error(tmp_path: Path) -> None:
    environ = {**os.environ, "PERSEUS_DEVICE": "sim", "PERSEUS_MAX_SLOWDOWN": "0.5"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "single_gpu.py")],
        env=environ,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "single_gpu: error: PERSEUS_MAX_SLOWDOWN: must be a number >= 1, got '0.5'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_ddp_example_ranks_pick_the_limit_of_the_aggregated_profile(tmp_path: Path) -> None:
    profile = tmp_path / "pl.json"
    out = run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            str(EXAMPLES / "ddp.py"),
            *FAST,
            "--profile-path",
            str(profile),
        ],
        tmp_path,
        OMP_NUM_THREADS="1",
        PERSEUS_MAX_SLOWDOWN="1.1",
    )
    assert "2 ranks, 2 GPUs" in out
    saved = json.loads(profile.read_text())
    assert saved["num_gpus"] == 2 and [m["power_limit"] for m in saved["measurements"]] == [400, 300, 200, 100]
    limits = dict(re.findall(r"rank (\d): optimal power limit (\S+) W", out))
    expected = slowdown_choice(profile, 1.1)
    assert {rank: float(watts) for rank, watts in limits.items()} == {"0": expected, "1": expected}


@pytest.mark.slow
def test_recurring_job_example_reaches_target(tmp_path: Path) -> None:
    out = run(
        [sys.executable, str(EXAMPLES / "recurring_job.py"), *FAST, "--epochs", "10", "--target-accuracy", "0.8"],
        tmp_path,
    )
    assert "stopped: target metric 0.8 reached" in out


def test_recurring_job_example_stops_at_its_epochs(tmp_path: Path) -> None:
    out = run([sys.executable, str(EXAMPLES / "recurring_job.py"), *FAST, "--target-accuracy", "0.999"], tmp_path)
    assert "stopped: max_epochs (1) reached; 1 epochs" in out
