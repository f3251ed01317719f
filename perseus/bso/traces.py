"""The Zeus (NSDI '23) recurring-job traces shipped in ``perseus/bso/traces``.

``summary_train.csv``: for each (dataset, network, optimizer, batch size, run) and target metric,
the epoch at which the run reached it (``nan``: never). ``summary_power_<gpu>.csv``: for each
(dataset, network, optimizer, batch size, power limit in W) the seconds per epoch and average watts.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from perseus.errors import InputError

TRACE_DIR = Path(__file__).parent / "traces"
GPUS = ("a40", "v100", "rtx6000", "p100")


@dataclass(frozen=True)
class Workload:
    """A recurring job of the Zeus paper: what is trained, to which target, from which batch size."""

    name: str
    dataset: str
    network: str
    optimizer: str
    target_metric: float
    higher_is_better: bool
    default_batch_size: int


# The six workloads and default batch sizes of the Zeus paper (Table 3); targets as in its traces.
WORKLOADS: tuple[Workload, ...] = (
    Workload("cifar100-shufflenetv2", "cifar100", "shufflenetv2", "adadelta", 0.6, True, 1024),
    Workload("imagenet-resnet50", "imagenet", "resnet50", "adadelta", 0.65, True, 256),
    Workload("librispeech-deepspeech2", "librispeech", "deepspeech2", "adamw", 40.0, False, 192),
    Workload("movielens-ncf", "movielens-1m", "ncf", "adam", 0.41, True, 1024),
    Workload("squad-bert", "squad", "bert_base_uncased", "adamw", 84.0, True, 32),
    Workload("sentiment140-bert", "sentiment140", "bert_base_uncased", "adamw", 0.84, True, 128),
)


@dataclass(frozen=True)
class EpochPower:
    """Seconds per epoch and average watts of one batch size at one power limit."""

    time_per_epoch: float
    average_power: float

    @property
    def energy_per_epoch(self) -> float:
        return self.time_per_epoch * self.average_power


@dataclass(frozen=True)
class WorkloadTrace:
    """What the simulator needs for one workload on one GPU.

    Attributes:
        paths: Per batch size, the epoch each recorded run reached the target at (None: never).
        power: Per batch size, per power limit (W), the epoch time and power.
    """

    workload: Workload
    gpu: str
    paths: dict[int, tuple[int | None, ...]]
    power: dict[int, dict[int, EpochPower]]

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.paths) & set(self.power)))

    @property
    def max_power_limit(self) -> int:
        return max(pl for by_pl in self.power.values() for pl in by_pl)


def _rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        with path.open(newline="") as f:
            yield from enumerate(csv.DictReader(f), start=2)
    except OSError as exc:
        raise InputError(str(path), f"cannot read trace: {exc.strerror}") from None


def _number(path: Path, line: int, row: dict[str, str], column: str) -> float:
    try:
        return float(row[column])
    except (KeyError, TypeError, ValueError):
        raise InputError(str(path), f"column {column!r} must be a number, got {row.get(column)!r}", line) from None


def load_trace(workload: Workload, gpu: str, trace_dir: Path = TRACE_DIR) -> WorkloadTrace:
    """Read the train and power traces of ``workload`` on ``gpu``."""
    if gpu not in GPUS:
        raise InputError("--gpu", f"must be one of {', '.join(GPUS)}, got {gpu!r}")
    train_path = trace_dir / "summary_train.csv"
    paths: dict[int, list[int | None]] = {}
    for line, row in _rows(train_path):
        if (row.get("dataset"), row.get("network"), row.get("optimizer")) != (
            workload.dataset, workload.network, workload.optimizer,
        ):  # fmt: skip
            continue
        if not math.isclose(_number(train_path, line, row, "target_metric"), workload.target_metric):
            continue
        epoch = _number(train_path, line, row, "target_epoch")
        bs = int(_number(train_path, line, row, "batch_size"))
        paths.setdefault(bs, []).append(None if math.isnan(epoch) else int(epoch))
    power_path = trace_dir / f"summary_power_{gpu}.csv"
    power: dict[int, dict[int, EpochPower]] = {}
    for line, row in _rows(power_path):
        if (row.get("dataset"), row.get("network"), row.get("optimizer")) != (
            workload.dataset, workload.network, workload.optimizer,
        ):  # fmt: skip
            continue
        bs = int(_number(power_path, line, row, "batch_size"))
        pl = int(_number(power_path, line, row, "power_limit"))
        power.setdefault(bs, {})[pl] = EpochPower(
            _number(power_path, line, row, "time_per_epoch"), _number(power_path, line, row, "average_power")
        )
    if not paths:
        raise InputError(str(train_path), f"no runs of {workload.name} at target metric {workload.target_metric}")
    return WorkloadTrace(workload, gpu, {bs: tuple(p) for bs, p in paths.items()}, power)
