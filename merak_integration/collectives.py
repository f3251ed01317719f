"""Process-group backends that accept every tensor the workers put through them.

NCCL only handles CUDA tensors: a collective on a host tensor (an iteration's time, a count) in an
NCCL-only group fails with "No backend type associated with device type cpu". Workers on GPUs
therefore join ``cpu:gloo,cuda:nccl``: CUDA tensors go through NCCL, host tensors through gloo.

CI has no GPU, so gloo-on-CPU runs would never show a wrong-device collective. Setting
``PERSEUS_EMULATE_NCCL`` makes a CPU run check every collective as the CUDA path would: the group
is created with gloo, but each collective's tensors must be of a device type the CUDA backend
string has a backend for, else it raises torch's own message. ``PERSEUS_EMULATE_NCCL=1`` emulates
the backend string the workers use on GPUs; any other value is taken as the backend string to
emulate (``nccl`` reproduces an NCCL-only group).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

CUDA_BACKEND = "cpu:gloo,cuda:nccl"
"""Host tensors over gloo, CUDA tensors over NCCL."""
CPU_BACKEND = "gloo"
EMULATE_ENV = "PERSEUS_EMULATE_NCCL"

# Collectives whose tensor arguments a backend must handle (object collectives pick their own device).
_CHECKED = ("all_reduce", "all_gather", "all_gather_into_tensor", "broadcast", "reduce", "reduce_scatter_tensor",
            "all_to_all_single", "gather", "scatter")


def backend_devices(backend: str) -> set[str]:
    """Device types a backend string serves: ``cpu:gloo,cuda:nccl`` -> {cpu, cuda}; ``nccl`` -> {cuda}."""
    if ":" not in backend:
        return {"cuda"} if backend == "nccl" else {"cpu", "cuda"}
    return {pair.split(":", 1)[0].strip() for pair in backend.split(",")}


def emulated_backend(environ: dict[str, str] | os._Environ[str] = os.environ) -> str | None:
    """The CUDA backend string a CPU run checks its collectives against, or ``None``."""
    value = environ.get(EMULATE_ENV, "").strip()
    if not value or value == "0":
        return None
    return CUDA_BACKEND if value == "1" else value


def init_process_group(use_cuda: bool) -> str:
    """Join the default group with the backend string for this device; returns the string in effect.

    Groups made later with :func:`torch.distributed.new_group` inherit it.
    """
    emulate = None if use_cuda else emulated_backend()
    backend = CUDA_BACKEND if use_cuda else CPU_BACKEND
    dist.init_process_group(backend)
    if emulate is not None:
        check_collectives(emulate)
        return emulate
    return backend


def check_collectives(backend: str) -> None:
    """Make torch.distributed's collectives fail on tensors ``backend`` has no backend for."""
    devices = backend_devices(backend)
    for name in _CHECKED:
        original = getattr(dist, name)
        if getattr(original, "__perseus_checked__", None) == devices:
            continue
        inner = getattr(original, "__wrapped__", original)
        setattr(dist, name, _checked(inner, devices))


def _checked(fn: Callable[..., Any], devices: set[str]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            for tensor in value if isinstance(value, list | tuple) else (value,):
                if isinstance(tensor, torch.Tensor) and tensor.device.type not in devices:
                    raise RuntimeError(f"No backend type associated with device type {tensor.device.type}")
        return fn(*args, **kwargs)

    wrapper.__perseus_checked__ = devices  # type: ignore[attr-defined]
    return wrapper
