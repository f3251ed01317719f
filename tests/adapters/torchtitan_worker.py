"""One rank of torchtitan's real pipeline-parallel code path on CPU (gloo), with a Perseus plan attached.

torchtitan's ``pipeline_llm`` splits a decoder into stages by module name, builds the
``PipelineStage`` objects on its pipeline mesh and the ``torch.distributed.pipelining``
schedule named in its ``ParallelismConfig``, as its trainer does; ``attach_perseus`` is
the one added call. The decoder is a small one with torchtitan's module names
(``tok_embeddings``, ``layers.N``, ``norm``, ``lm_head``): torchtitan's own Llama needs
flex attention, which does not finish compiling on this 2-core CPU machine. Run with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set; argv: SCHEDULE
PLAN_JSON OUT_JSON STEPS. Writes what this rank measured to OUT_JSON.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
import torchtitan.distributed.parallel_dims as parallel_dims_module
from adapter_helpers import write_result  # the worker's own directory is on sys.path
from torch import nn
from torchtitan.config import CompileConfig, ParallelismConfig, TrainingConfig
from torchtitan.distributed import ParallelDims
from torchtitan.distributed.pipeline_parallel import pipeline_llm

from merak_integration.adapters.plan_hooks import PlanHooks
from merak_integration.adapters.torchtitan import attach_perseus

SEQ_LEN, VOCAB, DIM, LAYERS = 16, 128, 32, 6


class TinyDecoder(nn.Module):
    """torchtitan's decoder layout; a stage keeps some of these modules, the rest are None or removed."""

    def __init__(self) -> None:
        super().__init__()
        self.tok_embeddings: nn.Module | None = nn.Embedding(VOCAB, DIM)
        self.layers = nn.ModuleDict(
            {str(i): nn.Sequential(nn.Linear(DIM, DIM), nn.GELU()) for i in range(LAYERS)}
        )
        self.norm: nn.Module | None = nn.LayerNorm(DIM)
        self.lm_head: nn.Module | None = nn.Linear(DIM, VOCAB)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.tok_embeddings(h) if self.tok_embeddings is not None else h
        for layer in self.layers.values():
            h = h + layer(h)
        h = self.norm(h) if self.norm is not None else h
        return self.lm_head(h) if self.lm_head is not None else h


class DecoderConfig:
    """What pipeline_llm reads from a model config: the layer list."""

    layers = [None] * LAYERS


def main() -> None:
    schedule_name, plan_path, out_path = sys.argv[1], sys.argv[2], sys.argv[3] % int(os.environ["RANK"])
    steps, num_microbatches = int(sys.argv[4]), int(sys.argv[5])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    # torchtitan falls back to "cuda" when it finds no accelerator; this machine has only a CPU.
    parallel_dims_module.device_type = "cpu"  # type: ignore[attr-defined]
    parallelism = ParallelismConfig(
        pipeline_parallel_degree=world,
        pipeline_parallel_schedule=schedule_name,
        pipeline_parallel_microbatch_size=1,
    )
    dims = ParallelDims.from_config(parallelism, world)
    dims.build_mesh()
    torch.manual_seed(0)
    model = TinyDecoder()

    def cross_entropy(pred: torch.Tensor, labels: torch.Tensor, **_: object) -> tuple[torch.Tensor, int]:
        return nn.functional.cross_entropy(pred.flatten(0, 1).float(), labels.flatten()), labels.numel()

    schedule, parts, has_first, has_last = pipeline_llm(
        model,
        parallel_dims=dims,
        training=TrainingConfig(local_batch_size=num_microbatches, seq_len=SEQ_LEN, steps=steps),
        parallelism=parallelism,
        compile_config=CompileConfig(),
        ac_config=None,  # only the parallelize_fn reads it; this run applies no SPMD parallelism
        dump_folder=os.path.dirname(out_path),  # nothing is dumped here, but never into the shared /tmp
        device=torch.device("cpu"),
        model_config=DecoderConfig(),  # type: ignore[arg-type]
        parallelize_fn=lambda m, **_: m,
        loss_fn=cross_entropy,
    )
    hooks = PlanHooks.from_plan(plan_path, stage=rank, report_path=f"{out_path}.jsonl")
    attach_perseus(schedule, hooks)  # the one line a torchtitan user adds

    optimizer = torch.optim.SGD([p for m in parts for p in m.parameters()], lr=1e-3)
    generator = torch.Generator().manual_seed(1)
    losses_per_step = []
    for _ in range(steps):
        tokens = torch.randint(0, VOCAB, (num_microbatches, SEQ_LEN + 1), generator=generator)
        inputs, labels = tokens[:, :-1], tokens[:, 1:]
        losses: list[torch.Tensor] = []
        optimizer.zero_grad()
        # The schedule splits the batch into one microbatch per sample.
        target = labels if has_last else None
        if has_first:
            schedule.step(inputs, target=target, losses=losses if has_last else None)
        else:
            schedule.step(target=target, losses=losses if has_last else None)
        optimizer.step()
        if losses:
            losses_per_step.append(float(torch.stack(losses).detach().mean()))
    hooks.close()
    write_result(out_path, rank, losses_per_step, hooks)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
