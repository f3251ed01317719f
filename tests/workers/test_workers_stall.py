"""A rank stopped with SIGSTOP is named (rank and stage) instead of a silent hang; training resumes after SIGCONT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from workers_helpers import ROOT, env


def _rank_pid(tag: str, rank: int) -> int:
    """The worker process of ``rank`` among those started with PERSEUS_TEST_TAG=tag."""
    for proc in Path("/proc").iterdir():
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if (f"PERSEUS_TEST_TAG={tag}".encode() in environ and f"RANK={rank}".encode() in environ
                and b"-m\0merak_integration.trainer" in cmdline and b"merak_integration.torchrun" not in cmdline):
            return int(proc.name)
    raise AssertionError(f"no worker process of rank {rank} found")


def _wait_for(lines: list[str], text: str, proc: subprocess.Popen[str], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in line for line in lines):
        assert proc.poll() is None, f"training ended before {text!r}:\n" + "".join(lines[-30:])
        assert time.monotonic() < deadline, f"no {text!r} after {timeout} s:\n" + "".join(lines[-30:])
        time.sleep(0.05)


@pytest.mark.timeout(600)
def test_a_stopped_rank_is_named_within_the_stall_timeout(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    proc = subprocess.Popen(
        [sys.executable, "-m", "merak_integration.launch", "gpt3-tiny", "2", "4", "--pp", "2", "--device", "sim",
         "--sim_time_scale", "0.3", "--max_steps", "25", "--out_dir", str(tmp_path / "out")],
        cwd=ROOT, env={**env(), "PERSEUS_STALL_TIMEOUT": "3", "PERSEUS_TEST_TAG": tag},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    stopped = None
    try:
        _wait_for(lines, "iteration 3:", proc)
        stopped = _rank_pid(tag, 1)
        os.kill(stopped, signal.SIGSTOP)
        _wait_for(lines, "perseus: stall:", proc)
        os.kill(stopped, signal.SIGCONT)
        stopped = None
        proc.wait(timeout=300)
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        proc.kill()
        reader.join(timeout=10)
    out = "".join(lines)
    assert proc.returncode == 0, out[-4000:]
    stall = [line for line in lines if line.startswith("perseus: stall:")]
    assert len(stall) == 1, out[-4000:]  # one rank speaks for all, once
    assert "no heartbeat from rank 1 (stage 1," in stall[0], stall
    assert "perseus: progress resumed" in out and "iteration 24:" in out
