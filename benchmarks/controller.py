"""Cost of FrequencyController requests to the caller, and lag until the clock is applied.

The GPU is simulated with a 10 ms clock change (like NVML's 10-20 ms), so the numbers say
what a training loop would see on a real GPU. Run: .venv/bin/python benchmarks/controller.py
"""

from __future__ import annotations

import argparse
import statistics
import time

from perseus.device import DEFAULT_SIM_PROFILE, FrequencyController, SimulatedGPU
from perseus.profile import load_profile


def percentiles(samples: list[float]) -> tuple[float, float, float, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return statistics.fmean(ordered), pick(0.5), pick(0.99), ordered[-1]


def caller_cost(ctl: FrequencyController, freqs: list[int], n: int, distinct: bool) -> list[float]:
    """Microseconds per set_frequency call."""
    samples = []
    for i in range(n):
        f = freqs[i % len(freqs)] if distinct else freqs[0]
        start = time.perf_counter_ns()
        ctl.set_frequency(f)
        samples.append((time.perf_counter_ns() - start) / 1000)
        if i % 50 == 0:
            time.sleep(0.0005)  # a training loop does work between requests
    ctl.flush(timeout=30)
    return samples


def lag(ctl: FrequencyController, freqs: list[int], n: int, gap: float) -> tuple[list[float], list[float]]:
    """Milliseconds from request to applied: idle GPU (one request) and busy GPU (request mid-change)."""
    idle, busy = [], []
    for i in range(n):
        start = time.perf_counter()
        ctl.set_frequency(freqs[(2 * i) % len(freqs)])
        ctl.flush()
        idle.append((time.perf_counter() - start) * 1000)
        ctl.set_frequency(freqs[(2 * i + 1) % len(freqs)])
        time.sleep(gap)  # the previous change is in flight when the next request arrives
        start = time.perf_counter()
        ctl.set_frequency(freqs[(2 * i + 3) % len(freqs)])
        ctl.flush()
        busy.append((time.perf_counter() - start) * 1000)
    return idle, busy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lock-ms", type=float, default=10.0, help="time one clock change takes (ms)")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--lag-trials", type=int, default=30)
    args = parser.parse_args()

    gpu = SimulatedGPU(load_profile(DEFAULT_SIM_PROFILE), lock_latency=args.lock_ms / 1000)
    freqs = gpu.supported_frequencies()
    rows = []
    with FrequencyController(gpu) as ctl:
        for label, distinct in (("set_frequency, new clock each call", True), ("set_frequency, same clock", False)):
            mean, p50, p99, worst = percentiles(caller_cost(ctl, freqs, args.requests, distinct))
            rows.append((label, "us", mean, p50, p99, worst))
        ctl.reset()  # the next request must differ from the latest one, or it is coalesced away
        ctl.flush()
        applied_before = ctl.stats.applied
        requests_before = ctl.stats.requests
        idle, busy = lag(ctl, freqs, args.lag_trials, gap=args.lock_ms / 2000)
        rows.append(("lag to applied, GPU idle", "ms", *percentiles(idle)))
        rows.append(("lag to applied, change in flight", "ms", *percentiles(busy)))
        stats = ctl.stats
    start = time.perf_counter()
    for f in freqs[:10]:
        gpu.lock_frequency(f)
    sync_ms = (time.perf_counter() - start) * 100
    gpu.unlock_frequency()
    rows.append(("blocking lock_frequency (for comparison)", "ms", sync_ms, sync_ms, sync_ms, sync_ms))

    print(f"FrequencyController on a simulated GPU whose clock change takes {args.lock_ms:g} ms")
    print(f"{'measurement':<42} {'unit':>4} {'mean':>9} {'p50':>9} {'p99':>9} {'max':>9}")
    for label, unit, *values in rows:
        print(f"{label:<42} {unit:>4} " + " ".join(f"{v:9.2f}" for v in values))
    print(
        f"requests: {stats.requests}, coalesced as duplicates: {stats.coalesced}, "
        f"clock changes applied: {stats.applied} (lag phase: {stats.requests - requests_before} requests, "
        f"{stats.applied - applied_before} applied)"
    )


if __name__ == "__main__":
    main()
