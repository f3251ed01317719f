"""Every Scheduler RPC against a real server on 127.0.0.1, checked against the real solver."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from server_helpers import profile_csv, profile_slice, solver_processes

from perseus.client import PerseusClient, PerseusRpcError, Target
from perseus.plan import FrequencyPlan
from perseus.profile import PipelineProfile
from perseus.server.app import ServerConfig, ServerThread
from perseus.solver import Frontier, compute_frontier
from perseus.v1 import scheduler_pb2, scheduler_pb2_grpc

S, M, DP = 4, 6, 2
JOB = "gpt3-serving"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, PerseusClient, Frontier, PipelineProfile]]:
    """A server with one serving job (4 stages x 6 microbatches, 2 pipelines) and all 8 ranks registered."""
    profile = profile_slice(S, freq_step=2)
    db = tmp_path_factory.mktemp("rpcs") / "perseus.db"
    with ServerThread(ServerConfig(port=0, db=f"sqlite:///{db}")) as srv:
        client = PerseusClient(f"127.0.0.1:{srv.port}", retry_timeout=5)
        job = client.register_job(job_id=JOB, model="gpt3-175b", partition="even", schedule="1f1b", num_stages=S,
                                  num_microbatches=M, dp_degree=DP, tp_degree=8, profile=profile)
        assert job.phase == "optimizing" and job.blocking_power == pytest.approx(83.64)
        for rank in range(S * DP):
            client.register_rank(JOB, rank, rank % S, profile.frequencies(), pipeline_id=rank // S,
                                 gpu_name="NVIDIA A100-SXM4-40GB", schedule="1f1b", num_microbatches=M)
        client.wait_for_phase(JOB, "serving", timeout=120)
        yield srv, client, compute_frontier(profile, "1f1b", S, M), profile
        client.close()


def _expect_plan(client: PerseusClient, plan: FrequencyPlan, ranks: range | list[int] = range(S * DP)) -> None:
    for rank in ranks:
        schedule = client.get_schedule(JOB, rank)
        assert schedule.mode == "plan"
        assert schedule.plan_name == plan.name
        assert schedule.instructions == plan.stages[rank % S]
        assert schedule.expected_iteration_time == pytest.approx(plan.iteration_time)


def test_frontier_matches_solver_and_fastest_is_default(served) -> None:
    _, client, frontier, _ = served
    info = client.get_frontier(JOB, include_plans=True)
    assert info.phase == "serving" and info.selected == "p000"
    assert [p.name for p in info.plans] == [p.name for p in frontier.plans]
    assert [p.iteration_time for p in info.plans] == pytest.approx([p.iteration_time for p in frontier.plans])
    assert [p.energy for p in info.plans] == pytest.approx([p.energy for p in frontier.plans])
    assert info.plans[3].plan == frontier.plans[3]
    _expect_plan(client, frontier.fastest)


@pytest.mark.parametrize(
    "make_target",
    [
        lambda f: (Target.fastest(), f.fastest),
        lambda f: (Target.max_slowdown(1.05), f.plan_within(f.fastest.iteration_time * 1.05)),
        lambda f: (Target.max_slowdown(1.0), f.fastest),
        lambda f: (Target.deadline((f.fastest.iteration_time + f.min_energy.iteration_time) / 2),
                   f.plan_within((f.fastest.iteration_time + f.min_energy.iteration_time) / 2)),
        lambda f: (Target.deadline(f.fastest.iteration_time / 2), f.fastest),  # infeasible: fastest
        lambda f: (Target.energy_budget((f.fastest.energy + f.min_energy.energy) / 2),
                   next(p for p in f.plans if p.energy <= (f.fastest.energy + f.min_energy.energy) / 2)),
        lambda f: (Target.energy_budget(1.0), f.min_energy),  # infeasible: least energy
    ],
    ids=["fastest", "slowdown-1.05", "slowdown-1.0", "deadline", "deadline-infeasible", "energy", "energy-infeasible"],
)
def test_each_frontier_target_selects_the_right_plan(served, make_target) -> None:
    _, client, frontier, _ = served
    target, expected = make_target(frontier)
    # nearest: the infeasible ones run the closest plan and say so (without it they are refused, see
    # test_server_admin.py); a feasible target leaves no note.
    job = client.set_target(JOB, target, nearest=True)
    assert job.target == target and job.plan_name == expected.name
    infeasible = ((target.kind == "deadline" and target.value < frontier.fastest.iteration_time)
                  or (target.kind == "energy_budget" and target.value < frontier.min_energy.energy))
    assert job.target_note.startswith("no plan meets") == infeasible
    _expect_plan(client, expected)
    client.set_target(JOB, Target.fastest())


def test_straggler_moves_other_pipelines_and_back(served) -> None:
    _, client, frontier, _ = served
    client.set_target(JOB, Target.fastest())
    slow_time = frontier.fastest.iteration_time * 1.2
    expected = frontier.plan_within(slow_time)
    assert expected.name != "p000" and expected.iteration_time <= slow_time

    updates: list = []
    subscribed, got_update = threading.Event(), threading.Event()
    watch = client.watch_schedule(JOB, 0)  # rank 0: stage 0 of pipeline 0

    def follow() -> None:
        for schedule in watch:
            updates.append(schedule)
            subscribed.set()
            if len(updates) == 2:
                got_update.set()
                return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    assert subscribed.wait(30)
    job, others = client.report_straggler(JOB, pipeline_id=1, factor=1.2)
    assert job.stragglers == {1: pytest.approx(1.2)} and others == expected.name
    _expect_plan(client, expected, ranks=range(S))  # pipeline 0 slows down to the straggler's pace
    _expect_plan(client, frontier.fastest, ranks=range(S, 2 * S))  # the straggler itself keeps its plan
    assert got_update.wait(30), "watch_schedule did not deliver the straggler switch"
    assert [u.plan_name for u in updates] == ["p000", expected.name]
    assert updates[1].version > updates[0].version

    job, others = client.report_straggler(JOB, pipeline_id=1, factor=1.0)
    assert job.stragglers == {} and others == "p000"
    _expect_plan(client, frontier.fastest)
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_straggler_slower_than_target_keeps_target(served) -> None:
    _, client, frontier, _ = served
    job = client.set_target(JOB, Target.max_slowdown(1.3))
    client.report_straggler(JOB, 0, 1.01)  # the target is already slower than this straggler
    _expect_plan(client, next(p for p in frontier.plans if p.name == job.plan_name))
    client.report_straggler(JOB, 0, 1.0)
    client.set_target(JOB, Target.fastest())


def test_baselines(served) -> None:
    _, client, frontier, profile = served
    job = client.set_target(JOB, Target.of_baseline("max-frequency"))
    assert job.plan_name == "baseline:max-frequency"
    for rank in range(S * DP):
        schedule = client.get_schedule(JOB, rank)
        assert schedule.mode == "plan"
        assert {p.frequency for p in schedule.instructions} == {max(profile.frequencies())}
        assert schedule.expected_iteration_time == pytest.approx(frontier.fastest.iteration_time, rel=0.05)

    client.set_target(JOB, Target.of_baseline("global-power-limit", max_slowdown=1.1))
    limits = {client.get_schedule(JOB, r).power_limit for r in range(S * DP)}
    assert len(limits) == 1 and next(iter(limits)) > 0
    assert all(client.get_schedule(JOB, r).mode == "power_limit" for r in range(S * DP))

    client.set_target(JOB, Target.of_baseline("per-stage-power-limit"))
    per_stage = [client.get_schedule(JOB, r).power_limit for r in range(S)]
    assert all(w > 0 for w in per_stage)
    assert [client.get_schedule(JOB, r + S).power_limit for r in range(S)] == per_stage

    client.set_target(JOB, Target.of_baseline("per-stage-power-limit", power_limits=(250, 260, 270, 280)))
    assert [client.get_schedule(JOB, r).power_limit for r in range(S)] == [250, 260, 270, 280]
    with pytest.raises(PerseusRpcError) as err:
        client.set_target(JOB, Target.of_baseline("per-stage-power-limit", power_limits=(250, 260)))
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "target.baseline.power_limits" in err.value.details
    client.set_target(JOB, Target.fastest())


def test_user_plan_file(served, tmp_path: Path) -> None:
    _, client, frontier, _ = served
    mine = dataclasses.replace(frontier.plans[5], name="hand-tuned")
    mine.save(tmp_path / "plan.json")
    job = client.set_target(JOB, Target.plan(tmp_path / "plan.json"))
    assert job.plan_name == "hand-tuned"
    _expect_plan(client, mine)

    wrong = dataclasses.replace(mine, num_microbatches=M + 1)
    with pytest.raises(PerseusRpcError) as err:
        client.set_target(JOB, Target.plan(wrong))
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "target.plan_json" in err.value.details
    swapped = dataclasses.replace(mine, stages=(mine.stages[0][::-1], *mine.stages[1:]))
    with pytest.raises(PerseusRpcError) as err:
        client.set_target(JOB, Target.plan(swapped))
    assert "target.plan_json" in err.value.details and "schedule runs" in err.value.details
    client.set_target(JOB, Target.fastest())


def test_iteration_reports_are_idempotent(served) -> None:
    srv, client, _, _ = served
    before = client.get_job(JOB).num_iteration_reports
    version = client.get_job(JOB).version
    for i in range(5):
        assert client.report_iteration(JOB, 3, i, 1.5 + i / 100, 2000.0 + i, "p000") == version
    client.report_iteration(JOB, 3, 2, 9.9, 9.9)  # a retry of iteration 2 keeps the first report
    assert client.get_job(JOB).num_iteration_reports == before + 5
    rows = [r for r in srv.core.iteration_reports(JOB) if r[0] == 3]
    assert [(it, t) for _, it, t, _, _ in rows] == [(i, pytest.approx(1.5 + i / 100)) for i in range(5)]


def test_frequencies_are_mapped_to_the_rank_gpu(served) -> None:
    _, client, frontier, profile = served
    shifted = [f + 5 for f in profile.frequencies()]  # a GPU whose clocks are 5 MHz off the profile's
    schedule = client.register_rank(JOB, 100, 1, shifted, pipeline_id=0)
    assert [p.frequency for p in schedule.instructions] == [p.frequency + 5 for p in frontier.fastest.stages[1]]
    with pytest.raises(PerseusRpcError) as err:
        client.register_rank(JOB, 101, 1, [300, 400, 500], pipeline_id=0)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details.startswith("supported_frequencies:") and "1410 MHz" in err.value.details


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_stages": 0}, "num_stages"),
        ({"num_microbatches": 0}, "num_microbatches"),
        ({"schedule": "zigzag"}, "schedule"),
        ({"job_id": "bad id!"}, "job_id"),
        ({"blocking_power": -1.0}, "blocking_power"),
        ({"dp_degree": 0, "tp_degree": 2000}, "tp_degree"),
        ({"schedule": "interleaved-1f1b", "num_microbatches": 5}, "num_microbatches"),
        ({"profile": "stage,instruction,frequency,time,energy\n0,forward,1410,-1,3\n"}, "profile_csv:2"),
        ({"warmup_iterations": 20000}, "profiling.warmup_iterations"),
        ({"frequencies": [0]}, "profiling.frequencies"),
        ({"target": Target.max_slowdown(0.5)}, "target.max_slowdown"),
    ],
)
def test_bad_job_fields_are_invalid_argument_naming_the_field(client: PerseusClient, kwargs: dict, field: str) -> None:
    args = {"num_stages": 4, "num_microbatches": 8, "blocking_power": 80.0, **kwargs}
    with pytest.raises(PerseusRpcError) as err:
        client.register_job(**args)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details.startswith(field + ":") or err.value.details.startswith(field), err.value.details


def test_rank_and_report_validation(served) -> None:
    _, client, _, profile = served
    freqs = profile.frequencies()
    cases = [
        (lambda: client.register_rank(JOB, 0, 9, freqs), grpc.StatusCode.INVALID_ARGUMENT, "stage:"),
        (lambda: client.register_rank(JOB, 0, 0, freqs, pipeline_id=5), grpc.StatusCode.INVALID_ARGUMENT, "pipeline_id:"),
        (lambda: client.register_rank(JOB, 0, 0, []), grpc.StatusCode.INVALID_ARGUMENT, "supported_frequencies:"),
        (lambda: client.register_rank(JOB, 0, 0, freqs, schedule="gpipe"), grpc.StatusCode.INVALID_ARGUMENT, "schedule:"),
        (lambda: client.register_rank(JOB, 0, 0, freqs, num_microbatches=7), grpc.StatusCode.INVALID_ARGUMENT,
         "num_microbatches:"),
        (lambda: client.register_rank("nope", 0, 0, freqs), grpc.StatusCode.NOT_FOUND, "job_id:"),
        (lambda: client.get_schedule(JOB, 999), grpc.StatusCode.NOT_FOUND, "rank:"),
        (lambda: client.report_iteration(JOB, 0, 1, -1.0, 5.0), grpc.StatusCode.INVALID_ARGUMENT, "time:"),
        (lambda: client.report_iteration(JOB, 0, 1, float("nan"), 5.0), grpc.StatusCode.INVALID_ARGUMENT, "time:"),
        (lambda: client.report_iteration(JOB, 0, 1, 1.0, float("inf")), grpc.StatusCode.INVALID_ARGUMENT, "energy:"),
        (lambda: client.report_straggler(JOB, 0, 0.5), grpc.StatusCode.INVALID_ARGUMENT, "factor:"),
        (lambda: client.report_straggler(JOB, 7, 1.5), grpc.StatusCode.INVALID_ARGUMENT, "pipeline_id:"),
        (lambda: client.report_profile(JOB, 0, 1410, {"sideways": (1.0, 1.0)}), grpc.StatusCode.INVALID_ARGUMENT,
         "measurements[0].instruction:"),
        (lambda: client.report_profile(JOB, 0, 1410, {"forward": (0.0, 1.0)}), grpc.StatusCode.INVALID_ARGUMENT,
         "measurements[0].time:"),
        (lambda: client.get_frontier("nope"), grpc.StatusCode.NOT_FOUND, "job_id:"),
        (lambda: client.list_jobs(["nope"]), grpc.StatusCode.NOT_FOUND, "job_id:"),
        (lambda: client.register_job(job_id=JOB, num_stages=2, num_microbatches=2), grpc.StatusCode.ALREADY_EXISTS,
         "job_id:"),
    ]
    for call, code, prefix in cases:
        with pytest.raises(PerseusRpcError) as err:
            call()
        assert (err.value.code, err.value.details[: len(prefix)]) == (code, prefix), err.value.details


def test_oversized_message_is_rejected_by_the_server(served) -> None:
    srv, _, _, _ = served
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}", options=options) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        request = scheduler_pb2.RegisterTrainingJobRequest(num_stages=2, num_microbatches=2, schedule="1f1b",
                                                          profile_csv="x" * (17 * 1024 * 1024))
        with pytest.raises(grpc.RpcError) as err:
            stub.RegisterJob(request, timeout=30)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_register_job_is_idempotent_and_jobs_are_listed(served) -> None:
    _, client, _, profile = served
    again = client.register_job(job_id=JOB, model="gpt3-175b", partition="even", schedule="1f1b", num_stages=S,
                                num_microbatches=M, dp_degree=DP, tp_degree=8, profile=profile)
    assert again.phase == "serving" and again.frontier_size > 0
    jobs = {j.job_id: j for j in client.list_jobs()}
    assert jobs[JOB].num_ranks >= S * DP and jobs[JOB].tp_degree == 8 and jobs[JOB].model == "gpt3-175b"


def test_health_and_reflection(served) -> None:
    srv, _, _, _ = served
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(service="")).status == health_pb2.HealthCheckResponse.SERVING
        status = health.Check(health_pb2.HealthCheckRequest(service="perseus.v1.Scheduler")).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        reply = next(iter(reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))))
        names = {s.name for s in reply.list_services_response.service}
        assert {"perseus.v1.Scheduler", "grpc.health.v1.Health"} <= names


def test_jobs_are_isolated(client: PerseusClient) -> None:
    """Two jobs on one server: same rank ids, different profiles; changing one leaves the other alone."""
    a100, a40 = profile_slice(2, freq_step=3), profile_slice(2, path=Path(__file__).resolve().parents[2] / "profiles"
                                                             / "gpt3-175b+a40_bf16" / "profile.csv", freq_step=4)
    for job_id, profile in (("iso-a", a100), ("iso-b", a40)):
        client.register_job(job_id=job_id, num_stages=2, num_microbatches=3, profile=profile_csv(profile),
                            blocking_power=profile.blocking_power)
        for rank in range(2):
            client.register_rank(job_id, rank, rank, profile.frequencies())
    a = client.wait_for_phase("iso-a", "serving")
    b = client.wait_for_phase("iso-b", "serving")
    fa, fb = compute_frontier(a100, "1f1b", 2, 3), compute_frontier(a40, "1f1b", 2, 3)
    assert a.frontier_size == len(fa.plans) and b.frontier_size == len(fb.plans)
    assert client.get_schedule("iso-b", 1).instructions == fb.fastest.stages[1]
    client.set_target("iso-a", Target.max_slowdown(1.2))
    client.report_straggler("iso-a", 0, 1.5)
    client.report_iteration("iso-a", 0, 0, 1.0, 1.0)
    after = client.get_job("iso-b")
    assert (after.version, after.plan_name, after.stragglers, after.num_iteration_reports) == (
        b.version, "p000", {}, 0)
    assert client.get_schedule("iso-b", 1).instructions == fb.fastest.stages[1]
    assert client.get_schedule("iso-a", 1).plan_name == fa.plan_within(fa.fastest.iteration_time * 1.2).name


def test_user_plan_without_profile_serves_at_once(served, client: PerseusClient) -> None:
    _, _, frontier, profile = served
    mine = dataclasses.replace(frontier.plans[2], name="from-file")
    job = client.register_job(job_id="planned", num_stages=S, num_microbatches=M, blocking_power=80.0,
                              target=Target.plan(mine))
    assert (job.phase, job.plan_name) == ("serving", "from-file")
    schedule = client.register_rank("planned", 0, 2, profile.frequencies())
    assert schedule.mode == "plan" and schedule.instructions == mine.stages[2]
    client.register_job(job_id="bare", num_stages=S, num_microbatches=M, blocking_power=80.0)
    with pytest.raises(PerseusRpcError) as err:
        client.set_target("bare", Target.of_baseline("max-frequency"))
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION and "no profile yet" in err.value.details


def test_targets_given_at_registration_apply_once_the_frontier_is_ready(client: PerseusClient) -> None:
    profile = profile_slice(2, freq_step=3)
    frontier = compute_frontier(profile, "1f1b", 2, 3)
    own = dataclasses.replace(frontier.plans[1], name="own")
    targets = {
        "t-slow": (Target.max_slowdown(1.1), frontier.plan_within(frontier.fastest.iteration_time * 1.1).name),
        "t-base": (Target.of_baseline("max-frequency"), "baseline:max-frequency"),
        "t-plan": (Target.plan(own), "own"),
    }
    for job_id, (target, _) in targets.items():
        client.register_job(job_id=job_id, num_stages=2, num_microbatches=3, profile=profile, target=target)
    for job_id, (target, plan_name) in targets.items():
        job = client.wait_for_phase(job_id, "serving")
        assert job.plan_name == plan_name
        assert job.target == (target if target.kind != "plan" else Target("plan"))  # plans are not echoed back
    with pytest.raises(PerseusRpcError) as err:
        client.set_target("t-plan", Target.deadline(0.0))
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and err.value.details.startswith("target.deadline:")


def test_frontier_runs_in_a_worker_process_while_rpcs_are_served(server: ServerThread, client: PerseusClient) -> None:
    profile = profile_slice(4, freq_step=1)
    client.register_job(job_id="busy", num_stages=4, num_microbatches=8, profile=profile)
    schedule = client.register_rank("busy", 0, 0, profile.frequencies())
    assert (schedule.phase, schedule.mode) == ("optimizing", "default")
    deadline = time.monotonic() + 30
    while not solver_processes(os.getpid()):  # its supervisor thread starts it a moment later
        assert time.monotonic() < deadline, "the frontier is not computed in a worker process"
        time.sleep(0.01)
    assert client.get_job("busy").phase == "optimizing"  # answered while the solver runs
    job = client.wait_for_phase("busy", "serving")
    assert job.frontier_size == len(compute_frontier(profile, "1f1b", 4, 8).plans)
