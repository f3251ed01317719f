"""Data-parallel (DDP) training with one global power-limit optimizer per rank.

    torchrun --nproc_per_node=2 examples/ddp.py          # gloo + simulated GPUs on a CPU-only machine
    PERSEUS_MAX_SLOWDOWN=1.2 torchrun --nproc_per_node=4 examples/ddp.py --profile-path /tmp/pl.json

Each rank controls its own GPU (``LOCAL_RANK``). Profiling windows line up across ranks
because DDP steps in lockstep and ``DistributedSampler`` gives every rank the same number
of batches; at the end of profiling, time (max over ranks) and energy (sum) are
all-reduced, so every rank applies the same power limit. FSDP works the same way.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import torch
import torch.distributed as dist
from example_utils import (
    accuracy,
    add_common_args,
    make_model,
    make_selector,
    sim_time_scale,
    synthetic_dataset,
)
from example_utils import train_step as run_step
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from perseus.device import EnergyMonitor, get_gpus
from perseus.errors import PerseusError
from perseus.power_limit import GlobalPowerLimitOptimizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(parser)
    args = parser.parse_args(argv)

    use_cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(message)s")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    torch.manual_seed(0)
    torch.set_num_threads(1)

    try:
        train(args, rank, world, local_rank, device)  # the DDP model, which holds the group, is gone on return
        # Every rank is done with the group before any rank tears it down: a rank whose peer already closed
        # its gloo connections could still be in a collective, and abort at exit.
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


def train(args: argparse.Namespace, rank: int, world: int, local_rank: int, device: torch.device) -> None:
    """Train with one power-limit optimizer on this rank's GPU; prints the limit it settled on."""
    gpus = get_gpus(indices=[local_rank], time_scale=sim_time_scale())
    monitor = EnergyMonitor(gpus)
    plo = GlobalPowerLimitOptimizer(
        monitor,
        make_selector(args),
        warmup_steps=args.warmup_steps,
        profile_steps=args.profile_steps,
        pl_step=args.pl_step,
        profile_path=args.profile_path,
    )
    if rank == 0:
        print(f"{world} ranks, {plo.num_gpus} GPUs ({gpus[0].name}); {plo.selector}")

    model = DistributedDataParallel(make_model().to(device))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    dataset = synthetic_dataset(args.steps_per_epoch * args.batch_size * world)
    sampler: DistributedSampler[tuple[torch.Tensor, ...]] = DistributedSampler(dataset, shuffle=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, sampler=sampler)

    with plo:
        for epoch in range(args.epochs):
            sampler.set_epoch(epoch)
            plo.on_epoch_begin()
            for batch in loader:
                plo.on_step_begin()
                loss = run_step(model, optimizer, batch, gpus, device)
                plo.on_step_end()
            plo.on_epoch_end()
            print(
                f"rank {rank} epoch {epoch}: loss {loss:.3f}, "
                f"accuracy {accuracy(model, dataset, device):.3f}, power limit {plo.current_power_limit:g} W",
                flush=True,
            )
        print(f"rank {rank}: optimal power limit {plo.optimal_power_limit} W", flush=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PerseusError as exc:
        print(f"ddp: error: {exc}", file=sys.stderr)
        sys.exit(2)
