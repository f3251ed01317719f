"""Training never waits for the server: SIGKILL it mid-run, keep it down, restart it; nothing is lost.

Real parts only: ``python -m perseus.server`` processes on one fixed port and one SQLite file,
torchrun workers on gloo with simulated GPUs, ``perseus upload`` for what a run had to spill.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from workers_helpers import ROOT, env, free_port

from perseus.cli.main import main as perseus_main

PP, NMB = 2, 4
JOB = "link"


class Server:
    """A server process on a fixed port that can be SIGKILLed and started again on the same database."""

    def __init__(self, tmp: Path, port: int) -> None:
        self.db, self.port = f"sqlite:///{tmp / 'perseus.db'}", port
        self.address = f"127.0.0.1:{port}"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "perseus.server", "--port", str(self.port), "--db", self.db, "--log-level",
             "warning"], cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,  # its own process group: a kill takes its frontier worker along
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert "serving on" in line, f"server did not start: {line!r}"

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class Training:
    """``bash run.sh`` in the background; its output is collected line by line."""

    def __init__(self, server: Server, out: Path, steps: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "merak_integration.launch", "gpt3-tiny", "2", str(NMB), "--pp", str(PP),
             "--device", "sim", "--sim_time_scale", "0.5", "--max_steps", str(steps), "--server", server.address,
             "--job_name", JOB, "--out_dir", str(out),
             # The first run registers the job and the server sweeps these two clocks (the default sweep of
             # every supported clock took most of this test's time and is not what it checks).
             "--profile_frequencies", "1410,1005", "--num_warmup_steps", "0", "--num_prof_steps", "1"],
            cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for_iteration(self, step: int, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not any(line.startswith(f"iteration {step}:") for line in self.lines):
            assert self.proc.poll() is None, "training ended early:\n" + "".join(self.lines[-40:])
            assert time.monotonic() < deadline, f"no iteration {step} after {timeout} s:\n" + "".join(self.lines[-40:])
            time.sleep(0.05)

    def finish(self, timeout: float = 300) -> str:
        try:
            self.proc.wait(timeout=timeout)
        finally:
            self.proc.kill()
        self._reader.join(timeout=10)
        return "".join(self.lines)


def _stored(tmp: Path) -> dict[str, set[tuple[int, int]]]:
    """(rank, iteration) pairs in the database, per run id."""
    with sqlite3.connect(tmp / "perseus.db") as db:
        rows = db.execute("SELECT run_id, rank, iteration FROM scheduler_iteration_reports WHERE job_id = ?", (JOB,))
        stored: dict[str, set[tuple[int, int]]] = {}
        for run_id, rank, iteration in rows:
            stored.setdefault(run_id, set()).add((rank, iteration))
    return stored


def _observed(tmp: Path) -> dict[tuple[str, int, int], tuple[float, bool, int, int]]:
    """(clock, measure-only, planned instructions, at planned clock) per (run, rank, iteration)."""
    with sqlite3.connect(tmp / "perseus.db") as db:
        rows = db.execute("SELECT run_id, rank, iteration, clock_mhz, measure_only, planned_instructions, "
                          "at_planned_clock FROM scheduler_iteration_reports WHERE job_id = ?", (JOB,))
        return {(run, rank, it): (clock, bool(mo), planned, at) for run, rank, it, clock, mo, planned, at in rows}


@pytest.mark.timeout(900)  # two trainings and three server starts
def test_server_killed_mid_training_loses_nothing_and_reruns_keep_their_reports(tmp_path: Path) -> None:
    server = Server(tmp_path, free_port())
    server.start()
    try:
        # Run 1: SIGKILL 3 iterations in, down for a while, restarted while training goes on.
        first = Training(server, tmp_path / "out", steps=40)
        first.wait_for_iteration(3)
        server.kill9()
        first.wait_for_iteration(15)  # training goes on meanwhile
        server.start()
        out = first.finish()
        assert first.proc.returncode == 0, out[-4000:]
        assert out.count("unreachable") == 1, out[-4000:]  # one warning per outage, not one per rank
        assert out.count("is back after") == 1 and "Traceback" not in out, out[-4000:]
        run1 = re.search(r"perseus: run (\S+) of job", out)
        assert run1 is not None, out[-4000:]

        # Run 2 of the same job: the server dies 3 iterations in and is only back after training ended.
        second = Training(server, tmp_path / "out", steps=12)
        second.wait_for_iteration(3)
        server.kill9()
        out = second.finish()
        assert second.proc.returncode == 0, out[-4000:]
        assert "perseus upload" in out and "Traceback" not in out
        spilled = sorted((tmp_path / "out" / "perseus-unsent").glob("*.jsonl"))
        assert [p.name for p in spilled] == [f"{JOB}.rank{r}.jsonl" for r in range(PP)]
        server.start()
        assert perseus_main(["upload", str(tmp_path / "out" / "perseus-unsent"), "--server", server.address]) == 0
        assert not list((tmp_path / "out" / "perseus-unsent").glob("*.jsonl"))

        stored = _stored(tmp_path)
        assert len(stored) == 2 and run1.group(1) in stored, stored.keys()
        assert stored[run1.group(1)] == {(r, i) for r in range(PP) for i in range(40)}
        (run2,) = set(stored) - {run1.group(1)}
        assert stored[run2] == {(r, i) for r in range(PP) for i in range(12)}
        # Every report, sent live or spilled and uploaded, says what the GPUs did (read back): the same
        # planned-clock share the workers logged, and a clock.
        observed = _observed(tmp_path)
        assert all(clock > 0 and not measure_only and 0 < at <= planned
                   for clock, measure_only, planned, at in observed.values()), observed
        logged = json.loads((tmp_path / "out" / "iterations.json").read_text())  # run 2's
        for row in logged:
            per_rank = [observed[(run2, r, row["step"])] for r in range(PP)]
            assert row["at_planned_clock"] == sum(o[3] for o in per_rank) / sum(o[2] for o in per_rank)
    finally:
        server.stop()
