"""Real workers and a real server on fake NVML GPUs, one of which never reaches some supported clocks
(a power cap: ``clock_ceiling``). The rank gives up on such a clock after ``MAX_WINDOWS`` windows and
tells the server, which drops it from that stage's sweep: the sweep completes with the other clocks
and training runs the plan; with too few clocks left the job fails with the reason and training
goes on at default clocks, saying so once. Never a hang on ``wait_for_plan``."""

from __future__ import annotations

import json
import re
import sys

from workers_helpers import ROOT, ServerProcess, launch

sys.path.insert(0, str(ROOT / "tests" / "device"))
import fake_nvml
from test_workers_devices import _fake_env

from perseus.client import PerseusClient


def _sweep(tmp, job: str, gpu1: fake_nvml.FakeDevice, window: str = "0.1"):  # type: ignore[no-untyped-def]
    """Profile ``job`` (2 stages, 3 clocks) against a real server on GPU-0 and ``gpu1``, then train 2 steps:
    the run, the job as the server ended it, and the server's log."""
    server = ServerProcess(tmp)
    try:
        run = launch("gpt3-tiny", "2", "2", "--pp", "2", "--device", "nvml", "--server", server.address,
                     "--job_name", job, "--profile_frequencies", "1410,1200,1005", "--num_warmup_steps", "0",
                     "--num_prof_steps", "1", "--profile_window", window, "--max_steps", "2",
                     "--out_dir", str(tmp / "out"), extra_env=_fake_env(tmp, fake_nvml.FakeDevice(uuid="GPU-0"), gpu1),
                     timeout=300)
        with PerseusClient(server.address) as client:
            info = client.get_job(job)
    finally:
        server.stop()
    log = server.proc.stdout.read() if server.proc.stdout else ""
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr
    # Nothing left locked: the sweep's clocks and the plan's are reset at exit.
    assert all(d.locked is None for d in fake_nvml.shared_devices(tmp / "gpus.json"))
    return run, info, log


def test_a_clock_one_stage_cannot_hold_is_dropped_and_the_sweep_completes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    run, job, log = _sweep(tmp_path, "held", fake_nvml.FakeDevice(uuid="GPU-1", clock_ceiling=1300))
    gave_up = [line for line in run.stdout.splitlines() if "telling the server" in line]
    assert len(gave_up) == 1 and "rank 1 GPU 1: 1410 MHz did not hold" in gave_up[0], run.stdout[-3000:]
    assert "(read back" not in gave_up[0] or "1305" in gave_up[0]
    assert job.phase == "serving" and job.error == "", job
    assert job.sweep_note == "dropped clocks a rank could not hold under load (stage 1: 1410 MHz)"
    drops = [line for line in log.splitlines() if "dropped from the sweep" in line]
    assert len(drops) == 1 and "stage 1: 1410 MHz" in drops[0], log[-3000:]
    assert "serving plan" in run.stdout and "training goes on at default clocks" not in run.stdout
    ranks = [json.loads((tmp_path / "out" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(len(r["iterations"]) == 2 for r in ranks)


def test_a_stage_left_with_too_few_clocks_fails_the_job_and_training_goes_on(tmp_path) -> None:  # type: ignore[no-untyped-def]
    run, job, _ = _sweep(tmp_path, "capped", fake_nvml.FakeDevice(uuid="GPU-1", clock_ceiling=1100))
    assert job.phase == "failed" and "stage 1 holds 1 of the sweep's 3 clocks under load" in job.error, job
    assert job.sweep_note.endswith("(stage 1: 1410, 1200 MHz)")
    warned = [line for line in run.stdout.splitlines() if "training goes on at default clocks" in line]
    assert len(warned) == 1 and "job capped failed: profiling failed: stage 1" in warned[0], run.stdout[-3000:]
    iterations = [line for line in run.stdout.splitlines() if line.startswith("iteration")]
    assert len(iterations) == 2 and "at planned clock" not in "".join(iterations)
    rows = json.loads((tmp_path / "out" / "iterations.json").read_text())
    assert [r["plan"] for r in rows] == ["", ""]  # no plan ran, none is named


def test_a_flat_energy_counter_is_not_taken_for_a_clock_the_gpu_cannot_hold(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # GPU 1 holds every clock, but its energy counter does not advance within the run (it steps once an
    # hour here; NVML's counter moves in steps, HARDWARE.md): every window reads 0 J. That is no clock it
    # cannot hold: each retry measures over a longer window, then the job's profiling fails naming the
    # counter (a GPU whose energy cannot be measured cannot be profiled), nothing is dropped from the
    # sweep, and training goes on at default clocks, said once.
    run, job, log = _sweep(tmp_path, "flat", fake_nvml.FakeDevice(uuid="GPU-1", counter_period=3600.0), window="0.05")
    out = run.stdout
    assert "did not hold" not in out and "cannot hold" not in out and "dropped from the sweep" not in log, out[-3000:]
    # (searched in the whole output: torchrun may interleave a line of rank 0 with one of rank 1)
    retries = re.findall(r"perseus: rank (\d+) GPU (\d+): at (\d+) MHz the energy counter did not advance over "
                         r"([0-9.]+) s", out)
    assert [r[:3] for r in retries] == [("1", "1", "1410")] * 3, out[-3000:]
    spans = [float(r[3]) for r in retries]
    assert 0.05 <= spans[0] < spans[1] < spans[2], retries  # each retry measures over a longer window
    assert out.count("measuring again over") == 2, out[-3000:]
    assert out.count("in 3 windows, each longer: this GPU's energy cannot be measured; telling the server") == 1
    assert job.phase == "failed" and job.sweep_note == "", job
    assert "rank 1 (stage 1): the GPU's energy counter did not advance" in job.error and "hold" not in job.error, job
    warned = [line for line in out.splitlines() if "training goes on at default clocks without a plan" in line]
    assert len(warned) == 1 and "job flat failed: profiling failed: rank 1 (stage 1)" in warned[0], out[-3000:]
    assert len([line for line in out.splitlines() if line.startswith("iteration")]) == 2
