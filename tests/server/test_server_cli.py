"""``perseus serve``, ``perseus jobs``, ``perseus frontier`` and ``perseus target`` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from server_helpers import ROOT, ServerProcess, profile_slice

from perseus.client import PerseusClient
from perseus.plan import FrequencyPlan


def perseus(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env_token = ["--token", token] if token else []
    return subprocess.run([sys.executable, "-m", "perseus", *args, *env_token], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


@pytest.fixture
def running(tmp_path: Path):
    server = ServerProcess(f"sqlite:///{tmp_path / 'cli.db'}", extra=("--token", "tok"))
    try:
        yield server
    finally:
        assert server.stop() == 0  # SIGTERM: clean shutdown


def test_cli_end_to_end(running: ServerProcess, tmp_path: Path) -> None:
    profile = profile_slice(2, freq_step=3)
    with PerseusClient(running.target, token="tok") as client:
        client.register_job(job_id="cli-job", model="gpt3", num_stages=2, num_microbatches=3, profile=profile)
        for rank in range(2):
            client.register_rank("cli-job", rank, rank, profile.frequencies())
        client.wait_for_phase("cli-job", "serving")
    server = ("--server", running.target)

    jobs = perseus("jobs", *server, token="tok")
    assert jobs.returncode == 0, jobs.stderr
    header, row = jobs.stdout.splitlines()[:2]
    assert header.split()[:6] == ["JOB", "MODEL", "SCHEDULE", "STAGESxMB", "DP", "PHASE"]
    assert row.split()[:6] == ["cli-job", "gpt3", "1f1b", "2x3", "1", "serving"]

    frontier = perseus("frontier", "cli-job", *server, "--json", token="tok")
    data = json.loads(frontier.stdout)
    assert data["selected"] == "p000" and len(data["plans"]) > 2
    table = perseus("frontier", "cli-job", *server, "--save", f"p001={tmp_path / 'p001.json'}", token="tok")
    lines = table.stdout.splitlines()
    assert table.returncode == 0 and lines[0] == f"saved plan p001 of cli-job to {tmp_path / 'p001.json'}"
    assert lines[2].startswith("*  p000")
    saved = FrequencyPlan.load(tmp_path / "p001.json")
    assert saved.name == "p001"

    slow = perseus("target", "cli-job", "--max-slowdown", "1.05", *server, token="tok")
    assert slow.returncode == 0 and slow.stdout.startswith("cli-job: target max-slowdown 1.05; serving p")
    plan = perseus("target", "cli-job", "--plan", str(tmp_path / "p001.json"), *server, token="tok")
    assert plan.stdout.startswith("cli-job: target plan; serving p001: ")
    base = perseus("target", "cli-job", "--baseline", "global-power-limit", "--power-limit", "250", *server,
                   token="tok")
    assert base.stdout.startswith("cli-job: target baseline global-power-limit 250 W; serving baseline:global-power-limit: ")
    back = perseus("target", "cli-job", "--fastest", *server, token="tok")
    assert back.stdout.startswith("cli-job: target fastest; serving p000: ")


def test_cli_errors_are_one_line(running: ServerProcess) -> None:
    server = ("--server", running.target)
    cases = [
        (perseus("jobs", *server), "UNAUTHENTICATED: authorization: missing bearer token"),
        (perseus("frontier", "nope", *server, token="tok"), "NOT_FOUND: job_id: no job 'nope'"),
        (perseus("target", "nope", "--deadline", "-1", *server, token="tok"), "INVALID_ARGUMENT: target.deadline"),
        (perseus("target", "x", "--plan", "/nonexistent.json", *server, token="tok"), "/nonexistent.json: cannot read"),
    ]
    for result, expected in cases:
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("perseus: error: ") and expected in lines[0], result.stderr


def test_a_server_without_a_port_means_the_default_port() -> None:
    from perseus.client.client import parse_targets

    assert parse_targets("127.0.0.1") == ("127.0.0.1:7787",)
    assert parse_targets("a:1,b") == ("a:1", "b:7787")
    assert parse_targets("::1") == ("[::1]:7787",)
    assert parse_targets("[::1]:9") == ("[::1]:9",)
