"""One rank of the 2-process gloo test (spawned by test_power_limit_ddp.py).

Rank r replays column r of the V100 2-GPU log as its own GPU; rank 1 is a straggler at
100 W and 125 W (its time there is 1.5x the log's), so only aggregation (time = max over
ranks, energy = sum) explains the limit both ranks choose.
"""

from __future__ import annotations

import json
from pathlib import Path

from pl_replay import ReplayLog, make_monitor

LOG = "V100_resnet18_gpu0_1.csv"
STRAGGLER = {100: 1.5, 125: 1.5}  # power limit -> rank 1's time factor


def straggler_times(log: ReplayLog) -> dict[int, float]:
    return {pl: log.times[log.power_limits.index(pl)] * f for pl, f in STRAGGLER.items()}


def run_rank(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from perseus.dataloader import EnergyAwareDataLoader
    from perseus.power_limit import GlobalPowerLimitOptimizer, ZeusCost, distributed

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        result: dict = {"rank": rank}
        result["sum"] = distributed.all_reduce([rank + 1.0, 2.0], "sum")
        result["max"] = distributed.all_reduce([rank + 1.0], "max")
        result["min"] = distributed.all_reduce([rank + 1.0], "min")

        log = ReplayLog.read(LOG)
        monitor = make_monitor(log, columns=[rank])
        if rank == 1:
            monitor.time_override = straggler_times(log)
        plo = GlobalPowerLimitOptimizer(
            monitor,
            ZeusCost(0.5),
            warmup_steps=1,
            profile_steps=2,
            pl_step=25,
            profile_path=Path(out_dir) / "pl.json",
        )
        result["num_gpus"] = plo.num_gpus
        for _ in range(4):  # 8-step epochs: each cuts a limit short, so re-profiling is exercised too
            plo.on_epoch_begin()
            for _ in range(8):
                plo.on_step_begin()
                plo.on_step_end()
            plo.on_epoch_end()
        result["optimal"] = plo.optimal_power_limit
        result["applied"] = monitor.gpus[0].applied
        result["measurements"] = [[m.power_limit, m.time, m.energy] for m in plo.measurements]
        plo.close()

        # Data loader: rank 1 sees the target first (metric 30 at epoch 2); both ranks stop there.
        loader = EnergyAwareDataLoader(
            list(range(4)),
            monitor=make_monitor(log, columns=[rank]),
            max_epochs=10,
            target_metric=30,
            warmup_steps=0,
            profile_steps=1,
        )
        with loader:
            for epoch in loader.epochs():
                for _ in loader:
                    pass
                loader.report_metric(10.0 * (epoch + 1) if rank == 1 else 5.0 * (epoch + 1))
        result["loader_epochs"] = len(loader.history)
        result["loader_energy"] = loader.history[-1].energy
        result["loader_reason"] = loader.stop_reason
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()
