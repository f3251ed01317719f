"""The server-driven profiling sweep with simulated ranks (threads calling the real client)."""

from __future__ import annotations

from pathlib import Path

import pytest
from server_helpers import SimulatedRank, profile_slice

from perseus.client import PerseusClient
from perseus.profile import InstructionProfile, Measurement, PipelineProfile, load_profile, parse_profile
from perseus.server.app import ServerConfig, ServerThread
from perseus.solver import compute_frontier


def _synthetic(num_stages: int) -> PipelineProfile:
    """Energy falls with the clock down to a minimum, then rises (lower clocks only cost more)."""
    instructions = {}
    for s in range(num_stages):
        for kind, scale in (("forward", 1.0), ("backward", 2.0)):
            ms = []
            for f in range(1410, 854, -15):
                t = scale * 0.05 * 1410 / f * (1 + 0.1 * s)
                ms.append(Measurement(f, t, t * (200 + 280 * (f / 1410) ** 3)))
            instructions[(s, kind)] = InstructionProfile(s, kind, tuple(ms))
    return PipelineProfile(instructions, blocking_power=60.0)


def _expected_stop(profile: PipelineProfile, stage: int, rises: int) -> int:
    """How many frequencies (highest first) the sweep measures before every kind stopped."""
    needed = 0
    for kind in ("forward", "backward"):
        energies = [m.energy for m in profile[(stage, kind)].measurements]
        run, count = 0, len(energies)
        for i in range(1, len(energies)):
            run = run + 1 if energies[i] > energies[i - 1] else 0
            if run >= rises:
                count = i + 1
                break
        needed = max(needed, count)
    return needed


def _run_sweep(target: str, job_id: str, profile: PipelineProfile, num_stages: int, dp: int) -> list[SimulatedRank]:
    ranks = [SimulatedRank(target, job_id, r, r % num_stages, profile, pipeline_id=r // num_stages)
             for r in range(num_stages * dp)]
    for rank in ranks:
        rank.start()
    for rank in ranks:
        rank.join(timeout=120)
        assert not rank.is_alive() and rank.error is None, rank.error
    return ranks


def test_sweep_assembles_the_profile_and_serves_its_frontier(tmp_path: Path) -> None:
    profile = profile_slice(3, freq_step=2)
    config = ServerConfig(port=0, db=f"sqlite:///{tmp_path / 'p.db'}", profile_dir=tmp_path / "profiles")
    with ServerThread(config) as srv, PerseusClient(f"127.0.0.1:{srv.port}") as client:
        job = client.register_job(job_id="sweep", model="gpt3", num_stages=3, num_microbatches=4, dp_degree=2,
                                  blocking_power=profile.blocking_power, warmup_iterations=1, measure_iterations=2,
                                  early_stop_rises=2)
        assert job.phase == "profiling"
        first = client.register_rank("sweep", 0, 0, profile.frequencies())
        assert first.mode == "profiling" and first.profiling is not None
        assert first.profiling.frequency == max(profile.frequencies())
        assert (first.profiling.warmup_iterations, first.profiling.measure_iterations) == (1, 2)

        ranks = _run_sweep(f"127.0.0.1:{srv.port}", "sweep", profile, 3, 2)
        job = client.wait_for_phase("sweep", "serving", timeout=120)
        assembled_csv = srv.core.profile_of("sweep")
        assert assembled_csv is not None
        assembled = parse_profile(assembled_csv, source="assembled", blocking_power=profile.blocking_power)
        for stage in range(3):
            n = _expected_stop(profile, stage, 2)
            for kind in ("forward", "backward"):
                got = assembled[(stage, kind)].measurements
                want = profile[(stage, kind)].measurements[:n]  # highest clocks first, early stop applied
                assert [m.frequency for m in got] == [m.frequency for m in want]
                assert [m.time for m in got] == pytest.approx([m.time for m in want])
                assert [m.energy for m in got] == pytest.approx([m.energy for m in want])
        # Ranks swept highest to lowest, one report per frequency (replicas of a stage share the sweep).
        for rank in ranks:
            assert rank.reported == sorted(rank.reported, reverse=True)
        assert job.stages_profiled == 3 and job.num_profile_reports >= 2 * sum(
            _expected_stop(profile, s, 2) for s in range(3))
        expected = compute_frontier(assembled, "1f1b", 3, 4)
        assert job.frontier_size == len(expected.plans)
        assert client.get_schedule("sweep", 4).instructions == expected.fastest.stages[1]
        saved = load_profile(tmp_path / "profiles" / "sweep" / "profile.csv")
        assert saved.frequencies() == assembled.frequencies()


def test_sweep_stops_early_once_energy_keeps_rising(server: ServerThread, client: PerseusClient) -> None:
    profile = _synthetic(2)
    client.register_job(job_id="early", num_stages=2, num_microbatches=3, blocking_power=60.0,
                        early_stop_rises=3, warmup_iterations=1, measure_iterations=1)
    ranks = _run_sweep(f"127.0.0.1:{server.port}", "early", profile, 2, 1)
    client.wait_for_phase("early", ("optimizing", "serving"))
    assembled = parse_profile(server.core.profile_of("early") or "", source="x", blocking_power=60.0)
    for stage, rank in enumerate(ranks):
        n = _expected_stop(profile, stage, 3)
        assert 3 < n < 38  # the synthetic energy curve has its minimum mid-range
        assert len(rank.reported) == n
        assert assembled[(stage, "forward")].frequencies == tuple(range(1410, 854, -15))[:n]


def test_profiling_with_an_explicit_frequency_list(server: ServerThread, client: PerseusClient) -> None:
    profile = profile_slice(2, freq_step=1)
    client.register_job(job_id="listed", num_stages=2, num_microbatches=2, blocking_power=profile.blocking_power,
                        frequencies=[1410, 1200, 1005], early_stop_rises=5)
    ranks = _run_sweep(f"127.0.0.1:{server.port}", "listed", profile, 2, 1)
    assert [r.reported for r in ranks] == [[1410, 1200, 1005]] * 2
    client.wait_for_phase("listed", "serving")
