"""Operator commands: impossible targets (``perseus target``), ``perseus jobs delete`` and ``reprofile``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import grpc
import pytest
from server_helpers import SimulatedRank, profile_slice

from perseus.cli.main import main
from perseus.client import PerseusClient, PerseusRpcError, Target
from perseus.profile import Measurement, PipelineProfile, parse_profile
from perseus.profile.io import format_profile
from perseus.server.app import ServerThread


def perseus(capsys: pytest.CaptureFixture[str], srv: ServerThread, *args: str) -> tuple[int, list[str], list[str]]:
    """Run the real CLI in-process; (exit status, stdout lines, stderr lines)."""
    code = main([*args, "--server", f"127.0.0.1:{srv.port}"])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


@pytest.fixture
def serving(server: ServerThread, client: PerseusClient) -> str:
    client.register_job(job_id="j", num_stages=2, num_microbatches=3, profile=profile_slice(2, freq_step=3))
    client.wait_for_phase("j", "serving")
    return "j"


def test_target_prints_the_plans_time_energy_and_power(server: ServerThread, client: PerseusClient, serving: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    plans = client.get_frontier(serving).plans
    code, out, _ = perseus(capsys, server, "target", serving, "--max-slowdown", "1.1")
    chosen = next(p for p in plans if p.name == client.get_job(serving).plan_name)
    assert code == 0
    assert out == [f"j: target max-slowdown 1.1; serving {chosen.name}: {chosen.iteration_time:.4g} s, "
                   f"{chosen.energy:.4g} J, {chosen.energy / chosen.iteration_time:.4g} W average per iteration"]


def test_impossible_targets_are_refused_or_clamped(server: ServerThread, client: PerseusClient, serving: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    plans = client.get_frontier(serving).plans
    fastest, frugal = plans[0], plans[-1]
    before = client.get_job(serving)

    code, out, err = perseus(capsys, server, "target", serving, "--deadline", "0.001")
    assert code == 2 and out == []
    assert err == [f"perseus: error: server 127.0.0.1:{server.port}: INVALID_ARGUMENT: target.deadline: no plan "
                   f"meets the deadline 0.001 s: the fastest plan takes {fastest.iteration_time:.4g} s per iteration "
                   "(perseus target --nearest runs the closest plan instead)"]
    code, out, err = perseus(capsys, server, "target", serving, "--energy-budget", "1")
    assert code == 2 and "no plan meets the energy budget 1 J: the least-energy plan uses " in err[0]
    after = client.get_job(serving)
    assert (after.target, after.plan_name, after.version) == (before.target, before.plan_name, before.version)

    code, out, _ = perseus(capsys, server, "target", serving, "--deadline", "0.001", "--nearest")
    assert code == 0 and out[0].startswith(f"j: target deadline 0.001; serving {fastest.name}: ")
    assert out[1] == (f"j: note: no plan meets the deadline 0.001 s (the fastest plan takes "
                      f"{fastest.iteration_time:.4g} s per iteration); running the closest plan")
    code, out, _ = perseus(capsys, server, "target", serving, "--energy-budget", "1", "--nearest")
    assert code == 0 and out[0].startswith(f"j: target energy-budget 1; serving {frugal.name}: ")
    note = client.get_job(serving).target_note
    assert note.startswith("no plan meets the energy budget 1 J")
    server.stop()  # the note survives a restart
    with ServerThread(server.server.config) as again, PerseusClient(f"127.0.0.1:{again.port}") as fresh:
        assert fresh.get_job(serving).target_note == note
        # A reachable target clears the note; the RPC refuses the same way without the CLI.
        assert fresh.set_target(serving, Target.fastest()).target_note == ""
        with pytest.raises(PerseusRpcError) as exc:
            fresh.set_target(serving, Target.deadline(fastest.iteration_time * 0.99))
        assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT
        code, _, err = perseus(capsys, again, "target", serving, "--fastest", "--nearest")
    assert code == 2 and err == ["perseus: error: --nearest: only applies with --deadline or --energy-budget"]


def test_delete_removes_every_row(server: ServerThread, client: PerseusClient, serving: str, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    client.register_rank(serving, 0, 0, profile_slice(2, freq_step=3).frequencies())
    client.report_iteration(serving, 0, 1, 1.0, 500.0)
    client.report_straggler(serving, 0, 1.2)
    client.register_job(job_id="kept", num_stages=1, num_microbatches=1, blocking_power=70.0)
    code, out, _ = perseus(capsys, server, "jobs", "delete", serving)
    assert code == 0 and out == ["j: deleted (1 ranks, 0 profile and 1 iteration reports)"]
    assert [j.job_id for j in client.list_jobs()] == ["kept"]
    with sqlite3.connect(tmp_path / "perseus.db") as db:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE name LIKE 'scheduler_%' "
                                           "AND type = 'table'")]
        assert len(tables) >= 6
        left = {t: db.execute(f"SELECT count(*) FROM {t} WHERE {'id' if t == 'scheduler_jobs' else 'job_id'} = 'j'")
                .fetchone()[0] for t in tables}
    assert set(left.values()) == {0}, left
    code, _, err = perseus(capsys, server, "jobs", "delete", serving)
    assert code == 2 and err == [f"perseus: error: server 127.0.0.1:{server.port}: NOT_FOUND: job_id: no job 'j'"]
    code, _, err = perseus(capsys, server, "jobs", "reprofile")
    assert code == 2 and err == ["perseus: error: JOB: perseus jobs reprofile needs the job id (see: perseus jobs)"]


def _scaled(profile: PipelineProfile, factor: float) -> PipelineProfile:
    rows = [(p.stage, p.instruction, Measurement(m.frequency, m.time, m.energy * factor))
            for p in profile for m in p.measurements]
    return parse_profile(format_profile(rows), source="scaled", blocking_power=profile.blocking_power)


def _sweep(server: ServerThread, profile: PipelineProfile) -> None:
    ranks = [SimulatedRank(f"127.0.0.1:{server.port}", "sweep", stage, stage, profile) for stage in range(2)]
    for rank in ranks:
        rank.start()
    for rank in ranks:
        rank.join(timeout=120)
        assert not rank.is_alive() and rank.error is None, rank.error


def test_reprofile_sweeps_again_and_serves_the_new_frontier(server: ServerThread, client: PerseusClient,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    first = profile_slice(2, freq_step=3)
    client.register_job(job_id="sweep", num_stages=2, num_microbatches=3, blocking_power=first.blocking_power)
    _sweep(server, first)
    old = client.wait_for_phase("sweep", "serving")
    old_frontier = client.get_frontier("sweep").plans

    code, out, _ = perseus(capsys, server, "jobs", "reprofile", "sweep")
    assert code == 0 and out == ["sweep: re-profiling; its 2 ranks sweep the frequencies again"]
    job = client.get_job("sweep")
    assert (job.phase, job.frontier_size, job.num_profile_reports, job.plan_name) == ("profiling", 0, 0, "")
    assert job.version > old.version
    assert client.get_schedule("sweep", 0).mode == "profiling"

    second = _scaled(first, 1.5)  # the GPUs now draw more: the new frontier must come from the new numbers
    _sweep(server, second)
    client.wait_for_phase("sweep", "serving")
    new_frontier = client.get_frontier("sweep").plans
    assert new_frontier[0].energy == pytest.approx(old_frontier[0].energy * 1.5, rel=0.05)
    assembled = parse_profile(server.core.profile_of("sweep") or "", source="server", blocking_power=first.blocking_power,
                              num_stages=2)
    top = first.frequencies()[0]
    assert assembled[(1, "backward")].at(top).energy == pytest.approx(second[(1, "backward")].at(top).energy)


def test_a_frontier_computed_for_a_dropped_profile_is_ignored(server: ServerThread, client: PerseusClient) -> None:
    profile = profile_slice(2, freq_step=3)
    client.register_job(job_id="old", num_stages=2, num_microbatches=3, profile=profile)
    assert "old" in server.core._computing  # queued or computing in the frontier pool
    assert client.reprofile_job("old").phase == "profiling"  # while its frontier is being computed
    assert "old" not in server.core._computing  # cancelled: a late result would be dropped
    client.register_job(job_id="later", num_stages=2, num_microbatches=3, profile=profile)
    client.wait_for_phase("later", "serving")  # the done callback of "old" has run by now too
    job = client.get_job("old")
    assert (job.phase, job.frontier_size, job.plan_name) == ("profiling", 0, "")
