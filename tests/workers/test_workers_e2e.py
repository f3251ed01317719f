"""End to end on CPU: a real server process, torchrun workers on gloo, simulated A100s.

The server optimizes the real A100 GPT-3 stage profile and serves its no-slowdown plan (target
``fastest``); the workers fetch it, apply it instruction by instruction and report every
iteration. The test compares the measured iteration time and energy with an all-max-frequency
baseline run of the same pipeline.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from workers_helpers import ROOT, ServerProcess, iterations, launch

from perseus.client import PerseusClient, Target
from perseus.profile import PipelineProfile, load_profile

DEVICE_PROFILE = ROOT / "profiles" / "gpt3-175b+a100_sxm_bf16" / "profile.csv"


def _first_stages(num_stages: int) -> PipelineProfile:
    p = load_profile(DEVICE_PROFILE)
    return PipelineProfile({k: v for k, v in p.instructions.items() if k[0] < num_stages}, p.blocking_power, p.source)


def _run_end_to_end(tmp_path: Path, pp: int, nmb: int, scale: float, steps: int) -> None:
    server = ServerProcess(tmp_path)
    try:
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
                    # requested and applied (the simulated GPU's clock) == served, instruction by instruction
                    assert [i[1] for i in it["instructions"]] == served.frequencies()
                    assert [i[2] for i in it["instructions"]] == served.frequencies()
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
        assert abs(t_plan / t_base - 1) <= 0.03
        assert e_plan < e_base
    finally:
        server.stop()


def test_served_plan_two_stages(tmp_path: Path) -> None:
    _run_end_to_end(tmp_path, pp=2, nmb=4, scale=1.0, steps=8)


@pytest.mark.slow
def test_served_plan_four_stages(tmp_path: Path) -> None:
    _run_end_to_end(tmp_path, pp=4, nmb=8, scale=0.5, steps=5)
