"""Shared pieces of the power-limit examples: a tiny model, synthetic data, selector options.

The examples run anywhere: on a machine without an NVIDIA GPU ``get_gpus()`` returns a
simulated A100 driven by a real measured profile, and the training step brackets its
forward and backward passes with the GPU's instruction hooks so the simulated GPU takes
the profiled time and energy at whatever power limit is in force (on a real GPU the
hooks do nothing and the real kernels set the pace).
"""

from __future__ import annotations

import argparse
import os

import torch
from torch import nn

from perseus.device import GPU
from perseus.power_limit import Energy, OptimumSelector, Time, ZeusCost, max_slowdown_from_env

# Simulated GPUs: a 50 ms forward becomes 25 ms, long enough that the modelled GPU time
# (not the tiny model's CPU time) dominates each step, short enough for a sweep in seconds.
DEFAULT_SIM_TIME_SCALE = 0.5


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=2, help="epochs to train (recurring_job.py: at most)")
    parser.add_argument("--steps-per-epoch", type=int, default=32, help="training steps per epoch")
    parser.add_argument("--batch-size", type=int, default=32, help="samples per step")
    parser.add_argument(
        "--selector",
        choices=["slowdown", "time", "energy", "zeus"],
        default="slowdown",
        help="slowdown: lowest limit within PERSEUS_MAX_SLOWDOWN (default 1.1) of the fastest time",
    )
    parser.add_argument("--eta", type=float, default=0.5, help="ZeusCost energy weight in [0, 1]")
    parser.add_argument("--warmup-steps", type=int, default=1)
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--pl-step", type=float, default=50.0, help="watts between profiled power limits")
    parser.add_argument("--profile-path", default=None, help="save the profile here; reused on the next run")


def make_selector(args: argparse.Namespace) -> OptimumSelector:
    if args.selector == "time":
        return Time()
    if args.selector == "energy":
        return Energy()
    if args.selector == "zeus":
        return ZeusCost(args.eta)
    return max_slowdown_from_env(default=1.1)


def sim_time_scale() -> float | None:
    """Use the environment's PERSEUS_SIM_TIME_SCALE if set, else a scale that keeps the example short."""
    return None if os.environ.get("PERSEUS_SIM_TIME_SCALE") else DEFAULT_SIM_TIME_SCALE


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 2))


def synthetic_dataset(num_samples: int, seed: int = 0) -> torch.utils.data.TensorDataset:
    """Two linearly separable classes: the label is the sign of a fixed random projection."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_samples, 32, generator=generator)
    w = torch.randn(32, generator=generator)
    y = (x @ w > 0).long()
    return torch.utils.data.TensorDataset(x, y)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: tuple[torch.Tensor, torch.Tensor],
    gpus: list[GPU],
    device: torch.device,
) -> float:
    """One forward/backward/update; the GPU hooks let a simulated GPU model the time and energy."""
    x, y = (t.to(device) for t in batch)
    for gpu in gpus:
        gpu.on_instruction_begin(0, "forward")
    loss = nn.functional.cross_entropy(model(x), y)
    for gpu in gpus:
        gpu.on_instruction_end()
        gpu.on_instruction_begin(0, "backward")
    optimizer.zero_grad()
    loss.backward()
    for gpu in gpus:
        gpu.on_instruction_end()
    optimizer.step()
    return float(loss.item())


@torch.no_grad()
def accuracy(model: nn.Module, dataset: torch.utils.data.TensorDataset, device: torch.device) -> float:
    x, y = (t.to(device) for t in dataset.tensors)
    return float((model(x).argmax(dim=1) == y).float().mean().item())
