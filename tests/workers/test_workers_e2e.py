"""End to end on CPU: a real server process, torchrun workers on gloo, simulated A100s.

The server optimizes the real A100 GPT-3 stage profile and serves its no-slowdown plan (target
``fastest``); the workers fetch it, apply it instruction by instruction and report every
iteration. The test compares the measured iteration time and energy with an all-max-frequency
baseline run of the same pipeline.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest
from workers_helpers import ROOT, ServerProcess, iterations, launch

from perseus.client import PerseusClient, Target
from perseus.plan import PowerStateSchedule
from perseus.profile import PipelineProfile, load_profile

DEVICE_PROFILE = ROOT / "profiles" / "gpt3-175b+a100_sxm_bf16" / "profile.csv"


def _first_stages(num_stages: int) -> PipelineProfile:
    p = load_profile(DEVICE_PROFILE)
    return PipelineProfile({k: v for k, v in p.instructions.items() if k[0] < num_stages}, p.blocking_power, p.source)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server process for the module (each test registers its own job): a start costs seconds of CPU."""
    proc = ServerProcess(tmp_path_factory.mktemp("server"))
    try:
        yield proc
    finally:
        proc.stop()


def _run_end_to_end(server: ServerProcess, tmp_path: Path, pp: int, nmb: int, scale: float, steps: int) -> None:
    job = f"e2e-pp{pp}"
    with PerseusClient(server.address) as client:
        client.register_job(job_id=job, model="gpt3-tiny", partition="uniform", num_stages=pp,
                            num_microbatches=nmb, profile=_first_stages(pp), target=Target.fastest())
        client.wait_for_phase(job, "serving", timeout=120)
    common = ["gpt3-tiny", "2", str(nmb), "--pp", str(pp), "--device", "sim", "--sim_time_scale", str(scale),
              "--max_steps", str(steps)]
    base = launch(*common, "--out_dir", str(tmp_path / "base"))
    assert base.returncode == 0, base.stdout[-2000:] + base.stderr[-4000:]
    plan = launch(*common, "--server", server.address, "--job_name", job, "--out_dir", str(tmp_path / "plan"))
    assert plan.returncode == 0, plan.stdout[-2000:] + plan.stderr[-4000:]

    with PerseusClient(server.address) as client:
        for rank in range(pp):
            served = client.get_schedule(job, rank)
            assert served.mode == "plan" and served.plan_name == "p000"
            record = json.loads((tmp_path / "plan" / f"rank{rank}.json").read_text())
            for it in record["iterations"]:
                names = [i[0] for i in it["instructions"]]
                assert names == [p.name for p in served.instructions]
                # Requested == served, instruction by instruction. Applied (the simulated GPU's clock read
                # back) may lag a request on a loaded machine, as on a real GPU: nearly all, not all.
                assert [i[1] for i in it["instructions"]] == served.frequencies()
                applied = [i[2] == f for i, f in zip(it["instructions"], served.frequencies(), strict=True)]
                assert sum(applied) >= 0.9 * len(applied), f"{sum(applied)} of {len(applied)} at the served clock"
        info = client.get_job(job)
        assert info.num_iteration_reports == pp * steps
        expected_time = served.expected_iteration_time

    # Skip the first iteration (gloo connection set-up); medians resist scheduler noise.
    t_base = statistics.median(r["time"] for r in iterations(tmp_path / "base")[1:])
    t_plan = statistics.median(r["time"] for r in iterations(tmp_path / "plan")[1:])
    e_base = statistics.median(r["energy"] for r in iterations(tmp_path / "base")[1:])
    e_plan = statistics.median(r["energy"] for r in iterations(tmp_path / "plan")[1:])
    print(f"\npp={pp} M={nmb}: baseline {t_base:.4f} s {e_base:.1f} J; plan {t_plan:.4f} s {e_plan:.1f} J "
          f"(planned {expected_time:.4f} s); time {100 * (t_plan / t_base - 1):+.2f}%, "
          f"energy {100 * (1 - e_plan / e_base):.2f}% lower")
    # Wall-clock time on a shared machine is no test oracle (the demo and README report it); only a
    # gross slowdown, which a wrong plan would cause, fails here.
    assert t_plan / t_base - 1 <= 0.15
    assert e_plan < e_base


# Two stages run the same path in test_workers_follow_a_target_change_live (served, applied, every
# report counted); a separate two-stage copy of this test only repeated it (two more launches).
@pytest.mark.slow
def test_served_plan_four_stages(server: ServerProcess, tmp_path: Path) -> None:
    _run_end_to_end(server, tmp_path, pp=4, nmb=8, scale=0.5, steps=5)


@pytest.mark.slow
def test_workers_follow_a_target_change_live(server: ServerProcess, tmp_path: Path) -> None:
    """``perseus target`` while training: the workers switch plans at an iteration boundary."""
    import subprocess
    import sys
    import time

    from workers_helpers import env

    job = "live"
    with PerseusClient(server.address) as client:
        client.register_job(job_id=job, model="gpt3-tiny", partition="uniform", num_stages=2,
                            num_microbatches=4, profile=_first_stages(2), target=Target.fastest())
        client.wait_for_phase(job, "serving", timeout=120)
        first = _served_stage0(client, job)
        proc = subprocess.Popen(
            [sys.executable, "-m", "merak_integration.launch", "gpt3-tiny", "2", "4", "--pp", "2", "--device",
             "sim", "--sim_time_scale", "0.3", "--max_steps", "30", "--server", server.address, "--job_name", job,
             "--out_dir", str(tmp_path / "out")],
            cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        deadline = time.monotonic() + 120
        while client.get_job(job).num_iteration_reports < 8 and time.monotonic() < deadline:
            time.sleep(0.1)
        client.set_target(job, Target.max_slowdown(1.2))
        second = _served_stage0(client, job)
        try:
            out, _ = proc.communicate(timeout=180)
        finally:
            proc.kill()
        assert proc.returncode == 0, out[-4000:]
        assert client.get_schedule(job, 0).frequencies() == second.frequencies()
        assert client.get_job(job).num_iteration_reports == 2 * 30  # every rank's every iteration
    assert second.plan_name != first.plan_name and second.frequencies() != first.frequencies()
    record = json.loads((tmp_path / "out" / "rank0.json").read_text())
    applied = [[i[1] for i in it["instructions"]] for it in record["iterations"]]
    # Read back from the simulated GPU: nearly all at the requested clock (a switch may lag, see above).
    held = [i[2] == i[1] for it in record["iterations"] for i in it["instructions"]]
    assert sum(held) >= 0.9 * len(held), f"{sum(held)} of {len(held)} at the requested clock"
    assert applied[0] == first.frequencies() and applied[-1] == second.frequencies()
    switch = applied.index(second.frequencies())
    # every iteration runs one plan or the other, never a mix, and the switch happens once
    assert all(a == first.frequencies() for a in applied[:switch])
    assert all(a == second.frequencies() for a in applied[switch:])


def _served_stage0(client: PerseusClient, job: str) -> PowerStateSchedule:
    name = client.get_job(job).plan_name
    plan = next(p.plan for p in client.get_frontier(job, include_plans=True).plans if p.name == name)
    assert plan is not None
    return plan.stage_schedule(0)
