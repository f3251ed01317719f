"""How a transformer stage's backward splits into input gradient (B) and weight gradient (W).

Zero-bubble schedules run B and W as separate instructions. The shipped A100/A40 profiles measured
the fused backward only; Perseus splits it by the share of B measured here, with the same split
torch's pipeline stages use (``stage_backward_input`` then ``stage_backward_weight``), on blocks of
our models on the CPU. Run: .venv/bin/python benchmarks/backward_split.py [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.distributed.pipelining._backward import stage_backward_input, stage_backward_weight

from merak_integration.models import TransformerConfig, build_layers, get_config

#: (model, transformer blocks in the stage, microbatch size, sequence length): blocks only, since
#: they are nearly all of a large model's stage; gpt3-small at a short sequence keeps CPU time sane.
CASES: tuple[tuple[str, int, int, int], ...] = (
    ("gpt3-tiny", 4, 8, 64),
    ("bert-tiny", 4, 8, 64),
    ("gpt3-small", 2, 2, 256),
)


def _stage(model: str, blocks: int) -> tuple[nn.Sequential, TransformerConfig]:
    cfg = get_config(model)
    assert isinstance(cfg, TransformerConfig)
    return nn.Sequential(*build_layers(cfg, only=range(1, 1 + blocks))), cfg


def _timed(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(model: str, blocks: int, microbatch: int, seq_len: int, repeats: int) -> tuple[float, float, float]:
    """Median seconds of the fused backward, of B and of W for one microbatch through the stage."""
    stage, cfg = _stage(model, blocks)
    fused, inputs, weights = [], [], []
    for k in range(repeats + 1):  # the first round warms up the allocator
        torch.manual_seed(k)
        x = torch.randn(microbatch, seq_len, cfg.hidden, requires_grad=True)
        grad = torch.randn(microbatch, seq_len, cfg.hidden)
        out = stage(x)
        t_fused = _timed(lambda: torch.autograd.backward(out, grad))  # noqa: B023
        stage.zero_grad(set_to_none=True)
        out = stage(x)
        groups: list[dict] = []  # type: ignore[type-arg]

        def backward_input() -> None:
            groups.extend(stage_backward_input([out], [grad], [x], stage.parameters())[1])  # noqa: B023

        t_input = _timed(backward_input)
        t_weight = _timed(lambda: stage_backward_weight(stage.parameters(), groups))  # noqa: B023
        stage.zero_grad(set_to_none=True)
        if k:
            fused.append(t_fused)
            inputs.append(t_input)
            weights.append(t_weight)
    return statistics.median(fused), statistics.median(inputs), statistics.median(weights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    table = Table(title=f"backward split on CPU, median of {args.repeats} (torch {torch.__version__})")
    for col in ("model", "stage", "fused B+W (ms)", "B (ms)", "W (ms)", "B share", "(B+W)/fused"):
        table.add_column(col, justify="right")
    shares = []
    for model, blocks, mb, seq in CASES:
        fused, b, w = measure(model, blocks, mb, seq, args.repeats)
        shares.append(b / (b + w))
        table.add_row(model, f"{blocks} blocks, mb {mb} x {seq}", f"{1e3 * fused:.2f}", f"{1e3 * b:.2f}",
                      f"{1e3 * w:.2f}", f"{b / (b + w):.3f}", f"{(b + w) / fused:.3f}")
    console = Console(width=120)
    console.print(table)
    console.print(f"mean B share: {statistics.fmean(shares):.3f}")


if __name__ == "__main__":
    main()
