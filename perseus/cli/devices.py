"""``perseus devices``: list the GPUs Perseus would measure and control."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from perseus.device import GPU


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "devices",
        help="list GPUs with their clocks, power limits and energy counters",
        description=(
            "List the GPUs this process sees (after CUDA_VISIBLE_DEVICES) with supported graphics "
            "clocks, power limit range, energy-counter support and whether Perseus may set clocks. "
            "Without an NVIDIA GPU, shows the simulated GPU Perseus would use instead."
        ),
    )
    parser.add_argument(
        "--backend",
        choices=("auto", "nvml", "sim"),
        default="auto",
        help="auto: NVML if an NVIDIA GPU is found, else simulated (default; env PERSEUS_DEVICE)",
    )
    parser.add_argument(
        "--sim-profile",
        metavar="CSV",
        help="profile the simulated GPU is modelled on (default: GPT-3 175B on A100; env PERSEUS_SIM_PROFILE)",
    )
    parser.add_argument(
        "--blocking-power",
        type=float,
        metavar="WATTS",
        help="blocking power of the simulated GPU (default: meta.json beside the profile)",
    )
    parser.add_argument(
        "--reset",
        action="store_true",
        help="undo the clock locks and power limits recorded in the per-GPU state files by Perseus "
        "processes that are gone (a killed worker); needs root or CAP_SYS_ADMIN",
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="with --reset: unlock clocks and restore default power limits on every visible NVIDIA GPU, "
        "recorded or not",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from perseus.device import NoNvidiaGPU, nvml_gpus, sim_gpus
    from perseus.errors import DeviceError

    backend = args.backend if args.backend != "auto" else os.environ.get("PERSEUS_DEVICE", "auto")
    if backend not in ("auto", "nvml", "sim"):
        raise DeviceError(f"PERSEUS_DEVICE must be auto, nvml or sim, got {backend!r}")
    if args.all and not args.reset:
        raise DeviceError("--all only goes with --reset")
    if args.reset:
        if backend == "sim":
            print("Simulated GPUs keep no state between processes; nothing to reset.")
            return 0
        if not args.all:
            return _reset_recorded()
        try:
            gpus = nvml_gpus(mode="control")
        except NoNvidiaGPU as exc:
            raise DeviceError(f"no NVIDIA GPU to reset: {exc}") from None
        return _reset(gpus)
    if backend in ("auto", "nvml"):
        try:
            listed: Sequence[GPU] = nvml_gpus(mode=os.environ.get("PERSEUS_DEVICE_MODE") or "auto")
        except NoNvidiaGPU as exc:
            if backend == "nvml":
                raise DeviceError(f"no NVIDIA GPU: {exc}") from None
            print(f"No NVIDIA GPU found: {exc}.")
            print("Perseus would use this simulated GPU instead (choose another with --sim-profile):")
        else:
            print(_table(listed))
            return 0
    print(_table(sim_gpus(args.sim_profile, blocking_power=args.blocking_power)))
    return 0


def _reset_recorded() -> int:
    from perseus.device import statefile
    from perseus.device.nvml import NoNvidiaGPU, reset_recorded
    from perseus.errors import DeviceError

    live = [c for c in statefile.all_changes() if c.owner_alive]
    try:
        lines = reset_recorded()
    except NoNvidiaGPU as exc:
        raise DeviceError(f"no NVIDIA GPU to reset: {exc}") from None
    for line in lines:
        print(line)
    for changes in live:
        print(f"left alone (its process is running): {changes.describe()}")
    if not lines and not live:
        print(f"Nothing to reset: no changes recorded in {statefile.state_dir()} "
              "(use --reset --all to reset every visible GPU anyway).")
    return 1 if any(line.startswith("could not") for line in lines) else 0


def _reset(gpus: Sequence[GPU]) -> int:
    for gpu in gpus:
        gpu.unlock_frequency()
        gpu.reset_power_limit()
        print(f"GPU {gpu.index} ({gpu.name}): clocks unlocked, power limit back to default")
    return 0


def _table(gpus: Sequence[GPU]) -> str:
    header = ("GPU", "name", "graphics clocks", "power limit", "energy counter", "clock control")
    rows = [header]
    for gpu in gpus:
        freqs = gpu.supported_frequencies()
        clocks = f"{freqs[-1]}-{freqs[0]} MHz ({len(freqs)})" if freqs else "unknown"
        try:
            low, high = gpu.power_limit_range()
            limit = f"{low:g}-{high:g} W"
        except Exception:  # NotSupported on some boards; listing must still work
            limit = "not supported"
        counter = "yes" if gpu.supports_energy_counter else "no (integrates polled power)"
        control = "yes" if gpu.can_control else f"no: {gpu.control_problem}"
        rows.append((str(gpu.index), gpu.name, clocks, limit, counter, control))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1] for row in rows]
    return "\n".join(lines)
