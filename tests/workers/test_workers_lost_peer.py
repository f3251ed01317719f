"""A worker SIGKILLed on one node: the survivor on the other node names it in one line, no traceback.

Two launchers on this machine are the two nodes of one 2-stage pipeline (real torchrun, real gloo
over 127.0.0.1, simulated GPUs). Rank 0 (node 0) is killed mid-training. Node 1's launcher cannot see
that process die; its surviving rank 1 fails in gloo ("Connection reset by peer") and must turn that
into the one line its launcher prints, naming rank 0. Node 0's launcher says how its worker died.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from workers_helpers import ROOT, env, free_port

from merak_integration.supervisor import descendants

DEADLINE = 30.0  # seconds from the kill until both launchers must have ended (loaded 2-core machine)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class Node:
    """One launcher (one node), its output collected by threads so the pipes never fill."""

    def __init__(self, args: list[str], node_rank: int, tmpdir: Path) -> None:
        tmpdir.mkdir()
        self.tmpdir = tmpdir
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "merak_integration.launch", *args, "--node_rank", str(node_rank)],
            cwd=ROOT, env={**env(), "TMPDIR": str(tmpdir)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(stream, into), daemon=True)
                         for stream, into in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            into.append(line)

    def workers(self) -> list[int]:
        return [p for p in descendants(self.proc.pid) if "-u -m merak_integration.trainer" in _cmdline(p)]

    def finish(self, timeout: float) -> tuple[int, str]:
        self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        return self.proc.returncode, "".join(self.err)


def test_a_worker_killed_on_another_node_is_named_by_the_survivor(tmp_path: Path) -> None:
    port = free_port()
    common = ["gpt3-tiny", "2", "4", "--pp", "2", "--device", "sim", "--sim_time_scale", "0.05", "--max_steps",
              "100000", "--nnodes", "2", "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port",
              str(port), "--out_dir", str(tmp_path / "out")]
    nodes = [Node(common, rank, tmp_path / f"tmp{rank}") for rank in (0, 1)]
    try:
        deadline = time.monotonic() + 240
        while not any(line.startswith("iteration 2:") for line in nodes[0].out):
            assert time.monotonic() < deadline, "".join(nodes[0].err)[-3000:] + "".join(nodes[1].err)[-3000:]
            assert all(n.proc.poll() is None for n in nodes), "".join(nodes[0].err)[-3000:]
            time.sleep(0.1)
        trees = [descendants(n.proc.pid) for n in nodes]
        (victim,) = nodes[0].workers()
        os.kill(victim, signal.SIGKILL)
        since = time.monotonic()
        (rc0, err0), (rc1, err1) = (n.finish(DEADLINE - (time.monotonic() - since)) for n in nodes)
    finally:
        for n in nodes:  # a failed test must not leak processes either
            for pid in [*descendants(n.proc.pid), n.proc.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            n.proc.wait()
    # Node 1: its survivor's line is the launcher's one line, and it names the rank that went away.
    assert rc1 != 0
    assert "Traceback" not in err1 and "Connection reset by peer." not in err1, err1[-3000:]
    named = f"perseus: error: rank 1 (stage 1) stopped: rank 0 (stage 0, pid {victim}) on this host went away"
    assert err1.count(named) == 1 and err1.rstrip().splitlines()[-1].startswith(named), err1[-3000:]
    # Node 0: how its worker ended, once and last.
    assert rc0 != 0
    assert "Traceback" not in err0, err0[-3000:]
    assert err0.rstrip().splitlines()[-1].startswith(
        f"perseus: launcher: worker rank 0 (pid {victim}) was killed by SIGKILL"), err0[-3000:]
    # Nothing left behind: no process of either tree, no temp folder (torch's per-user inductor cache aside).
    left = [p for tree in trees for p in tree if Path(f"/proc/{p}").exists() and _cmdline(p)]
    assert not left, [_cmdline(p) for p in left]
    for n in nodes:
        assert [p.name for p in n.tmpdir.iterdir() if not p.name.startswith("torchinductor_")] == []
