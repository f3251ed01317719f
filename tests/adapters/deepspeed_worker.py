"""One rank of DeepSpeed's real PipelineEngine on CPU (gloo), with a Perseus plan attached.

DeepSpeed picks its CPU accelerator when it finds no GPU; the process group is gloo.
Run with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT set; argv: PLAN_JSON
OUT_JSON(%d = rank) STEPS MICROBATCHES.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import torch
from adapter_helpers import write_result  # the worker's own directory is on sys.path
from torch import nn

from merak_integration.adapters.deepspeed import attach_perseus
from merak_integration.adapters.plan_hooks import PlanHooks

HIDDEN, MICRO_BATCH = 16, 2


def main() -> None:
    plan_path, out_path = sys.argv[1], sys.argv[2] % int(os.environ["RANK"])
    steps, num_microbatches = int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(1)
    import deepspeed
    from deepspeed.pipe import LayerSpec, PipelineModule

    # DeepSpeed's CPU accelerator JIT-compiles a shared-memory collective op at init (minutes of
    # C++ on this 2-core machine); gloo does the communication here, so the op is marked unavailable.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    torch.distributed.init_process_group("gloo")
    deepspeed.init_distributed(dist_backend="gloo")  # adopts the process group above
    rank = torch.distributed.get_rank()
    torch.manual_seed(0)
    model = PipelineModule(
        layers=[LayerSpec(nn.Linear, HIDDEN, HIDDEN) for _ in range(4)],
        num_stages=torch.distributed.get_world_size(),
        loss_fn=nn.MSELoss(),
        partition_method="uniform",
    )
    config = {
        "train_micro_batch_size_per_gpu": MICRO_BATCH,
        "gradient_accumulation_steps": num_microbatches,
        "steps_per_print": 10**6,
    }
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    hooks = PlanHooks.from_plan(plan_path, stage=rank, report_path=f"{out_path}.jsonl")
    attach_perseus(engine, hooks)  # the one line a DeepSpeed user adds

    generator = torch.Generator().manual_seed(1)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            x = torch.randn(MICRO_BATCH, HIDDEN, generator=generator)
            yield x, torch.tanh(x)

    data = batches()
    losses = [float(engine.train_batch(data)) for _ in range(steps)]
    hooks.close()
    write_result(out_path, rank, losses, hooks)


if __name__ == "__main__":
    main()
