"""Profile loading: every kind of bad input is one InputError naming file and line."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from perseus.cli.main import main
from perseus.errors import InputError
from perseus.profile import Measurement, load_profile, lower_convex_hull, pareto_options

from .conftest import A100, write_csv

GOOD = [
    "0,forward,1000,0.10,10",
    "0,backward,1000,0.20,20",
    "1,forward,1000,0.10,10",
    "1,backward,1000,0.20,20",
]


def test_loads_shipped_profile_with_blocking_power_from_meta() -> None:
    profile = load_profile(A100)
    assert profile.num_stages == 8
    assert profile.blocking_power == pytest.approx(83.64)
    assert profile[(7, "backward")].max_frequency == 1410
    assert len(profile[(0, "forward")].measurements) == 38


@pytest.mark.parametrize(
    ("rows", "header", "line", "fragment"),
    [
        (GOOD, "stage,instruction,frequency,time", 1, "missing column(s) energy"),
        (["0,forward,1000,abc,10", *GOOD[1:]], None, 2, "time must be a number, got 'abc'"),
        (["0,forward,1000,-0.1,10", *GOOD[1:]], None, 2, "time must be a positive number"),
        (["0,forward,1000,0.1,0", *GOOD[1:]], None, 2, "energy must be a positive number"),
        (["0,forward,x,0.1,1", *GOOD[1:]], None, 2, "frequency must be an integer"),
        (["0,sideways,1000,0.1,1", *GOOD[1:]], None, 2, "instruction must be one of forward, backward"),
        ([*GOOD, "1,backward,1000,0.3,30"], None, 6, "duplicate measurement for stage 1 backward at 1000 MHz"),
    ],
)
def test_bad_rows_name_file_and_line(
    tmp_path: Path, rows: list[str], header: str | None, line: int, fragment: str
) -> None:
    path = write_csv(tmp_path, rows, **({"header": header} if header else {}))
    with pytest.raises(InputError) as info:
        load_profile(path, blocking_power=50)
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert fragment in str(info.value)


def test_missing_instruction_and_missing_stage(tmp_path: Path) -> None:
    path = write_csv(tmp_path, GOOD[:3])
    with pytest.raises(InputError, match="stage 1 has no backward measurements"):
        load_profile(path, blocking_power=50)
    path = write_csv(tmp_path, GOOD)
    with pytest.raises(InputError, match=r"stage 2 is missing: profile has 2 stage\(s\) but 3 were asked for"):
        load_profile(path, blocking_power=50, num_stages=3)


def test_missing_blocking_power_says_what_to_pass(tmp_path: Path) -> None:
    path = write_csv(tmp_path, GOOD)
    with pytest.raises(InputError, match="pass --blocking-power WATTS"):
        load_profile(path)


def test_cli_prints_one_line_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_csv(tmp_path, ["0,forward,1000,nan,10", *GOOD[1:]])
    code = main(["optimize", str(path), "--stages", "2", "--microbatches", "2",
                 "--blocking-power", "50", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"perseus: error: {path}:2: time must be a positive number")
    assert not (tmp_path / "out").exists()


def test_pareto_drops_noisy_points_and_never_goes_backwards() -> None:
    ms = [
        Measurement(1400, 1.00, 300.0),
        Measurement(1300, 0.99, 290.0),  # noise: faster and cheaper than 1400 -> 1400 is dominated
        Measurement(1200, 1.10, 295.0),  # slower and costlier than 1300 -> dominated
        Measurement(1100, 1.20, 250.0),
        Measurement(1000, 1.40, 240.0),
    ]
    kept = pareto_options(ms, blocking_power=0.0)
    assert [m.frequency for m in kept] == [1300, 1100, 1000]
    times = [m.time for m in kept]
    costs = [m.effective_energy(0.0) for m in kept]
    assert times == sorted(times) and costs == sorted(costs, reverse=True)
    # Blocking power changes what counts as cheap: effective energy = energy - P * time, so at
    # 100 W the slower 1200 MHz (295 - 110 = 185 J) beats 1300 MHz (290 - 99 = 191 J) and is kept.
    assert [m.frequency for m in pareto_options(ms, blocking_power=100.0)] == [1300, 1200, 1100, 1000]
    hull = lower_convex_hull(kept, 0.0)
    assert [m.frequency for m in hull] == [1300, 1100, 1000]


def test_pareto_on_real_profile_is_monotone(a100_profile) -> None:  # type: ignore[no-untyped-def]
    for inst in a100_profile:
        kept = pareto_options(inst.measurements, a100_profile.blocking_power)
        assert len(kept) >= 2
        for a, b in itertools.pairwise(kept):
            assert a.time < b.time
            assert a.effective_energy(83.64) > b.effective_energy(83.64)
