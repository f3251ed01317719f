"""Single-GPU training with the global power-limit optimizer.

    python examples/single_gpu.py                      # simulated A100 when no NVIDIA GPU is present
    PERSEUS_MAX_SLOWDOWN=1.2 python examples/single_gpu.py --profile-path /tmp/pl.json
    python examples/single_gpu.py --selector zeus --eta 0.5

The first epoch(s) profile power limits from the maximum down (each for a few warmup
and measured steps), then training continues at the limit the selector picks. With
``--profile-path`` the next run skips profiling and applies the saved optimum at once.
The GPU's power limit is restored when the script ends, however it ends.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import torch
from example_utils import (
    accuracy,
    add_common_args,
    make_model,
    make_selector,
    sim_time_scale,
    synthetic_dataset,
)
from example_utils import train_step as run_step

from perseus.device import EnergyMonitor, get_gpus
from perseus.errors import PerseusError
from perseus.power_limit import GlobalPowerLimitOptimizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    torch.set_num_threads(1)  # a tiny model: more threads only add scheduling noise
    gpus = get_gpus(indices=[0], time_scale=sim_time_scale())
    monitor = EnergyMonitor(gpus)
    plo = GlobalPowerLimitOptimizer(
        monitor,
        make_selector(args),
        warmup_steps=args.warmup_steps,
        profile_steps=args.profile_steps,
        pl_step=args.pl_step,
        profile_path=args.profile_path,
    )
    print(
        f"GPU: {gpus[0].name}; power limits {', '.join(f'{p:g}' for p in plo.power_limits)} W; {plo.selector}"
    )

    model = make_model().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    dataset = synthetic_dataset(args.steps_per_epoch * args.batch_size)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True)

    with plo:  # restores the default power limit at the end (the device layer also does at exit)
        for epoch in range(args.epochs):
            monitor.begin_window("epoch")
            plo.on_epoch_begin()
            start = time.perf_counter()
            for batch in loader:
                plo.on_step_begin()
                loss = run_step(model, optimizer, batch, gpus, device)
                plo.on_step_end()
            plo.on_epoch_end()
            window = monitor.end_window("epoch")
            print(
                f"epoch {epoch}: loss {loss:.3f}, accuracy {accuracy(model, dataset, device):.3f}, "
                f"{time.perf_counter() - start:.2f} s, {window.total_energy:.1f} J, "
                f"power limit now {plo.current_power_limit:g} W"
            )
        if plo.optimal_power_limit is None:
            print("profiling did not finish: train longer (more epochs or steps per epoch)")
        else:
            print(f"optimal power limit: {plo.optimal_power_limit:g} W")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PerseusError as exc:
        print(f"single_gpu: error: {exc}", file=sys.stderr)
        sys.exit(2)
