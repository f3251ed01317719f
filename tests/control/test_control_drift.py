"""The drift detector (pure): never on noise, rescale when a uniform scale explains it, else re-profile."""

from __future__ import annotations

import random

import pytest

from perseus.control.drift import DriftConfig, DriftState, DriftVerdict, closest_copy, observe, rescale
from perseus.control.predict import stage_busy
from perseus.errors import InputError
from perseus.plan import FrequencyPlan, PlannedInstruction
from perseus.profile import InstructionProfile, Measurement, PipelineProfile

CFG = DriftConfig(window=10, threshold=0.15, hold=5, max_scale=1.5, max_spread=0.1)


def _feed(
    samples: list[dict[int, tuple[float, float]]], num_stages: int = 2, cfg: DriftConfig = CFG
) -> list[tuple[int, DriftVerdict]]:
    state, verdicts = DriftState(), []
    for i, ratios in enumerate(samples):
        state, v = observe(cfg, state, ratios, num_stages)
        if v is not None:
            verdicts.append((i, v))
    return verdicts


def test_noise_never_drifts() -> None:
    """At the serve defaults: 5% jitter, 1 in 10 iterations 1.6x (a hiccup) on any stage, 5000 iterations."""
    rng = random.Random(3)
    samples = [{s: (rng.gauss(1, 0.05) * (1.6 if rng.random() < 0.1 else 1), rng.gauss(1, 0.05)) for s in (0, 1)}
               for _ in range(5000)]
    assert _feed(samples, cfg=DriftConfig()) == []


def test_a_uniform_slowdown_is_rescaled() -> None:
    samples = [{0: (1.0, 1.0), 1: (1.0, 1.0)}] * 20 + [{0: (1.3, 1.25), 1: (1.01, 0.99)}] * 30
    verdicts = _feed(samples)
    i, v = verdicts[0]
    assert 20 + CFG.window // 2 + CFG.hold - 1 <= i <= 20 + CFG.window + CFG.hold
    assert v.action == "rescale"
    assert v.time_scales == (pytest.approx(1.3), 1.0) and v.energy_scales == (pytest.approx(1.25), 1.0)
    assert "stage 0" in v.note and "stage 1" not in v.note


def test_a_large_or_unsteady_change_asks_for_a_reprofile() -> None:
    assert _feed([{0: (2.2, 2.0), 1: (1.0, 1.0)}] * 30)[0][1].action == "reprofile"
    wobbly = [{0: (1.3 + (0.3 if i % 2 else -0.1), 1.3), 1: (1.0, 1.0)} for i in range(30)]
    assert _feed(wobbly)[0][1].action == "reprofile"


def test_a_straggler_copy_is_not_drift() -> None:
    """One pipeline's copy of a stage 1.2x slow, the other on the profile: the closest copy counts."""
    assert closest_copy([(1.2, 1.2), (1.01, 0.99)]) == (1.01, 0.99)
    samples = [{s: closest_copy([(1.2, 1.2), (1.0, 1.0)]) for s in (0, 1)}] * 100
    assert _feed(samples) == []


def _profile() -> PipelineProfile:
    ms = {1000: (0.010, 2.0), 800: (0.013, 1.7)}
    return PipelineProfile({(s, k): InstructionProfile(s, k, tuple(Measurement(f, t * (2 if k == "backward" else 1),
                                                                                e) for f, (t, e) in ms.items()))
                            for s in (0, 1) for k in ("forward", "backward")}, 60.0)


def test_stage_busy_and_rescale() -> None:
    plan = FrequencyPlan("1f1b", 2, 2, 0.1, 10.0, tuple(
        tuple(PlannedInstruction(k, mb, 800 if s == 1 else 1000) for k in ("forward", "backward") for mb in (0, 1))
        for s in (0, 1)))
    busy = stage_busy(_profile(), plan)
    assert busy == (pytest.approx((0.06, 8.0)), pytest.approx((0.078, 6.8)))
    scaled = rescale(_profile(), (1.5, 1.0), (1.2, 1.0))
    assert stage_busy(scaled, plan) == (pytest.approx((0.09, 9.6)), pytest.approx((0.078, 6.8)))
    bad = FrequencyPlan("1f1b", 2, 2, 0.1, 10.0, tuple(
        tuple(PlannedInstruction(k, mb, 900) for k in ("forward", "backward") for mb in (0, 1)) for _ in (0, 1)))
    assert stage_busy(_profile(), bad) is None  # an unprofiled clock predicts nothing


@pytest.mark.parametrize("field,value", [("window", 2), ("threshold", 0.0), ("hold", 0), ("max_scale", 1.1),
                                         ("max_spread", 0.0)])
def test_config_validation_names_the_flag(field: str, value: float) -> None:
    from dataclasses import replace

    with pytest.raises(InputError, match=f"--drift-{field.replace('_', '-')}"):
        replace(CFG, **{field: value}).validate()
