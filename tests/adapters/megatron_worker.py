"""One rank of Megatron-Core's real pipeline schedules on CPU (gloo), with a Perseus plan attached.

Megatron-Core's schedules are written for CUDA: they allocate a few bookkeeping tensors
with ``device="cuda"`` and size P2P buffers on ``torch.cuda.current_device()``. This
machine has no GPU, so :class:`CudaOnCpu` sends every ``"cuda"`` device to the CPU (a torch
function mode over factory calls, plus ``torch.cuda.current_device``/``synchronize``);
nothing else of Megatron is changed. Run with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
set; argv: VIRTUAL_CHUNKS PLAN_JSON OUT_JSON(%d = rank) STEPS MICROBATCHES.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch
import torch.distributed as dist
from adapter_helpers import write_result  # the worker's own directory is on sys.path
from torch import nn
from torch.overrides import TorchFunctionMode

from merak_integration.adapters.megatron import perseus_forward_backward_func
from merak_integration.adapters.plan_hooks import PlanHooks

HIDDEN, SEQ, MICRO_BATCH = 16, 4, 2


class CudaOnCpu(TorchFunctionMode):
    """Run CUDA-only code on the CPU: any ``device="cuda"`` becomes the CPU, ``.cuda()`` is a no-op."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = dict(kwargs or {})
        device = kwargs.get("device")
        if isinstance(device, int) or (
            device is not None and "cuda" in str(device)
        ):  # an int is a CUDA ordinal
            kwargs["device"] = "cpu"
        if func is torch.Tensor.cuda:
            return args[0]
        return func(*args, **kwargs)


class Stage(nn.Module):
    """A pipeline stage as Megatron expects it: ``config``, ``model_type``, ``vp_stage``, ``set_input_tensor``."""

    def __init__(self, config: Any, vp_stage: int | None, first: bool, last: bool) -> None:
        from megatron.core.enums import ModelType

        super().__init__()
        self.config, self.vp_stage, self.first, self.last = config, vp_stage, first, last
        self.model_type = ModelType.encoder_or_decoder
        self.layer = nn.Linear(HIDDEN, HIDDEN)
        self.input_tensor: torch.Tensor | None = None

    def set_input_tensor(self, tensor: Any) -> None:
        self.input_tensor = tensor[0] if isinstance(tensor, list) else tensor

    def forward(self, x: torch.Tensor | None) -> torch.Tensor:
        h = x if self.first else self.input_tensor
        assert h is not None
        return torch.tanh(self.layer(h))


def main() -> None:
    chunks, plan_path = int(sys.argv[1]), sys.argv[2]
    out_path, steps, num_microbatches = (
        sys.argv[3] % int(os.environ["RANK"]),
        int(sys.argv[4]),
        int(sys.argv[5]),
    )
    torch.set_num_threads(1)
    torch.cuda.current_device = lambda: "cpu"  # type: ignore[assignment]
    torch.cuda.synchronize = lambda *a, **k: None  # type: ignore[assignment]
    dist.init_process_group("gloo")
    from megatron.core import parallel_state
    from megatron.core.transformer.transformer_config import TransformerConfig

    rank, world = dist.get_rank(), dist.get_world_size()
    parallel_state.initialize_model_parallel(
        pipeline_model_parallel_size=world,
        virtual_pipeline_model_parallel_size=chunks if chunks > 1 else None,
    )
    config = TransformerConfig(
        num_layers=world * chunks,
        hidden_size=HIDDEN,
        num_attention_heads=1,
        pipeline_model_parallel_size=world,
        virtual_pipeline_model_parallel_size=chunks if chunks > 1 else None,
        pipeline_dtype=torch.float32,
        batch_p2p_comm=False,
    )
    torch.manual_seed(rank)
    virtual = world * chunks
    model = [
        Stage(config, c if chunks > 1 else None, c * world + rank == 0, c * world + rank == virtual - 1)
        for c in range(chunks)
    ]

    def forward_step(data_iterator: Any, stage: Stage) -> tuple[torch.Tensor, Any]:
        x, y = next(data_iterator)
        out = stage(x)

        def loss_func(output: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            loss = ((output - y) ** 2).mean()
            return loss, {"loss": loss.detach()}

        return out, loss_func

    hooks = PlanHooks.from_plan(plan_path, stage=rank, report_path=f"{out_path}.jsonl")
    forward_backward = perseus_forward_backward_func(hooks)  # the one line a Megatron user changes
    generator = torch.Generator().manual_seed(0)
    losses = []
    with CudaOnCpu():
        for _ in range(steps):
            batches = [
                (torch.randn(SEQ, MICRO_BATCH, HIDDEN, generator=generator),) * 2
                for _ in range(num_microbatches)
            ]
            iterators = [iter(batches) for _ in range(chunks)]
            result = forward_backward(
                forward_step_func=forward_step,
                data_iterator=iterators if chunks > 1 else iterators[0],
                model=model if chunks > 1 else model[0],
                num_microbatches=num_microbatches,
                seq_length=SEQ,
                micro_batch_size=MICRO_BATCH,
            )
            losses.append([float(r["loss"]) for r in result])
    hooks.close()
    write_result(out_path, rank, losses, hooks)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
