"""``bash run.sh demo`` (perseus.demo), shrunk: server, profiling sweep, frontier, three trainings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from workers_helpers import ROOT, env


@pytest.mark.slow
def test_demo_runs_the_whole_story(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    run = subprocess.run(
        [sys.executable, "-m", "perseus.demo", "--out", str(out), "--pp", "2", "--microbatches", "4",
         "--time-scale", "0.2", "--steps", "3"],
        cwd=ROOT, env=env(), capture_output=True, text=True, timeout=280,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "all max frequency (baseline)" in run.stdout and "no slowdown (p000)" in run.stdout
    assert (out / "profiles" / "gpt3-tiny+uniform+pp2+mbs2" / "profile.csv").is_file()
    trained = sorted(p.parent.name for p in (out / "train").glob("*/iterations.json"))
    assert trained == ["all-max-frequency", "le-5pct-slowdown", "no-slowdown"]
    assert (out / "perseus.db").is_file()
