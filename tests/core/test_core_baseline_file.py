"""``perseus optimize`` writes the all-max-frequency baseline beside the frontier; plots use it."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from perseus.cli.main import main
from perseus.profile import load_profile
from perseus.solver.baselines import max_frequency_plan

from .conftest import A100


def test_baseline_is_written_and_plotted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "f"
    assert main(["optimize", str(A100), "--stages", "8", "--microbatches", "8", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "baseline.csv").open()))
    want = max_frequency_plan(load_profile(A100), "1f1b", 8, 8)
    assert [r["plan"] for r in rows] == ["max-frequency"]
    assert float(rows[0]["iteration_time"]) == pytest.approx(want.iteration_time, rel=1e-9)
    assert float(rows[0]["energy"]) == pytest.approx(want.energy, rel=1e-9)
    assert main(["plot", "frontier", str(out)]) == 0
    assert (out / "frontier.png").stat().st_size > 10_000
