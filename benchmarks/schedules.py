"""One job under every schedule: iteration time at max frequency and energy Perseus saves at no slowdown.

The shipped GPT-3 175B A100 profile (8 stages) measured fused backwards; zero-bubble schedules get
them split ``--input-share`` to the input gradient (``benchmarks/backward_split.py`` measures it).
Chunked schedules charge each of a GPU's 2 chunks half its stage. Run:
.venv/bin/python benchmarks/schedules.py [--microbatches M] [--input-share X]
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

from perseus.pipeline.instruction import schedule_chunks
from perseus.profile import load_profile, split_backward
from perseus.solver import compute_frontier
from perseus.solver.baselines import max_frequency_plan

PROFILE = "profiles/gpt3-175b+a100_sxm_bf16/profile.csv"
SCHEDULES: tuple[tuple[str, int | None], ...] = (
    ("1f1b", None), ("interleaved-1f1b", 2), ("zb", 1), ("zb", 2), ("zbv", None), ("dualpipev", None),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--microbatches", type=int, default=16)
    parser.add_argument("--input-share", type=float, default=0.5)
    args = parser.parse_args()
    profile = split_backward(load_profile(PROFILE), args.input_share)
    stages = profile.num_stages
    table = Table(title=f"GPT-3 175B on 8 A100 stages, {args.microbatches} microbatches, B share {args.input_share}")
    for col in ("schedule", "chunks", "T max freq (s)", "vs 1F1B", "E max freq (J)", "E no slowdown (J)",
                "saved", "T least energy (s)", "E least energy (J)", "plans", "solve (s)"):
        table.add_column(col, justify="right")
    reference: float | None = None
    for schedule, asked in SCHEDULES:
        chunks = schedule_chunks(schedule, asked)
        start = time.perf_counter()
        frontier = compute_frontier(profile, schedule, stages, args.microbatches, chunks)
        solve = time.perf_counter() - start
        base = max_frequency_plan(profile, schedule, stages, args.microbatches, chunks)
        same_time = frontier.plan_within(base.iteration_time)
        reference = reference or base.iteration_time
        table.add_row(
            schedule, str(chunks), f"{base.iteration_time:.3f}", f"{base.iteration_time / reference:.3f}x",
            f"{base.energy:.0f}", f"{same_time.energy:.0f}", f"{100 * (1 - same_time.energy / base.energy):.1f}%",
            f"{frontier.min_energy.iteration_time:.3f}", f"{frontier.min_energy.energy:.0f}",
            str(len(frontier.plans)), f"{solve:.1f}",
        )
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
