"""CI guard: the committed gRPC stubs (perseus/v1) are exactly what proto/ generates."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_stubs_match_the_protos() -> None:
    result = subprocess.run(["bash", str(ROOT / "scripts" / "check_protos.sh")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


def test_check_names_a_stale_stub(tmp_path: Path) -> None:
    # A copy of the tree whose scheduler.proto gained a field: the check must fail naming the stub.
    copy = tmp_path / "repo"
    for rel in ("scripts", "proto", "perseus/v1"):
        subprocess.run(["mkdir", "-p", str(copy / rel)], check=True)
        subprocess.run(["cp", "-r", f"{ROOT / rel}/.", str(copy / rel)], check=True)
    proto = copy / "proto" / "perseus" / "v1" / "scheduler.proto"
    proto.write_text(proto.read_text().replace("message ListJobsRequest {", "message ListJobsRequest {\n  bool x = 99;"))
    env = {"PATH": "/usr/bin:/bin", "PERSEUS_PYTHON": str(ROOT / ".venv" / "bin" / "python")}
    result = subprocess.run(["bash", str(copy / "scripts" / "check_protos.sh")], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 1
    assert "perseus/v1/scheduler_pb2.py is stale" in result.stderr
