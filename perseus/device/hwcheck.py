"""Hardware acceptance check for a GPU node the user owns: ``bash scripts/gpu_check.sh [--measure-only]``.

Each step prints ``PASS``/``FAIL``/``SKIP`` with what it measured; the exit status is non-zero if
any step failed. ``--measure-only`` changes nothing on the GPU (for machines that are not yours):
it reads NVML, measures how often the energy counter updates, and trains at default clocks on
CUDA/NCCL in measure-only mode. The full check also locks clocks (latency, read-back under load),
sets and restores the power limit, restores after a SIGKILL through ``perseus devices --reset``,
profiles one stage and trains with a plan, reporting the fraction of instructions that ran at their
planned clock.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from perseus.device.nvml import NVMLGPU, nvml_gpus
from perseus.errors import PerseusError

ROOT = Path(__file__).resolve().parents[2]
_results: list[tuple[str, str]] = []


def step(name: str, fn: Callable[[], str]) -> None:
    """Run one check; ``fn`` returns what it measured, raises to fail, or returns "SKIP: why"."""
    try:
        detail = fn()
        verdict = "SKIP" if detail.startswith("SKIP") else "PASS"
        detail = detail.removeprefix("SKIP: ")
    except (PerseusError, AssertionError, OSError, subprocess.SubprocessError, ValueError) as exc:
        verdict, detail = "FAIL", str(exc) or type(exc).__name__
    _results.append((name, verdict))
    print(f"{verdict:4}  {name}: {detail}", flush=True)


@contextmanager
def gpu_load(index: int) -> Iterator[None]:
    """Keep the GPU busy (an idle GPU reads its idle clock, not the locked one)."""
    import torch

    stop = threading.Event()

    def spin() -> None:
        a = torch.randn(4096, 4096, device=f"cuda:{index}")
        while not stop.is_set():
            a = a @ a
            a /= a.norm()
            torch.cuda.synchronize(index)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        time.sleep(0.5)
        yield
    finally:
        stop.set()
        thread.join()


def nvml_reads(gpu: NVMLGPU) -> str:
    freqs = gpu.supported_frequencies()
    assert freqs, "no supported graphics clocks"
    return (f"{gpu.name} {gpu.uuid}: {len(freqs)} clocks {freqs[-1]}-{freqs[0]} MHz, "
            f"{gpu.power():.1f} W, energy counter {'yes' if gpu.supports_energy_counter else 'no'}, "
            f"clock now {gpu.current_frequency()} MHz")


def counter_period(gpu: NVMLGPU, seconds: float = 3.0) -> str:
    if not gpu.supports_energy_counter:
        return "SKIP: no energy counter (pre-Volta); energy is integrated from polled power"
    changes, last = [], gpu.energy()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        now = gpu.energy()
        if now != last:
            changes.append(time.monotonic())
            last = now
    assert len(changes) >= 2, f"the counter changed {len(changes)} times in {seconds:g} s"
    gaps = [b - a for a, b in itertools.pairwise(changes)]
    return f"updates every {1000 * statistics.median(gaps):.1f} ms (median of {len(gaps)})"


def clock_lock(gpu: NVMLGPU) -> str:
    freqs = gpu.supported_frequencies()
    target = freqs[len(freqs) // 2]
    with gpu_load(gpu.index):
        start = time.perf_counter()
        gpu.lock_frequency(target)
        call = time.perf_counter() - start
        seen = gpu.wait_for_frequency(target, timeout=2.0)
        ramp = time.perf_counter() - start
        gpu.unlock_frequency()
    assert seen == target, f"locked {target} MHz, read back {seen} MHz under load after 2 s"
    return f"lock call {1000 * call:.1f} ms, clock read back {target} MHz after {1000 * ramp:.1f} ms"


def power_limit(gpu: NVMLGPU) -> str:
    low, high = gpu.power_limit_range()
    before = gpu._read_power_limit()
    gpu.set_power_limit((low + high) / 2)
    gpu.reset_power_limit()
    after = gpu._read_power_limit()
    assert after == before, f"power limit {before} W before, {after} W after restoring"
    return f"set {(low + high) / 2:g} W and restored {after} W (range {low:g}-{high:g} W)"


KILLED = (
    "import os, signal\nfrom perseus.device import nvml_gpus\n"
    "gpu = nvml_gpus(indices=[{index}], mode='control')[0]\n"
    "gpu.lock_frequency(min(gpu.supported_frequencies()))\nos.kill(os.getpid(), signal.SIGKILL)\n"
)


def restore_after_sigkill(gpu: NVMLGPU) -> str:
    child = subprocess.run([sys.executable, "-c", KILLED.format(index=gpu.index)], capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, f"child exited {child.returncode}: {child.stderr.strip()[-300:]}"
    reset = subprocess.run([sys.executable, "-m", "perseus", "devices", "--reset"], capture_output=True, text=True)
    assert reset.returncode == 0 and "restored" in reset.stdout, reset.stdout + reset.stderr
    with gpu_load(gpu.index):
        now = gpu.current_frequency()
    assert now != min(gpu.supported_frequencies()), f"clock still at {now} MHz after perseus devices --reset"
    return reset.stdout.strip().splitlines()[0]


def run_sh(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(["bash", str(ROOT / "run.sh"), *args], capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, (run.stdout + run.stderr).strip()[-800:]
    return run


def profile_and_plan(gpu: NVMLGPU, work: Path) -> str:
    freqs = gpu.supported_frequencies()
    picks = ",".join(str(f) for f in (freqs[0], freqs[len(freqs) // 3], freqs[2 * len(freqs) // 3]))
    run_sh("gpt3-small", "2", "4", "--pp", "1", "--device", "nvml", "--profile", "true",
           "--profile_frequencies", picks, "--profile_dir", str(work / "profiles"))
    (profile,) = (work / "profiles").glob("*/profile.csv")
    subprocess.run([sys.executable, "-m", "perseus", "optimize", str(profile), "--stages", "1", "--microbatches",
                    "4", "--out", str(work / "plan")], check=True, capture_output=True, text=True)
    plans = sorted((work / "plan" / "plans").glob("*.json"))
    run_sh("gpt3-small", "2", "4", "--pp", "1", "--device", "nvml", "--plan", str(plans[len(plans) // 2]),
           "--max_steps", "20", "--out_dir", str(work / "train"))
    record = json.loads((work / "train" / "rank0.json").read_text())
    fraction = record["fraction_at_planned_clock"]
    return f"profiled {picks} MHz; trained 20 steps with plan {plans[len(plans) // 2].stem}: " \
           f"{100 * fraction:.1f}% of instructions ran at their planned clock"


def measure_only_training(count: int, work: Path) -> str:
    pp = 2 if count >= 2 else 1
    run = run_sh("gpt3-small", "2", "4", "--pp", str(pp), "--device", "nvml", "--measure_only", "--max_steps", "5",
                 "--out_dir", str(work / "measure"))
    rows = json.loads((work / "measure" / "iterations.json").read_text())
    assert all(r["measure_only"] for r in rows) and "measure-only" in run.stdout
    return f"{pp} stage(s) on CUDA/{'NCCL' if pp > 1 else 'one GPU'}, 5 iterations, last " \
           f"{rows[-1]['time']:.3f} s {rows[-1]['energy']:.1f} J at default clocks"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bash scripts/gpu_check.sh", description=__doc__)
    parser.add_argument("--measure-only", action="store_true", help="change no GPU setting (not your machine)")
    parser.add_argument("--gpu", type=int, default=0, help="visible GPU index to check (default 0)")
    args = parser.parse_args(argv)
    mode = "measure" if args.measure_only else "control"
    try:
        gpus = nvml_gpus(mode=mode)
    except PerseusError as exc:
        print(f"FAIL  NVML: {exc}")
        return 1
    gpu = gpus[args.gpu]
    print(f"perseus gpu_check ({'measure-only: no GPU setting is changed' if args.measure_only else 'full'}), "
          f"{len(gpus)} GPU(s), checking GPU {args.gpu}", flush=True)
    with tempfile.TemporaryDirectory(prefix="perseus-gpu-check-") as tmp:
        work = Path(tmp)
        step("NVML reads", lambda: nvml_reads(gpu))
        step("energy counter update period", lambda: counter_period(gpu))
        if not args.measure_only:
            step("clock lock latency and read-back", lambda: clock_lock(gpu))
            step("power limit set and restore", lambda: power_limit(gpu))
            step("restore after SIGKILL", lambda: restore_after_sigkill(gpu))
            step("1-stage profile and training with a plan", lambda: profile_and_plan(gpu, work))
        step("training at default clocks (measure-only)", lambda: measure_only_training(len(gpus), work))
    failed = [name for name, verdict in _results if verdict == "FAIL"]
    print(f"{len(_results) - len(failed)}/{len(_results)} steps passed" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
