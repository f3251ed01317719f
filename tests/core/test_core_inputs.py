"""Every bad input to `perseus optimize` and `perseus plan export` is one exact line and exit 2."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from perseus.cli.main import main
from perseus.pipeline.costs import OptionTable
from perseus.pipeline.dag import PipelineDAG
from perseus.profile import parse_profile
from perseus.solver.frontier import MAX_STEPS, STEPS_PER_RESOLUTION, GraphCutSolver, step_bound

from .conftest import A100

HEADER = "stage,instruction,frequency,time,energy"
GOOD = "0,forward,1000,0.1,10\n0,backward,1000,0.2,20\n"


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def optimize(profile: Path | str, tmp_path: Path, *extra: str) -> list[str]:
    return ["optimize", str(profile), "--stages", "1", "--microbatches", "2", "--out", str(tmp_path / "out"), *extra]


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (f"{HEADER}\n0,forward,1000,0.1,10\n0,backward,1000,0.2,2\xff0\n".encode("latin-1"),
         "p.csv:3: not UTF-8 text (byte 0xff)"),
        (f"{HEADER}\n0,forward,1000,0.1,{'1' * 5_000_000}\n".encode(),
         "p.csv:2: malformed CSV: field larger than field limit (131072)"),
        (f"{HEADER}\n0,forward,1000,0.1,{'1' * 100}\n".encode(), "p.csv:2: field longer than 64 characters"),
        (f"{HEADER}\n0,forward,100000000000000000000000,0.1,10\n0,backward,1000,0.2,20\n".encode(),
         "p.csv:2: frequency must be between 1 and 10000, got 100000000000000000000000"),
        (f"{HEADER}\n0,forward,1e23,0.1,10\n".encode(), "p.csv:2: frequency must be an integer, got '1e23'"),
        (f"{HEADER}\n0,forward,1000,0.1,1e308\n0,backward,1000,0.2,20\n".encode(),
         "p.csv:2: energy 1e+308 J in 0.1 s is above 10000 W; check the units"),
        (f"{HEADER}\n0,forward,1000,nan,10\n".encode(), "p.csv:2: time must be a positive number, got 'nan'"),
        (f"{HEADER}\n0,forward,1000,1e9,10\n".encode(), "p.csv:2: time must be between 1e-07 and 3600 s, got 1e+09"),
        (f"{HEADER}\n1000000000,forward,1000,0.1,10\n".encode(),
         "p.csv:2: stage must be between 0 and 1023, got 1000000000"),
    ],
)
def test_bad_profile_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, line: str
) -> None:
    (tmp_path / "p.csv").write_bytes(content)
    code, err = run_cli(optimize(tmp_path / "p.csv", tmp_path, "--blocking-power", "50"), capsys)
    assert (code, err) == (2, f"perseus: error: {tmp_path}/{line}\n")


def test_bad_meta_json_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.csv").write_text(HEADER + "\n" + GOOD)
    (tmp_path / "meta.json").mkdir()
    code, err = run_cli(optimize(tmp_path / "p.csv", tmp_path), capsys)
    assert (code, err) == (2, f"perseus: error: {tmp_path}/meta.json: is a directory, expected a file\n")
    (tmp_path / "meta.json").rmdir()
    (tmp_path / "meta.json").write_text('{"blocking_power": 1e308}')
    code, err = run_cli(optimize(tmp_path / "p.csv", tmp_path), capsys)
    assert (code, err) == (
        2, f"perseus: error: {tmp_path}/meta.json: blocking power must be between 0 and 10000 W, got 1e+308\n"
    )


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (["--time-resolution", "nan"], "--time-resolution: must be a positive number of seconds, got nan"),
        (["--time-resolution", "inf"], "--time-resolution: must be a positive number of seconds, got inf"),
        (["--blocking-power", "1e308"], "--blocking-power: blocking power must be between 0 and 10000 W, got 1e+308"),
        (["--blocking-power", "nan"], "--blocking-power: blocking power must be between 0 and 10000 W, got nan"),
        (["--chunks", "1000", "--schedule", "interleaved-1f1b"], "--chunks: must be between 1 and 64, got 1000"),
        (["--stages", "100000000"], "--stages: must be between 1 and 1024, got 100000000"),
        (["--microbatches", "100000000"], "--microbatches: must be between 1 and 65536, got 100000000"),
    ],
)
def test_bad_flags_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], line: str
) -> None:
    code, err = run_cli([*optimize(A100, tmp_path), *flags], capsys)
    assert (code, err) == (2, f"perseus: error: {line}\n")
    assert not (tmp_path / "out").exists()


def test_sizes_are_limited_by_memory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("perseus.cli.optimize.memory_bytes", lambda: 2**30)  # a 1 GiB machine
    argv = ["optimize", str(A100), "--stages", "64", "--microbatches", "1024", "--out", str(tmp_path / "out")]
    code, err = run_cli(argv, capsys)
    assert (code, err) == (
        2,
        "perseus: error: --stages/--microbatches/--chunks: 131,072 instructions would need about 2.4 GiB; "
        "this machine allows 26,843 (half its memory)\n",
    )


def test_too_fine_time_resolution_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["optimize", str(A100), "--stages", "8", "--microbatches", "2", "--out", str(tmp_path / "out"),
            "--time-resolution", "1e-12"]
    code, err = run_cli(argv, capsys)
    assert code == 2
    assert err.startswith("perseus: error: --time-resolution: must be a positive number of seconds of at least 1e-05 x")
    assert err.endswith("got 1e-12\n") and err.count("\n") == 1


def test_out_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "out").write_text("x")
    code, err = run_cli(optimize(A100, tmp_path), capsys)
    assert (code, err) == (2, f"perseus: error: --out: {tmp_path}/out is a file, expected a directory\n")


def test_step_bound_and_cap() -> None:
    """The solver stops within its proven bound, and a cap below the cuts needed is reported, not hidden."""
    profile = parse_profile(
        HEADER + "\n0,forward,1000,0.1,10\n0,forward,900,0.11,9\n0,forward,800,0.125,8.5\n"
        "0,backward,1000,0.2,20\n0,backward,900,0.22,18\n",
        source="p", blocking_power=10,
    )
    table = OptionTable.build(profile, PipelineDAG.build("1f1b", 1, 3))
    solver = GraphCutSolver(table)
    full = solver.solve()
    assert not full.capped and full.iterations > 2
    t_min = float(full.store.iteration_time[0])
    span = float(full.store.iteration_time[-1]) - t_min
    # Option gaps are >= 0.01 s, so each cut saves at least 1e-9 x t_min (less 1e-12 x t_max of rounding).
    assert step_bound(table, span, t_min) == math.ceil(span / (1e-9 * t_min - 1e-12 * (t_min + span))) + 1
    assert full.iterations <= STEPS_PER_RESOLUTION * math.ceil(span / solver.default_resolution(span)) < MAX_STEPS
    capped = solver.solve(max_steps=2)
    assert capped.capped and capped.iterations == 2
    assert capped.store.iteration_time[0] > full.store.iteration_time[0]


def test_1f1b_with_fewer_microbatches_than_stages_says_who_can_run_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = tmp_path / "p.csv"
    profile.write_text(HEADER + "\n" + GOOD + GOOD.replace("0,", "1,"), encoding="utf-8")
    argv = ["optimize", str(profile), "--stages", "2", "--microbatches", "1", "--out", str(tmp_path / "o"),
            "--blocking-power", "50"]
    assert main(argv) == 0
    assert ("note: 1 microbatches < 2 stages: bash run.sh (torch's Schedule1F1B) cannot run this shape"
            in capsys.readouterr().out)
    assert main([*argv[:5], "2", *argv[6:]]) == 0
    assert "note:" not in capsys.readouterr().out


def test_a_profile_measured_under_another_schedule_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.csv").write_text(HEADER + "\n" + GOOD, encoding="utf-8")
    (tmp_path / "meta.json").write_text('{"blocking_power": 50, "schedule": "gpipe"}', encoding="utf-8")
    assert main(optimize(tmp_path / "p.csv", tmp_path)) == 0
    assert f"note: {tmp_path / 'p.csv'} was measured under gpipe; planning 1f1b" in capsys.readouterr().out
