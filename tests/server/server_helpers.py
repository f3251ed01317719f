"""Helpers for the server tests: shipped-profile slices, simulated ranks and subprocess servers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from perseus.client import PerseusClient
from perseus.profile import PipelineProfile, load_profile, parse_profile
from perseus.profile.io import format_profile

ROOT = Path(__file__).resolve().parents[2]
A100 = ROOT / "profiles" / "gpt3-175b+a100_sxm_bf16" / "profile.csv"


def wait_until(condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.01) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting until {what}")
        time.sleep(poll)


def profile_slice(num_stages: int, path: Path = A100, freq_step: int = 1) -> PipelineProfile:
    """The first ``num_stages`` stages of a shipped profile (every ``freq_step``-th frequency)."""
    full = load_profile(path)
    keep = set(full.frequencies()[::freq_step])
    rows = [
        (p.stage, p.instruction, m)
        for p in full
        if p.stage < num_stages
        for m in p.measurements
        if m.frequency in keep
    ]
    return parse_profile(format_profile(rows), source=str(path), blocking_power=full.blocking_power)


def profile_csv(profile: PipelineProfile) -> str:
    return format_profile((p.stage, p.instruction, m) for p in profile for m in p.measurements)


class SimulatedRank(threading.Thread):
    """A rank that follows the server's profiling sweep with numbers from a profile."""

    def __init__(self, target: str, job_id: str, rank: int, stage: int, profile: PipelineProfile,
                 pipeline_id: int = 0, token: str | None = None) -> None:
        super().__init__(daemon=True, name=f"rank-{rank}")
        self.target, self.job_id, self.rank, self.stage = target, job_id, rank, stage
        self.profile, self.pipeline_id, self.token = profile, pipeline_id, token
        self.frequencies = list(profile[(stage, "forward")].frequencies)
        self.reported: list[int] = []
        self.error: BaseException | None = None

    def measure(self, f: int) -> dict[str, tuple[float, float]]:
        return {k: (self.profile[(self.stage, k)].at(f).time, self.profile[(self.stage, k)].at(f).energy)
                for k in ("forward", "backward")}

    def run(self) -> None:
        try:
            with PerseusClient(self.target, self.token, retry_timeout=60) as client:
                schedule = client.register_rank(self.job_id, self.rank, self.stage, self.frequencies,
                                                pipeline_id=self.pipeline_id, gpu_name="Simulated A100")
                deadline = time.monotonic() + 120
                while schedule.phase == "profiling" and time.monotonic() < deadline:
                    if schedule.mode != "profiling":
                        time.sleep(0.02)  # this stage is done; others are still sweeping
                        schedule = client.get_schedule(self.job_id, self.rank)
                        continue
                    assert schedule.profiling is not None
                    f = schedule.profiling.frequency
                    while True:
                        ack = client.report_profile(self.job_id, self.rank, f, self.measure(f))
                        self.reported.append(f)
                        if ack.phase != "profiling" or ack.next.done:
                            break
                        f = ack.next.frequency
                    schedule = client.get_schedule(self.job_id, self.rank)
                if schedule.phase == "profiling":
                    raise TimeoutError(f"rank {self.rank}: job {self.job_id} still profiling after 120 s")
        except BaseException as exc:  # surfaced by the test
            self.error = exc


class Reporter(threading.Thread):
    """A rank that reports iterations non-stop and remembers which ones the server acknowledged."""

    def __init__(self, target: str, job_id: str, rank: int) -> None:
        super().__init__(daemon=True)
        self.client = PerseusClient(target, retry_timeout=60)
        self.job_id, self.rank = job_id, rank
        self.acked: list[int] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            iteration = 0
            while not self.stop.is_set():
                self.client.report_iteration(self.job_id, self.rank, iteration, 1.0 + iteration * 1e-3, 100.0)
                self.acked.append(iteration)
                iteration += 1
        except BaseException as exc:
            self.error = exc


def solver_processes(parent: int | None = None) -> list[int]:
    """Pids of live frontier children (``python -m perseus.server.optimize``), of ``parent`` or of anyone."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            stat = (proc / "stat").read_text()
        except (OSError, ValueError):
            continue  # not a process, or it just exited
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if b"perseus.server.optimize" in cmdline and state != "Z" and (parent is None or int(ppid) == parent):
            found.append(int(proc.name))
    return found


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``perseus serve`` as a real subprocess (for kill -9 and CLI tests)."""

    def __init__(self, db: str, port: int = 0, extra: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
        cmd = [sys.executable, "-m", "perseus.server", "--port", str(port), "--db", db, "--log-level", "warning",
               *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})}, cwd=ROOT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"serving on .*:(\d+) ", line)
        if not match:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            raise RuntimeError(f"server did not start: {line!r} {err[-2000:]}")
        self.port = int(match.group(1))
        self.target = f"127.0.0.1:{self.port}"

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)
