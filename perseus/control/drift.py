"""Drift detection: a job's stages no longer take the time and energy their profile predicts.

*Drift* is a stage whose measured busy time or busy energy per iteration differs from the plan's
prediction (under the job's profile) by more than ``threshold``, in the windowed median, for ``hold``
iterations in a row, in every data-parallel copy of the stage: one slow pipeline is a straggler, not
drift, so each iteration counts the copy closest to its prediction.

A drift a uniform per-stage scale explains (within ``max_scale`` either way, and steady: the window's
median absolute deviation below ``max_spread`` of its median) is *rescaled*: the profile's times and
energies of the drifted stages are multiplied by the measured ratios and the frontier recomputed
(thermal throttling, a slightly different GPU). Anything else needs a *re-profile* (another GPU model,
a changed model or batch: the frequency response itself changed, which no scale predicts).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from perseus.errors import InputError
from perseus.profile import Measurement, PipelineProfile
from perseus.profile.model import InstructionProfile


@dataclass(frozen=True)
class DriftConfig:
    """Thresholds and windows of the drift detector (``perseus serve --drift-*``)."""

    window: int = 20
    """Iterations per stage the median covers: noise and single slow iterations do not move it."""
    threshold: float = 0.15
    """Relative difference of time or energy that counts as drift: profiles repeat within ~5%."""
    hold: int = 10
    """Consecutive iterations the windowed difference must persist before the job counts as drifted."""
    max_scale: float = 1.5
    """Largest ratio a uniform rescale may explain; beyond it the frequency response likely changed."""
    max_spread: float = 0.1
    """Largest median absolute deviation (relative) of a window a uniform rescale may explain."""

    def validate(self) -> None:
        if not 3 <= self.window <= 1000:
            raise InputError("--drift-window", f"must be in [3, 1000] iterations, got {self.window}")
        if not 0.01 <= self.threshold <= 10.0:
            raise InputError("--drift-threshold", f"must be in [0.01, 10], got {self.threshold}")
        if not 1 <= self.hold <= 100_000:
            raise InputError("--drift-hold", f"must be in [1, 100000] iterations, got {self.hold}")
        if not 1.0 + self.threshold <= self.max_scale <= 100.0:
            raise InputError("--drift-max-scale", f"must be in [1 + --drift-threshold, 100], got {self.max_scale}")
        if not 0.0 < self.max_spread <= 1.0:
            raise InputError("--drift-max-spread", f"must be in (0, 1], got {self.max_spread}")


@dataclass(frozen=True)
class DriftVerdict:
    """What a detected drift calls for: ``rescale`` (with per-stage scales) or ``reprofile``."""

    action: str
    """``rescale`` or ``reprofile``."""
    time_scales: tuple[float, ...]
    """Per stage: measured over predicted busy time (1.0 for stages that did not drift)."""
    energy_scales: tuple[float, ...]
    note: str
    """One line saying which stages drifted and by how much."""


@dataclass(frozen=True)
class DriftState:
    """What the detector remembers about one job."""

    ratios: Mapping[int, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    """Stage -> its last ``window`` (time ratio, energy ratio), oldest first."""
    streak: int = 0
    """Consecutive iterations the windowed medians were beyond the threshold."""


def closest_copy(copies: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Of a stage's data-parallel copies' (time, energy) ratios, the one closest to the prediction."""
    return min(copies, key=lambda r: abs(math.log(r[0])) + abs(math.log(r[1])))


def observe(
    config: DriftConfig, state: DriftState, ratios: Mapping[int, tuple[float, float]], num_stages: int
) -> tuple[DriftState, DriftVerdict | None]:
    """Add one iteration's per-stage (time, energy) ratios; a verdict once drift has held ``hold`` iterations."""
    windows = dict(state.ratios)
    for stage, r in ratios.items():
        windows[stage] = (*windows.get(stage, ())[-(config.window - 1):], r)
    full = len(windows) == num_stages and all(len(w) >= config.window for w in windows.values())
    medians = {s: (statistics.median(t for t, _ in w), statistics.median(e for _, e in w)) for s, w in windows.items()}
    drifted = full and any(abs(t - 1) > config.threshold or abs(e - 1) > config.threshold for t, e in medians.values())
    state = DriftState(windows, state.streak + 1 if drifted else 0)
    if state.streak < config.hold:
        return state, None
    return replace(state, streak=0), _verdict(config, windows, medians, num_stages)


def _verdict(
    config: DriftConfig,
    windows: Mapping[int, tuple[tuple[float, float], ...]],
    medians: Mapping[int, tuple[float, float]],
    num_stages: int,
) -> DriftVerdict:
    times, energies, parts, sound = [], [], [], True
    for s in range(num_stages):
        t, e = medians[s]
        if abs(t - 1) <= config.threshold and abs(e - 1) <= config.threshold:
            times.append(1.0)
            energies.append(1.0)
            continue
        times.append(t)
        energies.append(e)
        parts.append(f"stage {s} time {t:.2f}x, energy {e:.2f}x")
        for i, med in enumerate((t, e)):
            spread = statistics.median(abs(r[i] - med) for r in windows[s]) / med
            if not (1 / config.max_scale <= med <= config.max_scale) or spread > config.max_spread:
                sound = False
    note = "; ".join(parts) + " of the profile"
    return DriftVerdict("rescale" if sound else "reprofile", tuple(times), tuple(energies), note)


def rescale(profile: PipelineProfile, time_scales: Sequence[float], energy_scales: Sequence[float]) -> PipelineProfile:
    """``profile`` with every measurement of stage ``s`` scaled by ``time_scales[s]`` and ``energy_scales[s]``."""
    instructions = {
        key: InstructionProfile(key[0], key[1], tuple(
            Measurement(m.frequency, m.time * time_scales[key[0]], m.energy * energy_scales[key[0]])
            for m in ip.measurements))
        for key, ip in profile.instructions.items()
    }
    return PipelineProfile(instructions, profile.blocking_power, profile.source)
