"""The closed loop end to end: a real server process, torchrun workers on gloo, simulated A100s.

- Automatic stragglers: ``--dp 2`` with pipeline 1 slowed 1.2x from step 8 (``--sim_slowdown``). With
  no manual call, the server (straggler window 5 iterations, so the test needs few steps) switches
  pipeline 0 to a slower, less-energy plan within 10 iterations;
  pipeline 0's measured energy drops and the job's iteration time stays the straggler's. The run is on
  the profile the job was planned with, so it never counts as drifted.
- Drift: the job is planned with the A100 profile, the simulated GPUs run a 1.3x slower one
  (``--sim_profile``); the server notices, rescales the profile and re-plans.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path
from typing import Any

from workers_helpers import ROOT, ServerProcess, iterations, launch

from perseus.client import PerseusClient, Target
from perseus.profile import InstructionProfile, Measurement, PipelineProfile, load_profile
from perseus.profile.io import format_profile

DEVICE_PROFILE = ROOT / "profiles" / "gpt3-175b+a100_sxm_bf16" / "profile.csv"
SLOW_FROM = 8  # after the server's straggler window (STRAGGLER_WINDOW) is full of normal iterations
STRAGGLER_WINDOW = 5  # the server's default is 9: a shorter window needs fewer training steps


def _first_stages(num_stages: int, scale: float = 1.0) -> PipelineProfile:
    """The shipped A100 profile's first stages, every 4th clock (a quicker frontier), times and energies x ``scale``."""
    p = load_profile(DEVICE_PROFILE)
    keep = set(p.frequencies()[::4])
    return PipelineProfile({k: InstructionProfile(k[0], k[1], tuple(Measurement(m.frequency, m.time * scale,
                                                                                m.energy * scale)
                                                                    for m in v.measurements if m.frequency in keep))
                            for k, v in p.instructions.items() if k[0] < num_stages}, p.blocking_power, p.source)


def _write_profile(folder: Path, profile: PipelineProfile) -> Path:
    """``profile`` as FOLDER/profile.csv with the shipped profile's meta.json (blocking power) beside it."""
    folder.mkdir()
    path = folder / "profile.csv"
    path.write_text(format_profile((p.stage, p.instruction, m) for p in profile for m in p.measurements))
    shutil.copy(DEVICE_PROFILE.parent / "meta.json", folder / "meta.json")
    return path


def _requested(out: Path, rank: int) -> list[list[Any]]:
    """Per iteration, the frequencies rank ``rank`` requested instruction by instruction."""
    record = json.loads((out / f"rank{rank}.json").read_text())
    return [[i[1] for i in it["instructions"]] for it in record["iterations"]]


def _energies(out: Path, ranks: list[int]) -> list[float]:
    records = [json.loads((out / f"rank{r}.json").read_text())["iterations"] for r in ranks]
    return [sum(its) for its in zip(*[[it["energy"] for it in rec] for rec in records], strict=True)]


def _pace(out: Path, ranks: list[int]) -> list[float]:
    """Per iteration, the busiest of ``ranks``' busy time (the sum of its instructions' measured times)."""
    records = [json.loads((out / f"rank{r}.json").read_text())["iterations"] for r in ranks]
    return [max(sum(i[3] for i in it["instructions"]) for it in its) for its in zip(*records, strict=True)]


def test_automatic_straggler_switches_the_fast_pipeline(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path, config=f"control=ControlConfig(straggler=StragglerConfig(window={STRAGGLER_WINDOW}))",
        imports="from perseus.server.control import ControlConfig\nfrom perseus.control.straggler import StragglerConfig")
    try:
        # Detection takes window // 2 + confirm (3) iterations after SLOW_FROM, the switch one or two more;
        # 24 steps leave about 10 after the switch to compare.
        job, steps, profile = "straggle", 24, _first_stages(2)
        sim = _write_profile(tmp_path / "a100", profile)  # planned and simulated alike
        with PerseusClient(server.address) as client:
            client.register_job(job_id=job, model="gpt3-tiny", partition="uniform", num_stages=2, num_microbatches=4,
                                dp_degree=2, profile=profile, target=Target.fastest())
            client.wait_for_phase(job, "serving", timeout=120)
        out = tmp_path / "out"
        run = launch("gpt3-tiny", "2", "4", "--pp", "2", "--dp", "2", "--device", "sim", "--sim_profile", str(sim),
                     "--max_steps", str(steps),
                     "--server", server.address, "--job_name", job, "--out_dir", str(out),
                     "--sim_slowdown", f"1:1.2:{SLOW_FROM}")
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
        with PerseusClient(server.address) as client:
            info = client.get_job(job)
        assert info.auto_stragglers == (1,) and 1.1 <= info.stragglers[1] <= 1.35, info.stragglers
        assert info.drift == "", info.drift_note  # planned and run on the same profile: no drift

        fast, slow = _requested(out, 0), _requested(out, 2)
        assert all(f == fast[0] for f in fast[:SLOW_FROM]) and all(f == slow[0] for f in slow)
        switch = next(i for i, f in enumerate(fast) if f != fast[0])
        assert all(f == fast[switch] for f in fast[switch:])  # switched once, never back
        e_fast = _energies(out, [0, 1])
        times = [r["time"] for r in iterations(out)]
        e_before = statistics.median(e_fast[SLOW_FROM + 1:switch])
        e_after = statistics.median(e_fast[switch + 1:])
        t_before = statistics.median(times[SLOW_FROM + 1:switch])
        t_after = statistics.median(times[switch + 1:])
        print(f"\nstraggler from step {SLOW_FROM}, pipeline 0 switched at step {switch}; pipeline 0 energy "
              f"{e_before:.1f} -> {e_after:.1f} J; job iteration {t_before:.4f} -> {t_after:.4f} s")
        assert switch <= SLOW_FROM + 10
        assert e_after < e_before
        # The fast pipeline keeps the straggler's pace: its slowest stage's busy time is no more than the
        # straggler's, both measured in the same iterations (so machine load hits both alike; a plan
        # slower than the straggler would be 5-20% over). The job's wall time is checked for gross
        # growth only: it is measured at different moments before and after, and load moves it by ~8%.
        pace_fast, pace_slow = _pace(out, [0, 1]), _pace(out, [2, 3])
        after = range(switch + 1, steps)
        ratio = statistics.median(pace_fast[i] / pace_slow[i] for i in after)
        print(f"fast pipeline's busy pace after the switch: {ratio:.3f} of the straggler's")
        assert ratio <= 1.03
        assert t_after <= t_before * 1.15
    finally:
        server.stop()


def test_drift_rescales_the_profile_and_replans(tmp_path: Path) -> None:
    sim = _write_profile(tmp_path / "slow-a100", _first_stages(2, scale=1.3))
    server = ServerProcess(
        tmp_path, config="control=ControlConfig(drift=DriftConfig(window=5, hold=3))",
        imports="from perseus.server.control import ControlConfig\nfrom perseus.control.drift import DriftConfig")
    try:
        job = "drift"
        with PerseusClient(server.address) as client:
            client.register_job(job_id=job, model="gpt3-tiny", partition="uniform", num_stages=2, num_microbatches=4,
                                profile=_first_stages(2), target=Target.fastest())
            client.wait_for_phase(job, "serving", timeout=120)
            planned = client.get_job(job).plan_iteration_time
        run = launch("gpt3-tiny", "2", "4", "--pp", "2", "--device", "sim", "--sim_profile", str(sim),
                     "--max_steps", "12", "--server", server.address, "--job_name", job,
                     "--out_dir", str(tmp_path / "out"))
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
        with PerseusClient(server.address) as client:
            import time

            deadline = time.monotonic() + 120
            while (info := client.get_job(job)).drift != "replanned" and time.monotonic() < deadline:
                time.sleep(0.2)
        print(f"\ndrift: {info.drift}: {info.drift_note}; planned {planned:.4f} s -> {info.plan_iteration_time:.4f} s")
        assert info.drift == "replanned", info.drift_note
        assert "stage 0 time 1.3" in info.drift_note and "stage 1 time 1.3" in info.drift_note
        assert info.phase == "serving" and info.frontier_size > 0
        assert abs(info.plan_iteration_time / planned - 1.3) < 0.03  # the new fastest plan: 1.3x the old
    finally:
        server.stop()


def test_sim_slowdown_flag_is_checked() -> None:
    import pytest

    from merak_integration.launch import build_parser, config_from_args
    from perseus.errors import InputError

    def cfg(*flags: str) -> Any:
        return config_from_args(build_parser().parse_args(["gpt3-tiny", "2", "4", "--device", "sim", *flags]))

    assert cfg("--dp", "2", "--sim_slowdown", "1:1.2:20").sim_slowdown == (1, 1.2, 20)
    assert cfg("--dp", "2", "--sim_slowdown", "0:1.5").sim_slowdown == (0, 1.5, 0)
    for bad, why in [("1:1.2", "out of range for --dp 1"), ("x", "expected PIPELINE:FACTOR"),
                     ("0:0", "factor must be"), ("0:1.2:-3", "FROM_STEP must be"), ("0:1:2:3", "expected")]:
        with pytest.raises(InputError, match=why) as err:
            cfg("--sim_slowdown", bad)
        assert err.value.where == "--sim_slowdown"
    run = launch("gpt3-tiny", "2", "4", "--device", "sim", "--sim_slowdown", "3:2")
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].count("--sim_slowdown") == 1
