"""``bash run.sh MODEL MICROBATCH_SIZE NUM_MICROBATCHES [options]``: validate, then start torchrun.

Checks every option before any process starts (unsupported combinations such as ``--tp 2`` fail at
once with one clear line; a GPU run whose NVML is unusable fails here, not in every worker), prints
the partition and launches ``torch.distributed.run`` (:mod:`merak_integration.torchrun`) under a :class:`~merak_integration.supervisor.Supervisor`
with one worker process per GPU, or per simulated GPU on a machine without NVIDIA GPUs. The run
configuration travels to the workers in the environment (no temporary file to leave behind).
Several nodes join one run with ``--nnodes/--node_rank/--master_addr/--master_port`` (or the
``NNODES``, ``NODE_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` environment variables), as with torchrun.
The workers are :mod:`merak_integration.trainer`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from merak_integration import memory, runlog
from merak_integration.config import CONFIG_ENV, RunConfig
from merak_integration.modelspec import MODELS, describe
from merak_integration.pipelinespec import model_partition, normalize_schedule
from merak_integration.precheck import precheck
from merak_integration.supervisor import Supervisor
from perseus.cli.flags import FlagParser
from perseus.errors import InputError, PerseusError
from perseus.pipeline.instruction import virtual_stage


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


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw and raw.isdigit() else default


def build_parser() -> argparse.ArgumentParser:
    p = FlagParser(
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
    p.add_argument("--train_schedule", default="1f1b", help="1f1b|gpipe|interleaved|zb|zbv|dualpipev")
    p.add_argument("--num_chunks", "--chunks", type=_positive, default=None,
                   help="model chunks per GPU: interleaved (default 2), zb (default 1); zbv and dualpipev use 2")
    p.add_argument("--max_steps", type=_positive, default=10, help="training iterations")
    p.add_argument("--num_warmup_steps", type=_non_negative, default=2, help="discarded iterations per profiled frequency")
    p.add_argument("--num_prof_steps", type=_positive, default=3, help="measured iterations per profiled frequency")
    p.add_argument("--server", default=None, help="Perseus server HOST:PORT (register, fetch the plan, report)")
    p.add_argument("--job_name", default="", help="job name at the server (default: derived from the run)")
    p.add_argument("--plan", default=None,
                   help="plan JSON, or DIR:PLAN of `perseus optimize` output, to apply without a server")
    p.add_argument("--device", choices=("auto", "sim", "nvml"), default=os.environ.get("PERSEUS_DEVICE", "auto"),
                   help="auto: NVML beside CUDA, simulated GPUs without CUDA; sim: simulate on purpose")
    p.add_argument("--measure_only", nargs="?", const=True, default=False, type=_bool,
                   help="never change a GPU setting: train at default clocks and only measure (said in every report)")
    p.add_argument("--nnodes", type=_positive, default=_env_int("NNODES", 1), help="nodes in the run (env NNODES)")
    p.add_argument("--node_rank", type=_non_negative, default=_env_int("NODE_RANK", 0),
                   help="this node's rank, 0..nnodes-1 (env NODE_RANK)")
    p.add_argument("--master_addr", default=os.environ.get("MASTER_ADDR"),
                   help="address of node 0, reachable from every node (env MASTER_ADDR)")
    p.add_argument("--master_port", type=_positive, default=_env_int("MASTER_PORT", 29500),
                   help="a free port on node 0 (env MASTER_PORT)")
    p.add_argument("--nproc_per_node", type=_positive, default=None,
                   help="workers (GPUs) on this node (default: pp*dp/nnodes)")
    p.add_argument("--sim_profile", default=None, help="profile.csv the simulated GPUs model (default: A100 GPT-3)")
    p.add_argument("--sim_time_scale", type=float, default=1.0, help="simulated instruction time multiplier")
    p.add_argument("--sim_slowdown", default=None, metavar="PIPELINE:FACTOR[:FROM_STEP]",
                   help="make the simulated GPUs of one data-parallel pipeline FACTOR times slower from step FROM_STEP "
                   "(default 0) on: a straggler for tests and demos")
    p.add_argument("--profile_frequencies", default=None, help="comma-separated MHz to profile (default: all)")
    p.add_argument("--profile_window", type=float, default=None,
                   help="seconds of instructions per kind and frequency each profile mean covers "
                   "(default: 1 on NVIDIA GPUs, whose energy counters step; 0 on simulated ones)")
    p.add_argument("--data", default=None, help="text file (language models) or image folder (ResNets)")
    p.add_argument("--out_dir", default="out/train", help="where per-rank measurements are written")
    p.add_argument("--log_to", type=_sinks, default=(), metavar="tensorboard,wandb",
                   help="also log each iteration's time, energy and plan to TensorBoard (OUT_DIR/tensorboard) "
                   "and/or Weights & Biases (WANDB_MODE=offline works)")
    p.add_argument("--profile_dir", default="profiles", help="where --profile true writes the profile folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the model's initial weights and the data order")
    p.add_argument("--lr", type=float, default=1e-3, help="SGD learning rate")
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
    if args.profile_window is not None and args.profile_window < 0:
        raise InputError("--profile_window", f"must be >= 0 seconds, got {args.profile_window}")
    if args.sim_time_scale <= 0:
        raise InputError("--sim_time_scale", f"must be positive, got {args.sim_time_scale}")
    slowdown = parse_sim_slowdown(args.sim_slowdown, args.dp) if args.sim_slowdown else None
    if slowdown is not None and args.device == "nvml":
        raise InputError("--sim_slowdown", "slows simulated GPUs only; drop it or use --device sim")
    freqs = None
    if args.profile_frequencies:
        try:
            freqs = [int(x) for x in args.profile_frequencies.split(",")]
        except ValueError:
            raise InputError("--profile_frequencies", f"expected MHz values like 1410,1200; got {args.profile_frequencies!r}") from None
    world = args.pp * args.dp
    per_node = args.nproc_per_node or world // args.nnodes
    if per_node * args.nnodes != world:
        raise InputError("--nproc_per_node", f"{args.nnodes} node(s) x {per_node} workers != pp*dp = {world}")
    if not args.node_rank < args.nnodes:
        raise InputError("--node_rank", f"must be below --nnodes {args.nnodes}, got {args.node_rank}")
    if args.nnodes > 1 and not args.master_addr:
        raise InputError("--master_addr", "a run over several nodes needs node 0's address (or MASTER_ADDR)")
    if args.device == "nvml" or (args.device == "auto" and _cuda_count() > 0):
        have = _nvml_count(args.measure_only)
        if have < per_node:
            raise InputError("--pp/--dp", f"need {per_node} GPUs on this node, NVML sees {have}")
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
        measure_only=args.measure_only,
        log_to=args.log_to,
        sim_profile=args.sim_profile,
        sim_time_scale=args.sim_time_scale,
        sim_slowdown=slowdown,
        profile_frequencies=freqs,
        profile_window=args.profile_window,
        grad_dump=args.grad_dump,
        nnodes=args.nnodes,
        node_rank=args.node_rank,
        master_addr=args.master_addr,
        master_port=args.master_port,
        nproc_per_node=per_node,
    )


def parse_sim_slowdown(text: str, dp: int) -> tuple[int, float, int]:
    """``PIPELINE:FACTOR[:FROM_STEP]`` as (pipeline, factor, from step); InputError naming the flag."""
    parts = text.split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        pipeline, factor = int(parts[0]), float(parts[1])
        start = int(parts[2]) if len(parts) == 3 else 0
    except ValueError:
        raise InputError("--sim_slowdown", f"expected PIPELINE:FACTOR[:FROM_STEP] like 1:1.2:20, got {text!r}") from None
    if not 0 <= pipeline < dp:
        raise InputError("--sim_slowdown", f"pipeline {pipeline} is out of range for --dp {dp} (0..{dp - 1})")
    if not (factor > 0 and factor <= 100):
        raise InputError("--sim_slowdown", f"factor must be in (0, 100], got {parts[1]}")
    if start < 0:
        raise InputError("--sim_slowdown", f"FROM_STEP must be >= 0, got {start}")
    return pipeline, factor, start


def _sinks(text: str) -> tuple[str, ...]:
    try:
        return runlog.parse_sinks(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(exc.problem) from None


def _smallest_gpu_bytes() -> int:
    import torch

    return min(torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count()))


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _nvml_count(measure_only: bool) -> int:
    """GPUs NVML sees here; a one-line error naming NVML when it is unusable (before any worker starts)."""
    from perseus.device.nvml import NoNvidiaGPU, nvml_gpus
    from perseus.errors import DeviceError

    try:
        return len(nvml_gpus(mode="measure" if measure_only else "auto"))
    except NoNvidiaGPU as exc:
        raise DeviceError(
            f"--device nvml: NVML is unusable: {exc}; Perseus measures and sets GPU clocks through NVML "
            "(install the NVIDIA driver and nvidia-ml-py), or use --device sim to simulate GPUs"
        ) from None


def check_pipeline(cfg: RunConfig) -> str:
    """Partition the model and check the schedule's constraints; returns the partition table."""
    spec = cfg.pipeline_spec()
    model_cfg, part, kinds = model_partition(spec)
    s, m = cfg.pp, cfg.num_microbatches
    if cfg.schedule == "1f1b" and m < s:
        raise InputError("NUM_MICROBATCHES", f"1F1B needs at least as many microbatches as stages ({s}), got {m}")
    for stage in range(s):
        spec.instruction_names(stage)  # raises for schedule constraints (interleaved: M % S)
    per_rank = memory.estimate(model_cfg, part, kinds, cfg.schedule, s, cfg.microbatch_size, m)
    on_gpus = cfg.device != "sim" and _cuda_count() > 0
    warning = memory.check(per_rank, ranks_per_node=cfg.nproc_per_node or cfg.world_size,
                           gpu_bytes=_smallest_gpu_bytes() if on_gpus else None)
    biggest = max(per_rank, key=lambda r: r.total)
    chunks = part.num_stages // s
    gpu_of = None
    if chunks > 1:
        where = {virtual_stage(cfg.schedule, s, gpu, c): (gpu, c) for gpu in range(s) for c in range(chunks)}
        gpu_of = [where[v] for v in range(part.num_stages)]
    lines = [describe(model_cfg), part.table(kinds, gpu_of),
             f"memory: about {biggest.total / 2**30:.1f} GiB on the busiest rank ({biggest.rank})"]
    return "\n".join([*lines, warning] if warning else lines)


def torchrun_command(cfg: RunConfig) -> list[str]:
    """torchrun for this node: standalone on one node, static rendezvous at ``master_addr`` otherwise."""
    if cfg.nnodes == 1 and not cfg.master_addr:
        nodes = ["--standalone"]
    else:
        nodes = [f"--nnodes={cfg.nnodes}", f"--node_rank={cfg.node_rank}",
                 f"--master_addr={cfg.master_addr or '127.0.0.1'}", f"--master_port={cfg.master_port}"]
    return [
        sys.executable,
        "-m",
        "merak_integration.torchrun",  # torch.distributed.run, without its traceback when a worker fails
        *nodes,
        f"--nproc_per_node={cfg.nproc_per_node or cfg.world_size}",
        "-m",
        "merak_integration.trainer",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        cfg = precheck(cfg, warn=lambda line: print(line, file=sys.stderr, flush=True))
        print(check_pipeline(cfg), flush=True)
    except PerseusError as exc:
        print(f"perseus: error: {exc}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env[CONFIG_ENV] = cfg.to_json()
    return Supervisor(torchrun_command(cfg), env).run()


if __name__ == "__main__":
    raise SystemExit(main())
