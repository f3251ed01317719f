"""``bash run.sh MODEL MICROBATCH_SIZE NUM_MICROBATCHES [options]``: validate, then start torchrun.

Checks every option before any process starts (unsupported combinations such as ``--tp 2`` fail at
once with one clear line), prints the partition, writes the run configuration to a JSON file and
launches ``torch.distributed.run`` with one worker process per GPU, or per simulated GPU on a
machine without NVIDIA GPUs. The workers are :mod:`merak_integration.trainer`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from merak_integration.config import RunConfig
from merak_integration.models import MODELS, describe
from merak_integration.pipeline import model_partition, normalize_schedule
from perseus.errors import InputError, PerseusError


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bash run.sh",
        description="Pipeline-parallel training with Perseus frequency plans (profile, or train with a plan).",
        epilog=f"models: {', '.join(MODELS)}",
    )
    p.add_argument("model", metavar="MODEL", help="model name, e.g. gpt3-tiny or gpt3-xl")
    p.add_argument("microbatch_size", metavar="MICROBATCH_SIZE", type=_positive)
    p.add_argument("num_microbatches", metavar="NUM_MICROBATCHES", type=_positive)
    p.add_argument("--profile", type=_bool, default=False, help="true: run the profiling sweep and write a profile")
    p.add_argument("--pp", type=_positive, default=1, help="pipeline stages (GPUs per pipeline)")
    p.add_argument("--dp", type=_positive, default=1, help="data-parallel pipeline replicas")
    p.add_argument("--tp", type=_positive, default=1, help="tensor parallelism (only 1 is supported)")
    p.add_argument("--partition_method", default="uniform", help="uniform|parameters|uniform_transformer|custom:0,8,...")
    p.add_argument("--train_schedule", default="1f1b", help="1f1b|gpipe|interleaved")
    p.add_argument("--num_chunks", type=_positive, default=2, help="model chunks per GPU for interleaved (>= 2)")
    p.add_argument("--max_steps", type=_positive, default=10, help="training iterations")
    p.add_argument("--num_warmup_steps", type=_non_negative, default=2, help="discarded iterations per profiled frequency")
    p.add_argument("--num_prof_steps", type=_positive, default=3, help="measured iterations per profiled frequency")
    p.add_argument("--server", default=None, help="Perseus server HOST:PORT (register, fetch the plan, report)")
    p.add_argument("--job_name", default="", help="job name at the server (default: derived from the run)")
    p.add_argument("--plan", default=None, help="plan JSON, or DIR:PLAN of `perseus optimize` output, to apply without a server")
    p.add_argument("--device", choices=("auto", "sim", "nvml"), default=os.environ.get("PERSEUS_DEVICE", "auto"))
    p.add_argument("--sim_profile", default=None, help="profile.csv the simulated GPUs model (default: A100 GPT-3)")
    p.add_argument("--sim_time_scale", type=float, default=1.0, help="simulated instruction time multiplier")
    p.add_argument("--profile_frequencies", default=None, help="comma-separated MHz to profile (default: all)")
    p.add_argument("--data", default=None, help="text file (language models) or image folder (ResNets)")
    p.add_argument("--out_dir", default="out/train", help="where per-rank measurements are written")
    p.add_argument("--profile_dir", default="profiles", help="where --profile true writes the profile folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--grad_dump", default=None, help=argparse.SUPPRESS)
    return p


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Validate the options and build the worker configuration; raises InputError naming the flag."""
    if args.tp != 1:
        raise InputError("--tp", f"tensor parallelism is not supported (got --tp {args.tp}); use --tp 1")
    if args.model not in MODELS:
        raise InputError("MODEL", f"unknown model {args.model!r}; known models: {', '.join(MODELS)}")
    schedule, chunks = normalize_schedule(args.train_schedule, args.num_chunks)
    if args.profile and args.plan:
        raise InputError("--plan", "cannot apply a plan while profiling (--profile true)")
    if args.plan and args.server:
        raise InputError("--plan", "give either --plan or --server, not both")
    if args.server and (":" not in args.server or not args.server.rsplit(":", 1)[1].isdigit()):
        raise InputError("--server", f"expected HOST:PORT, got {args.server!r}")
    if args.sim_time_scale <= 0:
        raise InputError("--sim_time_scale", f"must be positive, got {args.sim_time_scale}")
    freqs = None
    if args.profile_frequencies:
        try:
            freqs = [int(x) for x in args.profile_frequencies.split(",")]
        except ValueError:
            raise InputError("--profile_frequencies", f"expected MHz values like 1410,1200; got {args.profile_frequencies!r}") from None
    if args.device == "nvml" or (args.device == "auto" and _cuda_count() > 0):
        have = _cuda_count()
        if have < args.pp * args.dp:
            raise InputError("--pp/--dp", f"need {args.pp * args.dp} GPUs on this machine, found {have}")
    return RunConfig(
        model=args.model,
        microbatch_size=args.microbatch_size,
        num_microbatches=args.num_microbatches,
        pp=args.pp,
        dp=args.dp,
        schedule=schedule,
        num_chunks=chunks,
        partition_method=args.partition_method,
        max_steps=args.max_steps,
        num_warmup_steps=args.num_warmup_steps,
        num_prof_steps=args.num_prof_steps,
        profile=args.profile,
        server=args.server,
        job_name=args.job_name,
        plan=args.plan,
        out_dir=args.out_dir,
        profile_dir=args.profile_dir,
        data=args.data,
        seed=args.seed,
        lr=args.lr,
        device=args.device,
        sim_profile=args.sim_profile,
        sim_time_scale=args.sim_time_scale,
        profile_frequencies=freqs,
        grad_dump=args.grad_dump,
    )


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_pipeline(cfg: RunConfig) -> str:
    """Partition the model and check the schedule's constraints; returns the partition table."""
    spec = cfg.pipeline_spec()
    model_cfg, part, kinds = model_partition(spec)
    s, m = cfg.pp, cfg.num_microbatches
    if cfg.schedule == "1f1b" and m < s:
        raise InputError("NUM_MICROBATCHES", f"1F1B needs at least as many microbatches as stages ({s}), got {m}")
    for stage in range(s):
        spec.instruction_names(stage)  # raises for schedule constraints (interleaved: M % S)
    return f"{describe(model_cfg)}\n{part.table(kinds)}"


def torchrun_command(cfg: RunConfig, config_path: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={cfg.world_size}",
        "-m",
        "merak_integration.trainer",
        str(config_path),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        print(check_pipeline(cfg), flush=True)
    except PerseusError as exc:
        print(f"perseus: error: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="perseus-run-") as tmp:
        path = Path(tmp) / "run.json"
        cfg.save(path)
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")
        try:
            return subprocess.call(torchrun_command(cfg, path), env=env)
        except KeyboardInterrupt:
            return 130


if __name__ == "__main__":
    raise SystemExit(main())
