"""``get_gpus``: the GPUs this process measures and controls, real or simulated.

``auto`` uses NVML when an NVIDIA GPU is visible and otherwise a simulated GPU built
from a real profile (saying so once on stderr), so the same worker code runs on a
laptop and on a GPU node. A process that computes on CUDA never gets a simulated GPU
by accident: there NVML is required, and its failure is an error that says how to fix
it (simulation stays available on request). Environment variables override the defaults:
``PERSEUS_DEVICE=auto|nvml|sim``, ``PERSEUS_DEVICE_MODE=auto|control|measure``,
``PERSEUS_SIM_PROFILE=<profile.csv>``, ``PERSEUS_SIM_TIME_SCALE=<float>``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from perseus.device import safety
from perseus.device.base import GPU
from perseus.device.nvml import MODES, NoNvidiaGPU, cuda_uuids, nvml_gpus
from perseus.device.sim import SimulatedGPU
from perseus.errors import DeviceError, InputError
from perseus.profile import load_profile

BACKENDS: tuple[str, ...] = ("auto", "nvml", "sim")
DEFAULT_SIM_PROFILE = (
    Path(__file__).resolve().parents[2] / "profiles" / "gpt3-175b+a100_sxm_bf16" / "profile.csv"
)

_announced: set[str] = set()


def get_gpus(
    backend: str = "auto",
    *,
    sim_profile: str | Path | None = None,
    stage: int | None = None,
    indices: Sequence[int] | None = None,
    mode: str | None = None,
    time_scale: float | None = None,
    nvml: ModuleType | None = None,
    cuda: bool = False,
    announce_measure_only: bool = True,
) -> list[GPU]:
    """GPUs for this process.

    ``cuda``: this process computes on CUDA GPUs, so ``auto`` requires NVML (a simulated GPU
    would sleep beside the real one and report simulated energy as measured).

    ``stage`` is the pipeline stage a simulated GPU models (default 0); ``indices`` picks
    visible GPUs (simulated: which indices to create, default ``[0]``). ``mode`` applies
    to NVML GPUs (see :func:`perseus.device.nvml.nvml_gpus`); ``nvml`` injects an NVML module.
    ``announce_measure_only=False``: the caller says itself whether a GPU whose clocks cannot be
    set makes its run measure-only or is an error (one line for the user, not a notice and an error).
    """
    if backend == "auto":
        backend = os.environ.get("PERSEUS_DEVICE", "auto") or "auto"
    if backend not in BACKENDS:
        raise DeviceError(f"device backend must be one of {', '.join(BACKENDS)}, got {backend!r} (PERSEUS_DEVICE)")
    mode = mode or os.environ.get("PERSEUS_DEVICE_MODE") or "auto"
    if mode not in MODES:
        raise DeviceError(f"device mode must be one of {', '.join(MODES)}, got {mode!r} (PERSEUS_DEVICE_MODE)")
    # Signal handlers can only be installed from the main thread: do it now, not lazily.
    safety.install()
    reason = ""
    if backend in ("auto", "nvml"):
        try:
            # Beside CUDA, the NVML device is the one whose UUID CUDA reports (device order differs).
            uuids = cuda_uuids(indices if indices is not None else [0]) if cuda else None
            gpus: list[GPU] = list(nvml_gpus(nvml, indices=indices, mode=mode, cuda_uuids=uuids))
        except NoNvidiaGPU as exc:
            if cuda:
                raise DeviceError(
                    f"training runs on CUDA but NVML is unusable: {exc}; Perseus measures and sets clocks "
                    "through NVML (install nvidia-ml-py and the NVIDIA driver's libnvidia-ml.so.1), or pass "
                    "--device sim to simulate the GPUs on purpose"
                ) from None
            if backend == "nvml":
                raise DeviceError(
                    f"no NVIDIA GPU: {exc}; to run without one use the simulated backend (PERSEUS_DEVICE=sim)"
                ) from None
            reason = str(exc)
        else:
            for gpu in gpus:
                if announce_measure_only and not gpu.can_control and mode != "measure":
                    _announce(f"perseus: GPU {gpu.index} is measure-only: {gpu.control_problem}")
            return gpus
    sims = sim_gpus(sim_profile, stage=stage, indices=indices, time_scale=time_scale)
    if backend == "auto":
        _announce(f"perseus: no NVIDIA GPU found ({reason}); using {sims[0].name}")
    return list(sims)


def sim_gpus(
    sim_profile: str | Path | None = None,
    *,
    stage: int | None = None,
    indices: Sequence[int] | None = None,
    time_scale: float | None = None,
    blocking_power: float | None = None,
) -> list[SimulatedGPU]:
    """Simulated GPUs modelled on a profile (default: GPT-3 175B on A100, stage 0).

    ``blocking_power`` (watts) defaults to the ``meta.json`` beside the profile.
    """
    path = Path(sim_profile or os.environ.get("PERSEUS_SIM_PROFILE") or DEFAULT_SIM_PROFILE)
    if time_scale is None:
        raw = os.environ.get("PERSEUS_SIM_TIME_SCALE", "1")
        try:
            time_scale = float(raw)
        except ValueError:
            raise InputError("PERSEUS_SIM_TIME_SCALE", f"must be a positive number, got {raw!r}") from None
    profile = load_profile(path, blocking_power=blocking_power)
    gpu_model = _meta_gpu_name(path)
    stage = 0 if stage is None else stage
    label = path.parent.name if path.name == "profile.csv" else path.name
    return [
        SimulatedGPU(
            profile,
            stage=stage,
            index=i,
            time_scale=time_scale,
            name=f"Simulated {gpu_model} (profile {label}, stage {stage})",
        )
        for i in (indices if indices is not None else [0])
    ]


def _meta_gpu_name(profile_path: Path) -> str:
    try:
        meta = json.loads((profile_path.parent / "meta.json").read_text())
        return str(meta.get("gpu") or "GPU")
    except (OSError, ValueError, AttributeError):
        return "GPU"


def _announce(line: str) -> None:
    """Print a backend notice once per process (workers call get_gpus more than once)."""
    if line not in _announced:
        print(line, file=sys.stderr)
        _announced.add(line)
