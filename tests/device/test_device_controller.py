"""FrequencyController: non-blocking, coalescing, applies off the caller's thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from perseus.device import FrequencyController, SimulatedGPU, controller, nvml_gpus, safety
from perseus.errors import DeviceError


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.001)


def test_requests_do_not_block_on_a_gpu_that_is_busy_applying(fake) -> None:
    gate = threading.Event()  # holds the NVML lock call in flight until the test lets it go
    fake.STATE.devices[0].lock_gate = gate
    (gpu,) = nvml_gpus(fake, can_admin=True, environ={})
    with FrequencyController(gpu) as ctl:
        for f in (1200, 1100, 1000, 900, 855):
            ctl.set_frequency(f)  # each returns although no lock has completed
        assert ctl.stats.applied == 0 and ctl.stats.requests == 5
        gate.set()
        ctl.flush()
        assert ctl.applied_frequency == 855 and gpu.wait_for_frequency(855, timeout=30) == 855
    assert fake.STATE.devices[0].locked is None  # closing unlocked it
    assert safety.pending() == []


def test_requests_during_a_slow_lock_are_coalesced(fake) -> None:
    gate = threading.Event()
    fake.STATE.devices[0].lock_gate = gate
    (gpu,) = nvml_gpus(fake, can_admin=True, environ={})
    ctl = FrequencyController(gpu)
    ctl.set_frequency(1200)
    wait_until(lambda: ctl._pending is controller._NOTHING, "the controller thread to take the request")
    # The thread is now inside the first lock, held by the gate; these arrive while it is in flight.
    for f in (1100, 1000, 900, 1005):
        ctl.set_frequency(f)
    ctl.set_frequency(1005)  # same as the latest request: dropped at once
    gate.set()
    ctl.flush()
    lines = fake.STATE.journal.read_text().splitlines()
    assert lines == ["SetGpuLockedClocks 0 1200 1200", "SetGpuLockedClocks 0 1005 1005"]
    assert ctl.stats.requests == 6 and ctl.stats.coalesced == 1 and ctl.stats.applied == 2
    assert ctl.stats.last_lag > 0
    ctl.close()
    assert fake.STATE.journal.read_text().splitlines()[-1] == "ResetGpuLockedClocks 0"
    assert not ctl._thread.is_alive()


def test_reset_unlocks_and_repeated_close_is_harmless(a100) -> None:
    gpu = SimulatedGPU(a100)
    ctl = FrequencyController(gpu)
    ctl.set_frequency(990)
    ctl.flush()
    assert ctl.applied_frequency == 990
    ctl.reset()
    ctl.flush()
    assert ctl.applied_frequency is None and gpu.current_frequency() == 1410
    ctl.close()
    ctl.close()
    ctl.set_frequency(900)  # after close: ignored, not raised
    assert gpu.current_frequency() == 1410


def test_permission_error_is_reported_once_and_never_raised(fake, capsys) -> None:
    fake.STATE.devices[0].permission = False
    (gpu,) = nvml_gpus(fake, can_admin=True, environ={})
    with FrequencyController(gpu) as ctl:
        ctl.set_frequency(1200)
        ctl.flush()
        ctl.set_frequency(1100)
        ctl.flush()
        assert isinstance(ctl.error, DeviceError)
        assert ctl.applied_frequency is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "continuing without clock control" in err[0] and "CAP_SYS_ADMIN" in err[0]


def test_measure_only_gpu_is_left_alone(fake) -> None:
    (gpu,) = nvml_gpus(fake, can_admin=False, environ={})
    with FrequencyController(gpu) as ctl:
        ctl.set_frequency(1200)
        ctl.flush()
        assert ctl.applied_frequency is None and ctl.error is None
    assert not fake.STATE.journal.exists()


def test_flush_times_out_with_a_clear_error(fake) -> None:
    gate = threading.Event()  # the lock never completes while flush waits
    fake.STATE.devices[0].lock_gate = gate
    (gpu,) = nvml_gpus(fake, can_admin=True, environ={})
    ctl = FrequencyController(gpu)
    ctl.set_frequency(900)
    with pytest.raises(DeviceError, match=r"not applied within 0\.05 s"):
        ctl.flush(timeout=0.05)
    gate.set()
    ctl.close()


def test_many_threads_requesting_end_at_one_of_the_requests(a100) -> None:
    gpu = SimulatedGPU(a100)
    ctl = FrequencyController(gpu)
    freqs = gpu.supported_frequencies()

    def hammer(offset: int) -> None:
        for i in range(200):
            ctl.set_frequency(freqs[(i + offset) % len(freqs)])

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ctl.flush()
    assert ctl.applied_frequency == ctl._latest == gpu.current_frequency()
    ctl.close()
