"""``python -m perseus.device.selfcheck``: lock a few clocks, measure a fixed workload, unlock.

On a real GPU with torch the workload is a fixed number of matrix multiplies; on a
simulated GPU it is a fixed number of profiled forward/backward instructions. A lower
clock should take longer; the table shows time, energy, average power and the clock the
GPU reported mid-run. Exit status 0 when every check passed, 1 otherwise, 2 on errors.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from perseus.device.base import GPU
from perseus.device.controller import FrequencyController
from perseus.device.discovery import get_gpus
from perseus.device.monitor import EnergyMonitor
from perseus.device.sim import SimulatedGPU
from perseus.errors import PerseusError


@dataclass(frozen=True)
class Row:
    requested: int | None
    observed: int | None
    time: float
    energy: float
    units: int


def pick_frequencies(supported: Sequence[int], count: int) -> list[int]:
    """``count`` clocks from the maximum down to 60% of it (lower ones are uselessly slow)."""
    top = supported[0]
    targets = [top * (1 - 0.4 * i / max(1, count - 1)) for i in range(count)]
    picked: list[int] = []
    for t in targets:
        f = min(supported, key=lambda s: abs(s - t))
        if f not in picked:
            picked.append(f)
    return picked


def make_workload(gpu: GPU) -> tuple[str, Callable[[], None]]:
    """One unit of fixed work for this GPU, and what it is."""
    if isinstance(gpu, SimulatedGPU):
        stage = gpu.stage

        def instruction_pair() -> None:
            for kind in ("forward", "backward"):
                gpu.on_instruction_begin(stage, kind)
                gpu.on_instruction_end()

        return f"forward+backward of stage {stage} (simulated)", instruction_pair
    try:
        import torch
    except ImportError:
        return "idle 10 ms (torch not installed: the GPU is not loaded)", lambda: time.sleep(0.01)
    if not torch.cuda.is_available():
        return "idle 10 ms (torch with CUDA not found: the GPU is not loaded)", lambda: time.sleep(0.01)
    device = torch.device("cuda", gpu.index)
    a = torch.randn(4096, 4096, device=device, dtype=torch.float16)
    b = torch.randn(4096, 4096, device=device, dtype=torch.float16)

    def matmuls() -> None:
        for _ in range(8):
            torch.mm(a, b)

    return "8 fp16 4096x4096 matmuls (torch)", matmuls


def measure(gpu: GPU, monitor: EnergyMonitor, work: Callable[[], None], units: int, requested: int | None) -> Row:
    monitor.begin_window("run")
    observed = None
    for i in range(units):
        work()
        if i == units // 2:
            observed = gpu.current_frequency()  # mid-run, while loaded
    window = monitor.end_window("run")
    return Row(requested, observed, window.time, window.total_energy, units)


def calibrate(gpu: GPU, work: Callable[[], None], seconds: float) -> int:
    """How many units of work take about ``seconds`` at the current clock."""
    work()
    gpu.synchronize()
    start, units = time.perf_counter(), 0
    while time.perf_counter() - start < seconds / 4:
        work()
        units += 1
        gpu.synchronize()
    return max(1, round(units * 4))


def run(args: argparse.Namespace) -> int:
    (gpu,) = get_gpus(args.backend, indices=[args.gpu])
    print(f"GPU {gpu.index}: {gpu.name}")
    label, work = make_workload(gpu)
    monitor = EnergyMonitor([gpu])
    rows: list[Row] = []
    with FrequencyController(gpu) as ctl:
        freqs = pick_frequencies(gpu.supported_frequencies(), args.frequencies) if gpu.can_control else []
        if not gpu.can_control:
            print(f"measure-only: {gpu.control_problem}")
        if freqs:
            ctl.set_frequency(freqs[0])
            ctl.flush()
        units = calibrate(gpu, work, args.seconds)
        print(f"workload: {units} x {label}")
        targets: list[int | None] = list(freqs) or [None]
        for f in targets:
            if f is not None:
                ctl.set_frequency(f)
                ctl.flush()
            rows.append(measure(gpu, monitor, work, units, f))
        if ctl.error is not None:
            print(f"clock control failed: {ctl.error}")
    after = gpu.current_frequency()
    print(f"{'requested MHz':>13} {'observed MHz':>12} {'time s':>9} {'energy J':>10} {'avg W':>8}")
    for r in rows:
        req = "default" if r.requested is None else str(r.requested)
        obs = "?" if r.observed is None else str(r.observed)
        print(f"{req:>13} {obs:>12} {r.time:9.3f} {r.energy:10.2f} {r.energy / r.time:8.1f}")
    print(f"after unlock the GPU reports {after if after is not None else '?'} MHz")
    checks = [("energy is positive in every window", all(r.energy > 0 for r in rows))]
    if len(rows) > 1:
        checks.append(("lowest clock is slower than the highest", rows[-1].time > rows[0].time))
        if all(r.observed is not None for r in rows):
            near = all(abs(r.observed - r.requested) <= 30 for r in rows if r.requested and r.observed)
            checks.append(("GPU ran at (about) the locked clock", near))
    for name, ok in checks:
        print(f"{'OK  ' if ok else 'FAIL'} {name}")
    return 0 if all(ok for _, ok in checks) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perseus.device.selfcheck", description=__doc__)
    parser.add_argument("--backend", choices=("auto", "nvml", "sim"), default="auto")
    parser.add_argument("--gpu", type=int, default=0, help="visible GPU index (default 0)")
    parser.add_argument("--seconds", type=float, default=1.0, help="workload length at the highest clock")
    parser.add_argument("--frequencies", type=int, default=3, help="how many clocks to try (default 3)")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except PerseusError as exc:
        print(f"perseus: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
