"""Batched iteration reports keyed by run: reruns keep their reports, exact retries are stored once."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from perseus.cli.main import main as perseus_main
from perseus.client import PerseusClient, PerseusRpcError
from perseus.reports import IterationReport, append_spill
from perseus.server.app import ServerConfig, ServerThread

JOB = "runs"


def _job(client: PerseusClient, ranks: int = 4) -> None:
    client.register_job(job_id=JOB, model="m", num_stages=ranks, num_microbatches=ranks)
    for rank in range(ranks):
        client.register_rank(JOB, rank, rank, [1410, 1005])


def _reports(rank: int, iterations: range, time_s: float = 1.0) -> list[IterationReport]:
    return [IterationReport(rank, i, time_s + i / 1000, 100.0 + i, "p000") for i in iterations]


def test_two_runs_keep_their_reports_and_retries_are_stored_once(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'perseus.db'}"
    with ServerThread(ServerConfig(port=0, db=db)) as srv, PerseusClient(f"127.0.0.1:{srv.port}") as client:
        _job(client)
        for run in ("run-a", "run-b"):
            for rank in range(4):
                ack = client.report_iterations(JOB, run, _reports(rank, range(6)))
                assert (ack.stored, ack.duplicates) == (6, 0)
        # An exact retry (the acknowledgement was lost) and a batch overlapping it: only the new ones are stored.
        ack = client.report_iterations(JOB, "run-b", _reports(0, range(4, 8), time_s=9.0))
        assert (ack.stored, ack.duplicates) == (2, 2)
        ack = client.report_iterations(JOB, "run-b", _reports(1, range(6)) + _reports(1, range(6)))
        assert (ack.stored, ack.duplicates) == (0, 12)
        # The pre-runs RPC lands in run "" and never collides with a named run.
        client.report_iteration(JOB, 2, 0, 1.0, 1.0)
        info = client.get_job(JOB)
        assert info.num_iteration_reports == 2 * 4 * 6 + 2 + 1
        assert [(r.run_id, r.num_ranks, r.num_iterations, r.num_reports) for r in info.runs] == [
            ("run-a", 4, 6, 24), ("run-b", 4, 8, 26), ("", 1, 1, 1)]
        assert info.num_iterations == 6 + 8 + 1
        stored = [r for r in srv.core.iteration_reports(JOB) if r[0] == 0]
        assert len(stored) == 6 + 8 + 0
        assert all(t < 2.0 for _, it, t, _, _ in stored if it < 6)  # the retried reports kept their first values
    # Restart: run statistics are rebuilt from the database.
    with ServerThread(ServerConfig(port=0, db=db)) as srv, PerseusClient(f"127.0.0.1:{srv.port}") as client:
        again = client.get_job(JOB)
        assert [(r.run_id, r.num_ranks, r.num_iterations, r.num_reports) for r in again.runs] == [
            (r.run_id, r.num_ranks, r.num_iterations, r.num_reports) for r in info.runs]


@pytest.mark.parametrize(
    ("run_id", "reports", "field"),
    [
        ("bad run id!", [IterationReport(0, 0, 1.0, 1.0)], "run_id"),
        ("r", [IterationReport(0, 0, 1.0, 1.0), IterationReport(0, 1, float("nan"), 1.0)], "reports[1].time"),
        ("r", [IterationReport(0, 0, 1.0, -1.0)], "reports[0].energy"),
        ("r", [IterationReport(0, 0, 1.0, 1.0, "x" * 300)], "reports[0].plan_name"),
        ("r", [IterationReport(0, i, 1.0, 1.0) for i in range(4097)], "reports: at most 4096"),
        ("r", [IterationReport(0, 0, 1.0, 1.0, planned_instructions=4, at_planned_clock=5)], "reports[0].at_planned_clock"),
        ("r", [IterationReport(0, 0, 1.0, 1.0, clock_mhz=float("nan"))], "reports[0].clock_mhz"),
        ("r", [IterationReport(0, 0, 1.0, 1.0, clock_mhz=-5.0)], "reports[0].clock_mhz"),
        ("r", [IterationReport(0, 0, 1.0, 1.0, clock_mhz=1e9)], "reports[0].clock_mhz"),
    ],
)
def test_bad_batches_are_rejected_whole_naming_the_field(
    client: PerseusClient, run_id: str, reports: list[IterationReport], field: str
) -> None:
    _job(client, ranks=1)
    with pytest.raises(PerseusRpcError) as err:
        client.report_iterations(JOB, run_id, reports)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and field in err.value.details
    assert client.get_job(JOB).num_iteration_reports == 0


def test_unregistered_rank_is_not_found(client: PerseusClient) -> None:
    _job(client, ranks=1)
    with pytest.raises(PerseusRpcError) as err:
        client.report_iterations(JOB, "r", [IterationReport(0, 0, 1.0, 1.0), IterationReport(7, 0, 1.0, 1.0)])
    assert err.value.code == grpc.StatusCode.NOT_FOUND and "rank 7" in err.value.details
    assert client.get_job(JOB).num_iteration_reports == 0


def test_jobs_cli_counts_iterations_and_upload_sends_spill_files(
    client: PerseusClient, server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = f"127.0.0.1:{server.port}"
    _job(client, ranks=2)
    for rank in range(2):
        client.report_iterations(JOB, "run-a", _reports(rank, range(5)))
    spill = tmp_path / "unsent" / f"{JOB}.rank1.jsonl"
    append_spill(spill, JOB, "run-b", _reports(1, range(3)))

    assert perseus_main(["upload", str(spill.parent), "--server", address]) == 0
    assert f"{spill}: 3 reports stored, 0 already there" in capsys.readouterr().out
    assert not spill.exists()
    append_spill(spill, JOB, "run-b", _reports(1, range(3)))  # the same reports again: acknowledged, not stored
    assert perseus_main(["upload", str(spill), "--server", address]) == 0
    assert f"{spill}: 0 reports stored, 3 already there" in capsys.readouterr().out

    assert perseus_main(["jobs", "--runs", "--server", address]) == 0
    jobs, runs = capsys.readouterr().out.split("\nJOB ", 1)
    header, row = jobs.splitlines()[:2]
    runs_at, iters_at = header.index("RUNS"), header.index("ITERS")
    assert (row[runs_at:iters_at].strip(), row[iters_at:].split()[0]) == ("2", "8")  # 5 + 3, not 13 reports
    lines = runs.splitlines()
    assert [line.split()[:5] for line in lines[1:]] == [[JOB, "run-a", "2", "5", "10"], [JOB, "run-b", "1", "3", "3"]]

    assert perseus_main(["upload", str(tmp_path / "nowhere"), "--server", address]) == 2
    assert capsys.readouterr().err.strip() == f"perseus: error: {tmp_path / 'nowhere'}: no such file or folder"


def _observed(rank: int, iterations: range, **fields: object) -> list[IterationReport]:
    return [IterationReport(rank, i, 1.0, 100.0, "p000", **fields) for i in iterations]  # type: ignore[arg-type]


def test_reports_keep_measure_only_and_read_back_clocks_through_spill_restart_and_jobs_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    db = tmp_path / "perseus.db"
    with ServerThread(ServerConfig(port=0, db=f"sqlite:///{db}")) as srv, \
            PerseusClient(f"127.0.0.1:{srv.port}") as client:
        address = f"127.0.0.1:{srv.port}"
        _job(client, ranks=2)
        # A run with a plan: 9 and 10 of 10 planned instructions at their clock, read back 1005 and 1410 MHz.
        client.report_iterations(JOB, "planned", _observed(0, range(3), clock_mhz=1005.0, planned_instructions=10,
                                                           at_planned_clock=9))
        client.report_iterations(JOB, "planned", _observed(1, range(3), clock_mhz=1410.0, planned_instructions=10,
                                                           at_planned_clock=10))
        # A measure-only run whose reports went through the spill file and `perseus upload`.
        spill = tmp_path / "unsent" / f"{JOB}.rank0.jsonl"
        append_spill(spill, JOB, "measured", _observed(0, range(4), measure_only=True, clock_mhz=1980.0))
        assert perseus_main(["upload", str(spill), "--server", address]) == 0
        # The single-report RPC carries them too.
        client.report_iteration(JOB, 1, 0, 1.0, 1.0, run_id="single", measure_only=True, clock_mhz=345.0)
        runs = {r.run_id: r for r in client.get_job(JOB).runs}
        observed = {k: (r.measure_only_reports, r.planned_instructions, r.at_planned_clock, r.mean_clock_mhz)
                    for k, r in runs.items()}
        assert observed == {"planned": (0, 60, 57, pytest.approx(1207.5)), "measured": (4, 0, 0, 1980.0),
                            "single": (1, 0, 0, 345.0)}
        assert runs["planned"].planned_clock_share == pytest.approx(0.95)
        capsys.readouterr()
        assert perseus_main(["jobs", "--runs", "--server", address]) == 0
        out = capsys.readouterr().out
        rows = {line.split()[1]: line for line in out.split("\nJOB ", 1)[1].splitlines()[1:]}
        assert "95% at planned clock" in rows["planned"] and "1208" in rows["planned"]
        assert "measure-only" in rows["measured"] and "1980" in rows["measured"]
        assert "measure-only" in out.split("\nJOB ", 1)[0]  # the job's last run ("single") in the job list
    with sqlite3.connect(db) as conn:
        stored = set(conn.execute("SELECT run_id, measure_only, clock_mhz, planned_instructions, at_planned_clock "
                                  "FROM scheduler_iteration_reports WHERE rank = 0"))
    assert stored == {("planned", 0, 1005.0, 10, 9), ("measured", 1, 1980.0, 0, 0)}
    # Restart: the run statistics are rebuilt from the stored columns.
    with ServerThread(ServerConfig(port=0, db=f"sqlite:///{db}")) as srv, \
            PerseusClient(f"127.0.0.1:{srv.port}") as client:
        again = {r.run_id: r for r in client.get_job(JOB).runs}
        assert {k: (r.measure_only_reports, r.planned_instructions, r.at_planned_clock, r.mean_clock_mhz)
                for k, r in again.items()} == observed


def test_spill_files_keep_every_report_field(tmp_path: Path) -> None:
    from perseus.errors import InputError
    from perseus.reports import read_spill

    reports = _observed(3, range(2), busy_time=0.75, busy_energy=61.5, measure_only=True, clock_mhz=1234.5,
                        planned_instructions=7, at_planned_clock=6)
    path = tmp_path / "s.jsonl"
    append_spill(path, JOB, "r", reports)
    assert read_spill(path) == ({(JOB, "r"): reports}, False)
    path.write_text(path.read_text().replace("true", '"false"'))  # a string is no JSON boolean
    with pytest.raises(InputError, match="line 1"):
        read_spill(path)
