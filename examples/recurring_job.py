"""A recurring training job with the energy-aware data loader.

    python examples/recurring_job.py --target-accuracy 0.9
    python examples/recurring_job.py --target-accuracy 0.999 --cost-threshold 2000   # stops early

The loader profiles power limits on the first epochs without any extra code, trains until
the validation accuracy reaches the target, and gives up early when the energy-time cost
spent so far plus the predicted cost to reach the target exceeds ``--cost-threshold``
(cost = eta * energy + (1 - eta) * max_power * time, in joules).
"""

from __future__ import annotations

import argparse
import logging
import sys

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

from perseus.dataloader import EnergyAwareDataLoader
from perseus.device import EnergyMonitor, get_gpus
from perseus.errors import PerseusError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(parser)
    parser.add_argument("--target-accuracy", type=float, default=0.9)
    parser.add_argument("--cost-threshold", type=float, default=None)
    # --epochs (from the common options) is the most epochs a run may take; the loader stops earlier
    # when the target is reached or the predicted cost exceeds the threshold.
    parser.set_defaults(selector="zeus", epochs=10)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    gpus = get_gpus(indices=[0], time_scale=sim_time_scale())
    # One labelling rule; the last 512 samples are held out for validation.
    data = synthetic_dataset(args.steps_per_epoch * args.batch_size + 512, seed=0)
    split = len(data) - 512
    train_set = torch.utils.data.TensorDataset(*(t[:split] for t in data.tensors))
    val_set = torch.utils.data.TensorDataset(*(t[split:] for t in data.tensors))

    loader = EnergyAwareDataLoader(
        torch.utils.data.DataLoader(train_set, batch_size=args.batch_size, shuffle=True),
        monitor=EnergyMonitor(gpus),
        max_epochs=args.epochs,
        target_metric=args.target_accuracy,
        cost_threshold=args.cost_threshold,
        eta=args.eta,
        selector=make_selector(args),
        warmup_steps=args.warmup_steps,
        profile_steps=args.profile_steps,
        pl_step=args.pl_step,
        profile_path=args.profile_path,
    )
    model = make_model().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    with loader:
        for epoch in loader.epochs():
            for batch in loader:
                run_step(model, optimizer, batch, gpus, device)
            acc = accuracy(model, val_set, device)
            loader.report_metric(acc, higher_is_better=True)
            print(f"epoch {epoch}: validation accuracy {acc:.3f}")
    for record in loader.history:
        print(f"epoch {record.epoch}: {record.time:.2f} s, {record.energy:.0f} J, cost {record.cost:.0f} J")
    print(
        f"stopped: {loader.stop_reason}; {len(loader.history)} epochs, {loader.total_time:.2f} s, "
        f"{loader.total_energy:.0f} J, power limit {loader.optimizer.optimal_power_limit} W"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PerseusError as exc:
        print(f"recurring_job: error: {exc}", file=sys.stderr)
        sys.exit(2)
