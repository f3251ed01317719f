"""The cluster power cap through the real gRPC server on 127.0.0.1 with real SQLite files."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from server_helpers import profile_slice, wait_until

from perseus.cli.main import main as perseus_main
from perseus.client import PerseusClient, PerseusRpcError, Target
from perseus.profile import PipelineProfile
from perseus.server.app import ServerConfig, ServerThread

MB = 4  # microbatches: a small frontier that the server computes in well under a second


@pytest.fixture(scope="module")
def small() -> PipelineProfile:
    """GPT-3 175B on A100, 2 stages, every 3rd clock."""
    return profile_slice(2, freq_step=3)


def serve_job(client: PerseusClient, job_id: str, profile: PipelineProfile, dp: int = 1,
              target: Target | None = None) -> None:
    client.register_job(job_id=job_id, num_stages=2, num_microbatches=MB, dp_degree=dp, profile=profile,
                        target=target)
    client.wait_for_phase(job_id, "serving", timeout=60)


def powers(client: PerseusClient, job_id: str, dp: int = 1) -> list[float]:
    """Planned watts of every frontier plan of the job (fastest first)."""
    return [dp * p.energy / p.iteration_time for p in client.get_frontier(job_id).plans]


@contextmanager
def drawing_more_than_profiled(client: PerseusClient, job_id: str, ranks: int) -> Iterator[None]:
    """While inside, every rank reports the plan its schedule names, at half that plan's energy per rank
    (two stages) plus 10%: GPUs that draw 10% more than their profile."""
    stop = threading.Event()

    def report() -> None:
        iteration = 0
        with PerseusClient(client.target) as c:
            while not stop.is_set():
                for rank in range(ranks):
                    schedule = c.get_schedule(job_id, rank)
                    c.report_iteration(job_id, rank, iteration, schedule.expected_iteration_time,
                                       1.1 * schedule.expected_energy / 2, schedule.plan_name)
                iteration += 1
                time.sleep(0.02)

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        yield
    finally:
        stop.set()
        reporter.join(timeout=10)


def test_cap_set_show_clear_and_resolve_on_add_and_delete(client: PerseusClient, small: PipelineProfile) -> None:
    assert client.get_power_cap().watts is None
    serve_job(client, "a", small, dp=4)
    frontier = powers(client, "a", 4)
    fastest, least = frontier[0], min(frontier)
    assert fastest > least * 1.05  # the cap has room to choose
    client.register_rank("a", 0, 0, small.frequencies())

    cap = client.set_power_cap((fastest + least) / 2)
    assert cap.watts == pytest.approx((fastest + least) / 2) and cap.feasible and cap.exact
    job = client.get_job("a")
    assert job.power_capped and least <= job.planned_power <= cap.watts
    assert cap.planned_power == pytest.approx(job.planned_power)
    assert client.get_schedule("a", 0).plan_name == job.plan_name  # ranks run the cap's choice

    # A cap job a alone fits at its fastest plan.
    client.set_power_cap(fastest)
    assert client.get_job("a").planned_power == pytest.approx(fastest)

    # A second job starts serving: the cap is shared, both fit, job a slows down.
    serve_job(client, "b", small, dp=1)
    cap = client.get_power_cap()
    assert [j.job_id for j in cap.jobs] == ["a", "b"] and cap.feasible
    assert cap.planned_power <= cap.watts * (1 + 1e-9)
    assert client.get_job("a").planned_power < fastest

    # It ends: job a gets the watts back.
    client.delete_job("b")
    assert client.get_job("a").planned_power == pytest.approx(fastest)

    cleared = client.set_power_cap(None)
    assert cleared.watts is None
    job = client.get_job("a")
    assert not job.power_capped and job.planned_power == pytest.approx(fastest)  # its own target (fastest) again


def test_weight_moves_the_slowdown_to_the_lighter_job(client: PerseusClient, small: PipelineProfile) -> None:
    serve_job(client, "heavy", small)
    serve_job(client, "light", small)
    frontier = powers(client, "heavy")
    client.set_power_cap(0.5 * frontier[0] + 1.5 * min(frontier))  # room for one job to go fast, not both

    def slowdown(job_id: str) -> float:
        return next(j.slowdown for j in client.get_power_cap().jobs if j.job_id == job_id)

    job = client.set_weight("heavy", 10.0)
    assert job.weight == 10.0
    assert slowdown("heavy") < slowdown("light")
    client.set_weight("heavy", 0.1)
    assert slowdown("heavy") > slowdown("light")
    with pytest.raises(PerseusRpcError, match="weight"):
        client.set_weight("heavy", -1.0)
    with pytest.raises(PerseusRpcError, match="no job"):
        client.set_weight("nope", 2.0)


def test_floor_and_infeasible_state(client: PerseusClient, small: PipelineProfile,
                                    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    serve_job(client, "floored", small, target=Target.max_slowdown(1.05))
    serve_job(client, "free", small)
    frontier = client.get_frontier("floored").plans
    fastest_time = frontier[0].iteration_time
    tiny = 1.0  # watts: no plan fits
    with caplog.at_level(logging.WARNING, logger="perseus.server"):
        cap = client.set_power_cap(tiny)
        client.set_power_cap(tiny)  # the same state again: not logged again
        client.set_weight("free", 2.0)
    assert not cap.feasible and "draw at least" in cap.note
    warnings = [r for r in caplog.records if "cannot be met" in r.getMessage()]
    assert len(warnings) == 1
    floored = client.get_job("floored")
    # The floor holds: at most 5% slower than its fastest plan even though the cap asks for less power.
    assert floored.plan_iteration_time <= fastest_time * 1.05 * (1 + 1e-9)
    free = next(j for j in cap.jobs if j.job_id == "free")
    assert free.planned_power == pytest.approx(min(powers(client, "free")))  # least-power plan, no floor
    assert next(j for j in cap.jobs if j.job_id == "floored").max_slowdown == pytest.approx(1.05)

    # The jobs listing and the cap command say so.
    capsys.readouterr()
    assert perseus_cli(client, "cap") == 0
    assert "CANNOT BE MET: the serving jobs draw at least" in capsys.readouterr().out
    assert perseus_cli(client, "jobs") == 0
    assert any(line.startswith("power cap: 1 W (planned ") and "CANNOT BE MET" in line
               for line in capsys.readouterr().out.splitlines())


def perseus_cli(client: PerseusClient, *args: str) -> int:
    return perseus_main([*args, "--server", client.target])


def test_pinned_job_counts_against_the_cap(client: PerseusClient, small: PipelineProfile) -> None:
    serve_job(client, "capped", small)
    serve_job(client, "pinned", small, target=Target.of_baseline("max-frequency"))
    pinned_power = client.get_job("pinned").planned_power
    frontier = powers(client, "capped")
    cap = client.set_power_cap(pinned_power + min(frontier) * 1.01)
    assert cap.feasible
    rows = {j.job_id: j for j in cap.jobs}
    assert rows["pinned"].pinned and rows["pinned"].planned_power == pytest.approx(pinned_power)
    assert rows["capped"].planned_power <= min(frontier) * 1.01


def test_measured_power_from_iteration_reports(client: PerseusClient, small: PipelineProfile) -> None:
    serve_job(client, "m", small, dp=2)
    for rank in range(4):
        client.register_rank("m", rank, rank % 2, small.frequencies(), pipeline_id=rank // 2)
    for it in range(3):
        for rank in range(4):
            client.report_iteration("m", rank, it, 2.0, 100.0 * (rank + 1), run_id="r1")
    # Each rank: energy / time over its reports; the job: the sum over ranks.
    expected = sum(100.0 * (rank + 1) / 2.0 for rank in range(4))
    assert client.get_job("m").measured_power == pytest.approx(expected)
    assert client.get_power_cap().measured_power == pytest.approx(expected)


def test_cap_and_weight_survive_a_restart(tmp_path: Path, small: PipelineProfile) -> None:
    db = f"sqlite:///{tmp_path / 'cap.db'}"
    with ServerThread(ServerConfig(port=0, db=db)) as srv, PerseusClient(f"127.0.0.1:{srv.port}") as client:
        serve_job(client, "a", small)
        serve_job(client, "b", small)
        frontier = powers(client, "a")
        client.set_weight("a", 3.0)
        before = client.set_power_cap(frontier[0] + min(frontier))
        plans = {j.job_id: j.plan_name for j in before.jobs}
    with ServerThread(ServerConfig(port=0, db=db)) as srv, PerseusClient(f"127.0.0.1:{srv.port}") as client:
        after = client.get_power_cap()
        assert after.watts == before.watts and after.feasible
        assert {j.job_id: j.plan_name for j in after.jobs} == plans
        assert client.get_job("a").weight == 3.0 and client.get_job("a").power_capped


@pytest.mark.parametrize(("args", "flag"), [
    (("cap", "--watts", "-5"), "--watts"),
    (("cap", "--watts", "nan"), "--watts"),
    (("cap", "--watts", "1e12"), "--watts"),
    (("target", "nope", "--weight", "2"), "no job"),
    (("target", "a", "--weight", "0"), "--weight"),
    (("target", "a", "--weight", "inf"), "--weight"),
    (("target", "a"), "--weight"),
])
def test_cli_bad_input_is_one_line(client: PerseusClient, small: PipelineProfile,
                                   capsys: pytest.CaptureFixture[str], args: tuple[str, ...], flag: str) -> None:
    assert perseus_cli(client, *args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("perseus: error:") and flag in err, err
    assert "Traceback" not in err


def test_cli_cap_and_jobs_show_the_totals(client: PerseusClient, small: PipelineProfile,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    serve_job(client, "a", small)
    frontier = powers(client, "a")
    assert perseus_cli(client, "cap", "--watts", f"{(frontier[0] + min(frontier)) / 2:.1f}") == 0
    shown = capsys.readouterr().out
    assert "power cap:" in shown and "met" in shown
    assert perseus_cli(client, "target", "a", "--weight", "2") == 0
    assert capsys.readouterr().out.strip() == "a: weight 2 under the power cap"
    assert perseus_cli(client, "jobs") == 0
    listing = capsys.readouterr().out
    assert "PLANNED W" in listing and "(cap)" in listing and "power cap:" in listing
    assert perseus_cli(client, "cap", "--clear") == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("power cap: none")
    assert math.isfinite(frontier[0])


@pytest.mark.postgres
def test_a_cap_set_through_one_replica_reaches_the_other(postgres_db: str, small: PipelineProfile) -> None:
    with ServerThread(ServerConfig(port=0, db=postgres_db)) as first, \
            ServerThread(ServerConfig(port=0, db=postgres_db)) as second, \
            PerseusClient(f"127.0.0.1:{first.port}") as via_a, PerseusClient(f"127.0.0.1:{second.port}") as via_b:
        serve_job(via_a, "x", small, dp=2)
        via_b.register_rank("x", 0, 0, small.frequencies())
        frontier = powers(via_a, "x", 2)
        assert via_b.get_schedule("x", 0).plan_name == "p000"
        cap = via_a.set_power_cap((frontier[0] + min(frontier)) / 2)
        chosen = via_a.get_job("x").plan_name
        assert chosen != "p000"
        deadline = time.monotonic() + 10
        while via_b.get_schedule("x", 0).plan_name != chosen:  # B hears of it by NOTIFY (or its 1 s tick)
            assert time.monotonic() < deadline, "replica B never served the cap's plan"
            time.sleep(0.05)
        assert via_b.get_power_cap().watts == pytest.approx(cap.watts)
        via_b.set_power_cap(None)
        assert via_a.get_power_cap().watts is None
        deadline = time.monotonic() + 10
        while via_a.get_schedule("x", 0).plan_name != "p000":
            assert time.monotonic() < deadline, "replica A never dropped the cap's plan"
            time.sleep(0.05)


def test_server_rejects_bad_caps_and_exports_metrics(tmp_path: Path, small: PipelineProfile) -> None:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    config = ServerConfig(port=0, db=f"sqlite:///{tmp_path / 'm.db'}", metrics_port=0)
    with ServerThread(config) as srv, PerseusClient(f"127.0.0.1:{srv.port}") as client:
        for bad in (-1.0, 0.0, math.nan, math.inf, 1e9):
            with pytest.raises(PerseusRpcError, match="watts"):
                client.set_power_cap(bad)
        assert client.get_power_cap().watts is None  # nothing stored
        serve_job(client, "a", small)
        client.set_power_cap(1.0)  # cannot be met
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.server.metrics_port}/metrics", timeout=30) as reply:
            text = reply.read().decode()
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(text) for s in family.samples}
        assert samples[("perseus_power_cap_watts", ())] == 1.0
        assert samples[("perseus_power_cap_feasible", ())] == 0.0
        planned = client.get_job("a").planned_power
        assert samples[("perseus_job_power_watts", (("job", "a"), ("source", "planned")))] == pytest.approx(planned)
        assert samples[("perseus_power_cap_total_watts", (("source", "planned"),))] == pytest.approx(planned)


def test_measured_power_above_plan_tightens_the_cap(client: PerseusClient, small: PipelineProfile) -> None:
    """GPUs drawing 10% more than their profile: the server notices from the reports and re-plans."""
    serve_job(client, "hot", small)
    for stage in range(2):
        client.register_rank("hot", stage, stage, small.frequencies())
    frontier = powers(client, "hot")
    cap = client.set_power_cap((frontier[0] + min(frontier)) / 2).watts
    assert cap is not None
    first = client.get_job("hot")
    with drawing_more_than_profiled(client, "hot", ranks=2):
        wait_until(lambda: client.get_job("hot").plan_name != first.plan_name, 30, "the cap re-plans the hot job")
        job = client.get_job("hot")
        assert 1.1 * job.planned_power <= cap * (1 + 1e-9) < 1.1 * first.planned_power
        wait_until(lambda: 0 < client.get_power_cap().measured_power <= cap * (1 + 1e-9), 30,
                   "measured power is back under the cap")
        plan = job.plan_name
        time.sleep(5)  # two more feedback rounds: the same ratio moves nothing
        assert client.get_job("hot").plan_name == plan


def test_measured_power_correction_applies_to_a_job_with_a_straggler(
    client: PerseusClient, small: PipelineProfile
) -> None:
    """dp=2 with pipeline 1 straggling: pipeline 0 runs a slower plan than the served one, and every GPU
    draws 10% more than its profile. The correction compares each pipeline with the plan it runs, so it
    applies to this job too (before, only reports of the served plan counted, and pipeline 0 sent none)."""
    serve_job(client, "lagging", small, dp=2)
    for rank in range(4):
        client.register_rank("lagging", rank, rank % 2, small.frequencies(), pipeline_id=rank // 2)
    frontier = powers(client, "lagging", dp=2)
    cap = client.set_power_cap((frontier[0] + min(frontier)) / 2).watts
    assert cap is not None
    capped = client.get_job("lagging").plan_iteration_time
    times = [p.iteration_time for p in client.get_frontier("lagging").plans]
    factor = min(max(times), 1.1 * capped) / times[0]  # slower than the capped plan: pipeline 0 slows to it
    client.report_straggler("lagging", 1, factor)
    first = client.get_job("lagging")
    assert client.get_schedule("lagging", 0).plan_name != first.plan_name  # pipeline 0 keeps the straggler's pace
    with drawing_more_than_profiled(client, "lagging", ranks=4):
        wait_until(lambda: client.get_job("lagging").plan_name != first.plan_name, 30,
                   "the cap re-plans the job with a straggler")
        job = client.get_job("lagging")
        assert 1.1 * job.planned_power <= cap * (1 + 1e-9) < 1.1 * first.planned_power
        assert job.stragglers == {1: pytest.approx(factor)}
