"""Nothing is left behind: killing the launcher or a worker leaves no process, no temp directory
and no locked (fake NVML) GPU. Real launcher, real torchrun, real gloo workers; the GPUs are the fake
NVML shared between processes through a state file (what this machine lacks)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from workers_helpers import ROOT, env

from merak_integration.supervisor import descendants, running

DEVICE_TESTS = ROOT / "tests" / "device"
sys.path.insert(0, str(DEVICE_TESTS))
import fake_nvml  # noqa: E402

DEADLINE = 15.0  # seconds from the kill until everything must be gone (the bound)


class Run:
    """``python -m merak_integration.launch`` on two fake NVML GPUs that profiling locks to 1005 MHz."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.shared = tmp / "gpus.json"
        self.state = tmp / "gpu-state"
        self.tmpdir = tmp / "tmpdir"
        self.tmpdir.mkdir()
        fake_nvml.share_state(self.shared, [fake_nvml.FakeDevice(uuid=f"GPU-{i}{i}") for i in range(2)])
        fake_nvml.configure()
        e = env()
        e.update({
            "PYTHONPATH": f"{ROOT}{os.pathsep}{DEVICE_TESTS}",
            "PERSEUS_NVML_MODULE": "fake_nvml",
            "FAKE_NVML_STATE": str(self.shared),
            "FAKE_NVML_JOURNAL": str(tmp / "journal.txt"),
            "PERSEUS_STATE_DIR": str(self.state),
            "TMPDIR": str(self.tmpdir),  # every temp dir torchrun or we would make lands here
        })
        # A sweep whose warm-up at the first clock never ends: the GPUs stay locked until killed.
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "merak_integration.launch", "gpt3-tiny", "2", "4", "--pp", "2",
             "--device", "nvml", "--profile", "true", "--profile_frequencies", "1005",
             "--num_warmup_steps", "1000000", "--profile_dir", str(tmp / "profiles")],
            cwd=ROOT, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def devices(self) -> list[fake_nvml.FakeDevice]:
        return fake_nvml.shared_devices(self.shared)

    def wait_until_locked(self, timeout: float = 180.0) -> list[int]:
        """Both GPUs locked by their workers; returns the worker pids."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"launcher exited early ({self.proc.returncode}): {self.proc.stderr.read()[-3000:]}")
            workers = self.workers()
            if len(workers) == 2 and all(d.locked == (1005, 1005) for d in self.devices()):
                return workers
            assert time.monotonic() < deadline, (
                f"GPUs not locked within {timeout:g} s: {[d.locked for d in self.devices()]}, workers {workers}, "
                f"processes {[_cmdline(p) for p in descendants(self.proc.pid)]}"
            )
            time.sleep(0.2)

    def workers(self) -> list[int]:
        return [p for p in descendants(self.proc.pid) if "-u -m merak_integration.trainer" in _cmdline(p)]

    def assert_nothing_left(self, tree: list[int], since: float) -> None:
        deadline = since + DEADLINE
        while any(running(p) for p in tree) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [p for p in tree if running(p)]
        assert not left, f"processes left {DEADLINE:g} s after the kill: {[_cmdline(p) for p in left]}"
        assert [d.locked for d in self.devices()] == [None, None]
        # `import torch` makes its per-user cache folder torchinductor_<user> in any process (kept across
        # runs, like ~/.cache); every other folder here would be one a run left behind.
        assert [p.name for p in self.tmpdir.iterdir() if not p.name.startswith("torchinductor_")] == []
        assert not list(self.state.glob("*.json")), [p.read_text() for p in self.state.glob("*.json")]

    def finish(self) -> tuple[int, str]:
        try:
            _, err = self.proc.communicate(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"launcher still running {DEADLINE:g} s after the kill: {err[-3000:]}") from None
        return self.proc.returncode, err


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.fixture
def run(tmp_path: Path):
    r = Run(tmp_path)
    yield r
    for pid in [*descendants(r.proc.pid), r.proc.pid]:  # a failed test must not leak processes either
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    r.proc.communicate()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_the_launcher_stops_everything_and_unlocks(run: Run, sig: int) -> None:
    run.wait_until_locked()
    tree = descendants(run.proc.pid)
    run.proc.send_signal(sig)
    since = time.monotonic()
    rc, err = run.finish()
    assert rc == 128 + sig, err[-3000:]
    run.assert_nothing_left(tree, since)
    assert "Traceback" not in err, err[-3000:]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGABRT])
def test_a_worker_killed_beyond_cleanup_is_restored_by_the_launcher(run: Run, sig: int) -> None:
    workers = run.wait_until_locked()
    tree = descendants(run.proc.pid)
    os.kill(workers[0], sig)
    since = time.monotonic()
    rc, err = run.finish()
    assert rc != 0
    run.assert_nothing_left(tree, since)
    assert "perseus: launcher: restored GPU-" in err, err[-3000:]
    # One line, printed once and last, says which worker died how: no traceback from torchrun, nor from
    # the surviving worker's lost connection (gloo's "Connection reset by peer" in a pipeline receive).
    line = f"perseus: launcher: worker rank 0 (pid {workers[0]}) was killed by {signal.Signals(sig).name}"
    assert err.count(line) == 1 and err.rstrip().splitlines()[-1].startswith(line), err[-3000:]
    assert "Traceback" not in err and "Connection reset by peer" not in err, err[-3000:]
    assert "ChildFailedError" not in err and "torch/distributed/run.py" not in err, err[-3000:]
    # The journal shows each GPU's last clock change is an unlock.
    journal = (run.tmp / "journal.txt").read_text().splitlines()
    for index in (0, 1):
        mine = [line for line in journal if line.split()[1] == str(index)]
        assert mine[-1] == f"ResetGpuLockedClocks {index}", mine


def test_killing_the_launcher_takes_torchrun_and_the_workers_down(run: Run) -> None:
    run.wait_until_locked()
    tree = descendants(run.proc.pid)
    run.proc.kill()
    since = time.monotonic()
    run.proc.communicate(timeout=DEADLINE)
    # torchrun gets SIGTERM from the kernel (parent-death signal) and passes it to the workers,
    # which restore their GPUs on their signal thread.
    run.assert_nothing_left(tree, since)


def test_state_files_record_what_the_workers_changed(run: Run) -> None:
    run.wait_until_locked()
    records = sorted(json.loads(p.read_text())["uuid"] for p in run.state.glob("*.json"))
    assert records == ["GPU-00", "GPU-11"]
    run.proc.send_signal(signal.SIGTERM)
    run.finish()
