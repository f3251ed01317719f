"""Data-parallel aggregation with two real gloo processes: every rank must pick the same limit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pl_ddp_worker import LOG, run_rank, straggler_times
from pl_replay import ReplayLog

torch_mp = pytest.importorskip("torch.multiprocessing")


def test_two_ranks_aggregate_and_agree(tmp_path: Path) -> None:
    torch_mp.spawn(run_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    # Hand computation: energy summed over the two GPU columns, time the slower rank's.
    log = ReplayLog.read(LOG)
    slow = straggler_times(log)
    times = [max(t, slow.get(pl, t)) for pl, t in zip(log.power_limits, log.times, strict=True)]
    energies = log.energies([0, 1])
    max_power = 250 * 2
    costs = [0.5 * e + 0.5 * max_power * t for e, t in zip(energies, times, strict=True)]
    expected = log.power_limits[costs.index(min(costs))]
    undisturbed = [0.5 * e + 0.5 * max_power * t for e, t in zip(energies, log.times, strict=True)]
    assert expected == 150  # checked by hand: 100 W now costs 885.4 + 250 * 15.55 = 4773 vs 3664 at 150 W
    assert log.power_limits[undisturbed.index(min(undisturbed))] == 100  # without the straggler

    for res in results:
        assert res["sum"] == [3.0, 4.0] and res["max"] == [2.0] and res["min"] == [1.0]
        assert res["num_gpus"] == 2
        assert res["optimal"] == expected
        assert [m[0] for m in res["measurements"]] == log.power_limits
        assert [m[1] for m in res["measurements"]] == pytest.approx(times)
        assert [m[2] for m in res["measurements"]] == pytest.approx(energies)
        assert res["applied"][-2:] == [float(expected), None]  # optimum, then default restored by close()
        assert res["loader_epochs"] == 3 and res["loader_reason"] == "target metric 30 reached"
        assert res["loader_energy"] == pytest.approx(2.0)  # 1 J per GPU per epoch window, summed
    assert results[0]["applied"] == results[1]["applied"]

    saved = json.loads((tmp_path / "pl.json").read_text())  # written once, by rank 0
    assert saved["num_gpus"] == 2
    assert [m["energy"] for m in saved["measurements"]] == pytest.approx(energies)
