"""Pure pieces of the server: the sweep's next frequency, target selection and target validation."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from perseus.errors import InputError
from perseus.server.sweep import ProfilingSettings, nearest, next_frequency
from perseus.server.targets import TargetSpec, choose, pace_index, select_index


@dataclass(frozen=True)
class P:
    iteration_time: float
    energy: float


FRONTIER = [P(1.0, 100.0), P(1.1, 90.0), P(1.2, 85.0), P(1.5, 80.0)]


def _measured(energies: dict[int, float]) -> dict[int, dict[str, dict[int, tuple[float, float]]]]:
    return {f: {"forward": {0: (0.1, e)}, "backward": {0: (0.2, e)}} for f, e in energies.items()}


def test_next_frequency_walks_down_and_stops_after_rises() -> None:
    freqs = [1400, 1300, 1200, 1100, 1000, 900]
    assert next_frequency(freqs, {}, 2) == 1400
    assert next_frequency(freqs, _measured({1400: 10, 1300: 9}), 2) == 1200
    # Energy rose twice in a row (1100 -> 1000 -> 900 would be next): stop.
    assert next_frequency(freqs, _measured({1400: 10, 1300: 9, 1200: 8, 1100: 8.5, 1000: 9}), 2) is None
    # A dip resets the count.
    assert next_frequency(freqs, _measured({1400: 10, 1300: 11, 1200: 9, 1100: 10}), 2) == 1000
    assert next_frequency(freqs, _measured(dict.fromkeys(freqs, 5.0)), 2) is None
    # A kind missing at a frequency keeps the sweep there.
    partial = _measured({1400: 10})
    del partial[1400]["backward"]
    assert next_frequency(freqs, partial, 2) == 1400


def test_nearest_prefers_the_higher_clock_on_ties() -> None:
    assert nearest([1410, 1395, 1380], 1400) == 1395
    assert nearest([1410, 1390], 1400) == 1410
    assert nearest([900], 1400) == 900


def test_target_selection() -> None:
    assert select_index(FRONTIER, TargetSpec()) == 0
    assert select_index(FRONTIER, TargetSpec("max_slowdown", 1.15)) == 1
    assert select_index(FRONTIER, TargetSpec("max_slowdown", 1.2)) == 2  # boundary is inclusive
    assert select_index(FRONTIER, TargetSpec("deadline", 1.0)) == 0  # boundary is inclusive
    assert select_index(FRONTIER, TargetSpec("deadline", 9.0)) == 3
    assert select_index(FRONTIER, TargetSpec("energy_budget", 86.0)) == 2
    assert select_index(FRONTIER, TargetSpec("energy_budget", 80.0)) == 3
    assert pace_index(FRONTIER, 1.49) == 2


def test_impossible_targets_are_refused_or_clamped_with_a_note() -> None:
    with pytest.raises(InputError, match=r"target\.deadline: no plan meets the deadline 0\.5 s: the fastest plan "
                                         r"takes 1 s per iteration \(perseus target --nearest"):
        select_index(FRONTIER, TargetSpec("deadline", 0.5))
    with pytest.raises(InputError, match=r"target\.energy_budget: no plan meets the energy budget 1 J: the "
                                         r"least-energy plan uses 80 J per iteration"):
        select_index(FRONTIER, TargetSpec("energy_budget", 1.0))
    assert choose(FRONTIER, TargetSpec("deadline", 0.5, nearest=True)) == (
        0, "no plan meets the deadline 0.5 s (the fastest plan takes 1 s per iteration); running the closest plan")
    assert choose(FRONTIER, TargetSpec("energy_budget", 1.0, nearest=True)) == (
        3, "no plan meets the energy budget 1 J (the least-energy plan uses 80 J per iteration); running the "
           "closest plan")
    assert choose(FRONTIER, TargetSpec("deadline", 1.3, nearest=True)) == (2, "")  # reachable: no note
    assert TargetSpec.from_json(TargetSpec("deadline", 0.5, nearest=True).to_json()).nearest


@pytest.mark.parametrize(
    ("kwargs", "where"),
    [
        ({"kind": "warp"}, "target"),
        ({"kind": "max_slowdown", "value": 0.9}, "target.max_slowdown"),
        ({"kind": "deadline", "value": 0.0}, "target.deadline"),
        ({"kind": "energy_budget", "value": float("nan")}, "target.energy_budget"),
        ({"kind": "baseline", "value": 1.0, "baseline": "nope"}, "target.baseline.kind"),
        ({"kind": "baseline", "value": 1.0, "baseline": "global-power-limit", "power_limits": (1, 2)},
         "target.baseline.power_limits"),
        ({"kind": "baseline", "value": 1.0, "baseline": "max-frequency", "power_limits": (300,)},
         "target.baseline.power_limits"),
    ],
)
def test_bad_targets_name_the_field(kwargs: dict, where: str) -> None:
    with pytest.raises(InputError) as err:
        TargetSpec(**kwargs)
    assert err.value.where == where


def test_settings_round_trip_and_validation() -> None:
    s = ProfilingSettings(1, 2, 3, (1410, 1000))
    assert ProfilingSettings.from_json(s.to_json()) == s
    spec = TargetSpec("baseline", 1.1, "per-stage-power-limit", (250.0, 260.0))
    assert TargetSpec.from_json(spec.to_json()) == spec
    with pytest.raises(InputError, match=r"profiling\.measure_iterations"):
        ProfilingSettings(measure_iterations=0)
