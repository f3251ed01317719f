"""``perseus bso``: the batch size optimizer's tools (``perseus bso simulate``)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from perseus.bso.simulator import SimulationResult

_WORKLOADS = (
    "cifar100-shufflenetv2", "imagenet-resnet50", "librispeech-deepspeech2", "movielens-ncf", "squad-bert",
    "sentiment140-bert",
)  # fmt: skip
_GPUS = ("a40", "v100", "rtx6000", "p100")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "bso",
        help="batch size optimizer for recurring jobs (trace-driven simulation)",
        description="Tools of the batch size optimizer that tunes the batch size of recurring training jobs.",
    )
    sub = parser.add_subparsers(dest="bso_command", metavar="SUBCOMMAND", required=True)
    sim = sub.add_parser(
        "simulate",
        help="replay the Zeus (NSDI '23) traces: optimizer vs. default batch size at max power",
        description=(
            "Trace-driven simulation of recurring jobs on the Zeus (NSDI '23) traces shipped with Perseus. "
            "Each recurrence trains until the target metric; the optimizer picks batch sizes with the "
            "service's policy (pruning, then Gaussian Thompson sampling, early stopping at beta x best cost) "
            "and power limits just in time. Prints cumulative energy and time against the baseline that "
            "always uses the default batch size at the maximum power limit."
        ),
    )
    sim.add_argument("--workload", choices=(*_WORKLOADS, "all"), default="all", help="workload (default: all)")
    sim.add_argument("--gpu", choices=(*_GPUS, "all"), default="all", help="GPU whose power trace to use (default: all)")
    sim.add_argument("--eta", type=float, default=0.5, help="cost = eta * J + (1 - eta) * max power (W) * s (default 0.5)")
    sim.add_argument("--beta", type=float, default=2.0, help="stop a run above beta x best converged cost (default 2)")
    sim.add_argument("--window", type=int, default=10, help="recent costs per batch size the bandit uses (0 = all)")
    sim.add_argument("--rounds", type=int, default=2, help="pruning rounds (default 2)")
    sim.add_argument("--recurrences", type=int, help="recurrences per job (default: 2 x batch sizes x power limits)")
    sim.add_argument("--max-epochs", type=int, help="epoch cap per run (default: 2 x slowest default-BS run in the trace)")
    sim.add_argument("--seed", type=int, default=1, help="seed of the sampled training runs and of the bandit")
    sim.add_argument("--trace-dir", metavar="DIR", help="directory with summary_train.csv and summary_power_<gpu>.csv")
    sim.add_argument("--markdown", action="store_true", help="print a Markdown table instead of a rich table")
    sim.set_defaults(handler=run_simulate)


def _check(args: argparse.Namespace) -> None:
    from perseus.errors import InputError

    if not 0.0 <= args.eta <= 1.0:
        raise InputError("--eta", f"must be in [0, 1], got {args.eta}")
    if not args.beta > 1.0:
        raise InputError("--beta", f"must be greater than 1, got {args.beta}")
    for name, value, low in (("--window", args.window, 0), ("--rounds", args.rounds, 1),
                             ("--recurrences", args.recurrences, 1), ("--max-epochs", args.max_epochs, 1)):  # fmt: skip
        if value is not None and value < low:
            raise InputError(name, f"must be at least {low}, got {value}")


def run_simulate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from perseus.bso.simulator import SimulationConfig, simulate
    from perseus.bso.traces import GPUS, TRACE_DIR, WORKLOADS, load_trace
    from perseus.errors import InputError

    _check(args)
    trace_dir = Path(args.trace_dir) if args.trace_dir else TRACE_DIR
    if not (trace_dir / "summary_train.csv").is_file():
        raise InputError(str(trace_dir), "no summary_train.csv here (give the Zeus trace directory)")
    config = SimulationConfig(
        eta=args.eta, beta=args.beta, window_size=args.window, num_pruning_rounds=args.rounds,
        recurrences=args.recurrences, max_epochs=args.max_epochs, seed=args.seed,
    )  # fmt: skip
    workloads = [w for w in WORKLOADS if args.workload in ("all", w.name)]
    gpus = [g for g in GPUS if args.gpu in ("all", g)]
    results: list[SimulationResult] = []
    skipped: list[str] = []
    for workload in workloads:
        for gpu in gpus:
            trace = load_trace(workload, gpu, trace_dir)
            if workload.default_batch_size not in trace.batch_sizes:
                skipped.append(f"{workload.name} on {gpu}: default batch size {workload.default_batch_size} not in the power trace")
                continue
            results.append(simulate(trace, config))
    if not results:
        raise InputError("--workload/--gpu", "no combination has its default batch size in the traces; " + "; ".join(skipped))
    print(_markdown(results) if args.markdown else _rich(results))
    for line in skipped:
        print(f"skipped {line}")
    return 0


_HEADER = ("Workload", "GPU", "Runs", "Baseline MJ", "BSO MJ", "Energy saved", "Baseline h", "BSO h", "Time change", "Final BS @ PL")


def _row(r: SimulationResult) -> tuple[str, ...]:
    b, o = r.baseline, r.optimized
    bs, pl = r.final_config
    return (
        r.workload, r.gpu, str(r.recurrences), f"{b.energy / 1e6:.2f}", f"{o.energy / 1e6:.2f}",
        f"{100 * (1 - o.energy / b.energy):.1f}%", f"{b.time / 3600:.1f}", f"{o.time / 3600:.1f}",
        f"{100 * (o.time / b.time - 1):+.1f}%", f"{bs} @ {pl} W",
    )  # fmt: skip


def _markdown(results: list[SimulationResult]) -> str:
    lines = ["| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
    lines += ["| " + " | ".join(_row(r)) + " |" for r in results]
    return "\n".join(lines)


def _rich(results: list[SimulationResult]) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Recurring jobs: batch size optimizer vs. default batch size at max power (cumulative)")
    for i, name in enumerate(_HEADER):
        table.add_column(name, justify="left" if i < 2 else "right")
    for r in results:
        table.add_row(*_row(r))
    console = Console(width=160)
    with console.capture() as capture:
        console.print(table)
    return capture.get().rstrip()
