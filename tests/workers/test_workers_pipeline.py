"""Real torchrun workers on gloo: gradients equal a single-process run's; local profiling sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from workers_helpers import launch

from merak_integration.data import batches
from merak_integration.models import get_config
from merak_integration.pipeline import PipelineSpec, normalize_schedule, reference_gradients
from perseus.profile import load_profile


def _check_gradients(tmp_path: Path, model: str, mb: int, nmb: int, pp: int, schedule: str, rtol: float) -> None:
    out = tmp_path / "grads"
    run = launch(model, str(mb), str(nmb), "--pp", str(pp), "--train_schedule", schedule, "--grad_dump", str(out))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    got: dict[str, torch.Tensor] = {}
    for f in sorted(out.glob("grads-stage*.pt")):
        got.update(torch.load(f))
    spec = PipelineSpec(model, mb, nmb, pp, *normalize_schedule(schedule, None))
    x, y = next(batches(get_config(model), mb * nmb, seed=0))
    want = reference_gradients(spec, x, y)
    assert set(got) == set(want)
    for name, g in want.items():
        scale = g.abs().max().item() + 1e-12
        assert (got[name] - g).abs().max().item() <= rtol * scale, name


def test_gradients_equal_single_process_1f1b(tmp_path: Path) -> None:
    _check_gradients(tmp_path, "gpt3-tiny", 2, 4, 2, "1f1b", 1e-5)


def test_gradients_equal_single_process_interleaved(tmp_path: Path) -> None:
    _check_gradients(tmp_path, "bert-tiny", 2, 4, 2, "interleaved", 1e-5)


@pytest.mark.parametrize("schedule", ["zb", pytest.param("zbv", marks=pytest.mark.slow), "dualpipev"])
def test_gradients_equal_single_process_zero_bubble(tmp_path: Path, schedule: str) -> None:
    # Split backwards (input gradient now, weight gradient later) and, for zbv and dualpipev, a V
    # that puts the first and the last layers on rank 0: the same gradients as one process.
    _check_gradients(tmp_path, "gpt3-tiny", 2, 4, 2, schedule, 1e-5)


@pytest.mark.slow
def test_gradients_equal_with_data_parallel_replicas(tmp_path: Path) -> None:
    # pp=2 x dp=2: every stage averages its gradients with the other replica's (different data).
    out = tmp_path / "grads"
    run = launch("gpt3-tiny", "2", "4", "--pp", "2", "--dp", "2", "--grad_dump", str(out))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    got: dict[str, torch.Tensor] = {}
    for f in sorted(out.glob("grads-stage*.pt")):
        got.update(torch.load(f))
    spec = PipelineSpec("gpt3-tiny", 2, 4, 2)
    refs = [reference_gradients(spec, *next(batches(get_config("gpt3-tiny"), 8, seed=7919 * d))) for d in range(2)]
    for name, g in got.items():
        want = (refs[0][name] + refs[1][name]) / 2
        assert (g - want).abs().max().item() <= 1e-5 * (want.abs().max().item() + 1e-12), name


@pytest.mark.slow
def test_gradients_equal_single_process_gpipe_resnet(tmp_path: Path) -> None:
    # BatchNorm over 8 samples is well conditioned enough for a tight tolerance.
    _check_gradients(tmp_path, "wide-resnet-tiny", 8, 4, 2, "gpipe", 1e-4)


def test_local_profile_reproduces_device_profile(tmp_path: Path) -> None:
    scale = 0.5
    run = launch(
        "gpt3-tiny", "2", "4", "--pp", "2", "--device", "sim", "--profile", "true",
        "--profile_frequencies", "1410,1200,1005", "--num_warmup_steps", "1", "--num_prof_steps", "2",
        "--sim_time_scale", str(scale), "--profile_dir", str(tmp_path),
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    folder = tmp_path / "gpt3-tiny+uniform+pp2+mbs2"
    measured = load_profile(folder / "profile.csv")
    device = load_profile(Path(__file__).resolve().parents[2] / "profiles/gpt3-175b+a100_sxm_bf16/profile.csv")
    assert measured.num_stages == 2 and measured.frequencies() == (1410, 1200, 1005)
    for p in measured:
        for m in p.measurements:
            want = device[(p.stage, p.instruction)].at(m.frequency)
            assert m.time == pytest.approx(want.time * scale, rel=0.05)
            assert m.energy == pytest.approx(want.energy * scale, rel=0.02)
    assert measured.blocking_power == pytest.approx(device.blocking_power, rel=0.02)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["partition"] == [0, 5, 10] and meta["model"] == "gpt3-tiny"
