"""Helpers for the worker tests: run the launcher and a real server as separate processes."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e["OMP_NUM_THREADS"] = "1"
    e.pop("PERSEUS_DEVICE", None)
    return e


def launch(*args: str, timeout: float = 240, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m merak_integration.launch ARGS`` (what ``bash run.sh MODEL MB NMB ...`` runs)."""
    return subprocess.run(
        [sys.executable, "-m", "merak_integration.launch", *args],
        cwd=ROOT,
        env={**env(), **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def iterations(out_dir: Path) -> list[dict[str, Any]]:
    return json.loads((out_dir / "iterations.json").read_text())


class ServerProcess:
    """``perseus serve`` equivalent in its own process, SQLite in a tmp dir, port picked by the OS."""

    def __init__(self, tmp: Path, config: str = "", imports: str = "") -> None:
        """``config``: more ``ServerConfig`` keyword arguments as Python source; ``imports``: what they need."""
        code = (
            f"{imports}\nfrom perseus.server.app import ServerConfig, run\n"
            f"run(ServerConfig(port=0, db='sqlite:///{tmp / 'perseus.db'}'{', ' + config if config else ''}), "
            "announce=lambda line: print(line, flush=True))\n"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        deadline = time.monotonic() + 60
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            m = re.search(r"serving on [^:]+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                self.address = f"127.0.0.1:{self.port}"
                return
            if not line and self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
