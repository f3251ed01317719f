"""A worker killed mid-run restores the clocks and power limits it changed (real subprocesses)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent

WORKER = textwrap.dedent(
    """
    import signal, sys, time
    sys.path.insert(0, {here!r})
    import fake_nvml
    from perseus.device import FrequencyController, nvml_gpus

    journal, scenario = sys.argv[1], sys.argv[2]
    if scenario == "user-handler":
        def handler(signum, frame):
            with open(journal, "a") as f:
                f.write("user handler\\n")
            sys.exit(3)
        signal.signal(signal.SIGTERM, handler)
    (device,) = fake_nvml.configure(journal=journal)
    device.limit_mw = 300000      # an administrator's limit, to be put back
    device.lock_delay = 0.005     # NVML-like: changes take a few ms
    (gpu,) = nvml_gpus(fake_nvml, can_admin=True, environ={{}})
    ctl = FrequencyController(gpu)
    ctl.set_frequency(1005)
    ctl.flush()
    gpu.set_power_limit(200)
    if scenario == "exception":
        raise RuntimeError("worker crashed")
    if scenario == "exit":
        sys.exit(0)
    print("ready", flush=True)
    freqs = gpu.supported_frequencies()
    i = 0
    while True:                   # training: the controller is busy when the signal lands
        ctl.set_frequency(freqs[i % len(freqs)])
        i += 7
        time.sleep(0.001)
    """
)


def wait_for_lines(journal: Path, count: int, proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
    """Until the worker has journalled ``count`` changes; fails clearly if it dies or stalls."""
    deadline = time.monotonic() + timeout
    while not journal.exists() or len(journal.read_text().splitlines()) < count:
        assert proc.poll() is None, f"worker exited early with {proc.returncode}"
        assert time.monotonic() < deadline, f"worker journalled fewer than {count} changes in {timeout:g} s"
        time.sleep(0.005)


def run_worker(tmp_path: Path, scenario: str, sig: int | None) -> tuple[int, list[str], str]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(here=str(HERE)))
    journal = tmp_path / "journal.txt"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(journal), scenario],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if sig is not None:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        # Let a few clock changes happen, then kill it in the middle of them.
        wait_for_lines(journal, 5, proc)
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    return proc.returncode, journal.read_text().splitlines(), err


def assert_restored(lines: list[str]) -> None:
    last_lock = max(i for i, line in enumerate(lines) if line.startswith("SetGpuLockedClocks"))
    resets = [i for i, line in enumerate(lines) if line.startswith("ResetGpuLockedClocks")]
    assert resets and resets[-1] > last_lock, lines[-5:]
    limits = [line for line in lines if line.startswith("SetPowerManagementLimit")]
    assert limits[0] == "SetPowerManagementLimit 0 200000"
    assert limits[-1] == "SetPowerManagementLimit 0 300000"


@pytest.mark.parametrize(
    ("scenario", "sig", "expected_rc"),
    [
        ("loop", signal.SIGTERM, -signal.SIGTERM),  # killed by the signal, as without Perseus
        ("loop", signal.SIGINT, None),
        ("exception", None, 1),
        ("exit", None, 0),
        ("user-handler", signal.SIGTERM, 3),  # the program's own handler still runs
    ],
)
def test_worker_restores_gpu_whatever_ends_it(tmp_path, scenario, sig, expected_rc) -> None:
    rc, lines, err = run_worker(tmp_path, scenario, sig)
    if expected_rc is None:
        assert rc != 0 and "KeyboardInterrupt" in err
    else:
        assert rc == expected_rc, err
    assert_restored(lines)
    if scenario == "user-handler":
        assert lines[-1] == "user handler"
    if scenario == "exception":
        assert "worker crashed" in err


SIM_WORKER = textwrap.dedent(
    """
    import sys
    from perseus.device import FrequencyController, SimulatedGPU, DEFAULT_SIM_PROFILE
    from perseus.profile import load_profile

    journal = sys.argv[1]

    class RecordingSim(SimulatedGPU):
        def _apply_locked_clock(self, mhz):
            super()._apply_locked_clock(mhz)
            with open(journal, "a") as f:
                f.write(f"lock {{mhz}}\\n")

        def _apply_unlocked_clock(self):
            super()._apply_unlocked_clock()
            with open(journal, "a") as f:
                f.write("unlock\\n")

    gpu = RecordingSim(load_profile(DEFAULT_SIM_PROFILE), time_scale=0.002)
    ctl = FrequencyController(gpu)
    freqs = gpu.supported_frequencies()
    print("ready", flush=True)
    i = 0
    while True:  # the signal lands while the main thread is inside the simulated GPU
        ctl.set_frequency(freqs[i % len(freqs)])
        gpu.on_instruction_begin(0, "forward")
        gpu.energy()
        gpu.on_instruction_end()
        i += 5
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_simulated_worker_restores_and_dies_promptly(tmp_path, sig) -> None:
    script = tmp_path / "sim_worker.py"
    script.write_text(SIM_WORKER.format())
    journal = tmp_path / "journal.txt"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(journal)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    wait_for_lines(journal, 10, proc)
    proc.send_signal(sig)
    proc.communicate(timeout=20)
    assert proc.returncode == -sig
    lines = journal.read_text().splitlines()
    assert lines[-1] == "unlock" and lines[-2].startswith("lock")
