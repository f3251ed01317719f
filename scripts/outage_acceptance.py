"""Acceptance check by hand: SIGKILL the server 3 iterations into --server training, keep it down, restart it.

Passes when training exits 0 and every iteration of every rank is in the database afterwards.

    .venv/bin/python scripts/outage_acceptance.py [--outage_s 90] [--steps 200] [--pp 2]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perseus.client import PerseusClient, Target  # noqa: E402
from perseus.profile import PipelineProfile, load_profile  # noqa: E402

PROFILE = ROOT / "profiles" / "gpt3-175b+a100_sxm_bf16" / "profile.csv"


def register(address: str, pp: int) -> None:
    """The job, with the first ``pp`` stages of the shipped A100 profile: served at once, no sweep."""
    p = load_profile(PROFILE)
    profile = PipelineProfile({k: v for k, v in p.instructions.items() if k[0] < pp}, p.blocking_power, p.source)
    with PerseusClient(address) as client:
        client.register_job(job_id="outage", model="gpt3-tiny", partition="uniform", num_stages=pp,
                            num_microbatches=2 * pp, profile=profile, target=Target.fastest())
        client.wait_for_phase("outage", "serving", timeout=300)


def start_server(port: int, db: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "perseus.server", "--port", str(port), "--db", db, "--log-level",
                             "warning"], cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "serving on" not in line:
        raise SystemExit(f"server did not start: {line!r}")
    return proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outage_s", type=float, default=90.0)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--pp", type=int, default=2)
    args = parser.parse_args()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="perseus-outage-") as tmp:
        db = f"sqlite:///{tmp}/perseus.db"
        server = start_server(port, db)
        register(f"127.0.0.1:{port}", args.pp)
        train = subprocess.Popen(
            [sys.executable, "-m", "merak_integration.launch", "gpt3-tiny", "2", str(2 * args.pp), "--pp",
             str(args.pp), "--device", "sim", "--max_steps", str(args.steps), "--server", f"127.0.0.1:{port}",
             "--job_name", "outage", "--out_dir", f"{tmp}/out"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        assert train.stdout is not None
        seen_third = threading.Event()

        def relay() -> None:
            assert train.stdout is not None
            for line in train.stdout:
                print(line, end="", flush=True)
                if line.startswith("iteration 2:"):
                    seen_third.set()

        reader = threading.Thread(target=relay, daemon=True)
        reader.start()
        while not seen_third.wait(1.0):
            if train.poll() is not None:
                raise SystemExit("training ended before its third iteration")
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        killed = time.monotonic()
        print(f"=== server SIGKILLed after 3 iterations; down for {args.outage_s:g} s", flush=True)
        time.sleep(args.outage_s)
        if train.poll() is not None:
            print("=== training ended during the outage: its reports are in the spill files", flush=True)
        server = start_server(port, db)
        print(f"=== server restarted after {time.monotonic() - killed:.0f} s", flush=True)
        code = train.wait()
        reader.join(timeout=10)
        try:
            with sqlite3.connect(f"{tmp}/perseus.db") as conn:
                rows = conn.execute("SELECT rank, COUNT(DISTINCT iteration), MIN(iteration), MAX(iteration) FROM "
                                    "scheduler_iteration_reports WHERE job_id = 'outage' GROUP BY rank").fetchall()
        finally:
            server.terminate()
            server.wait(timeout=30)
        complete = len(rows) == args.pp and all(r[1:] == (args.steps, 0, args.steps - 1) for r in rows)
        print(f"=== training exit status {code}; stored per rank (rank, iterations, first, last): {rows}")
        print("=== PASS" if code == 0 and complete else "=== FAIL")
        return 0 if code == 0 and complete else 1


if __name__ == "__main__":
    sys.exit(main())
