"""Zeus's batch size optimizer client (``BatchSizeOptimizer``, ``JobSpec``) over :mod:`perseus.bso`.

Same job fields, defaults and client calls as Zeus (``get_batch_size``, ``on_train_begin``,
``on_evaluate``); the server is ``perseus serve`` (gRPC) instead of Zeus's HTTP server.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from perseus.bso import JobSpec as PerseusJobSpec
from perseus.bso.client import BatchSizeOptimizer as PerseusBatchSizeOptimizer
from perseus.bso.client import TrainFailError
from perseus.compat.zeus.monitor import ZeusMonitor
from perseus.errors import InputError, PerseusError

logger = logging.getLogger(__name__)

ZeusBSOTrainFailError = TrainFailError
"""Raised by :meth:`BatchSizeOptimizer.on_evaluate` when the server stopped a run that did not converge."""

# Bandit settings Zeus lets a job choose; Perseus's server runs with Zeus's defaults.
_FIXED_BANDIT_SETTINGS = {"mab_prior_mean": 0.0, "mab_prior_precision": 0.0, "mab_num_explorations": 2}


@dataclass
class JobSpec:
    """A recurring job whose batch size is tuned across its runs (Zeus's fields and defaults).

    Attributes:
        job_id_prefix: Start of the job id; with ``job_id=None`` a new id is made from it.
        batch_sizes: Candidate batch sizes.
        default_batch_size: The batch size tried first (one of ``batch_sizes``).
        job_id: Stable id shared by every run of the job (must start with the prefix).
        eta_knob: Weight of energy against time in the cost, in [0, 1].
        beta_knob: Stop a run once its cost exceeds this times the best cost; None never stops.
        target_metric: Validation metric at which a run has converged.
        higher_is_better_metric: True for accuracy-like metrics, False for loss-like ones.
        max_epochs: A run that has not converged after this many epochs is stopped.
        num_pruning_rounds: Pruning rounds before Thompson sampling.
        window_size: Recent costs per batch size the bandit uses (0 = all).
        mab_prior_mean, mab_prior_precision, mab_num_explorations: Bandit prior; only
            Zeus's defaults (0, 0, 2) are supported.
        mab_seed: Seed of the bandit's sampling (None = 0).
    """

    job_id_prefix: str
    batch_sizes: list[int]
    default_batch_size: int
    job_id: str | None = None
    eta_knob: float = 0.5
    beta_knob: float | None = 2.0
    target_metric: float = 0.50
    higher_is_better_metric: bool = True
    max_epochs: int = 100
    num_pruning_rounds: int = 2
    window_size: int = 0
    mab_prior_mean: float = 0.0
    mab_prior_precision: float = 0.0
    mab_num_explorations: int = 2
    mab_seed: int | None = None
    _resolved_id: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.batch_sizes:
            raise InputError("JobSpec.batch_sizes", "must not be empty")
        self.batch_sizes = sorted(self.batch_sizes)
        if self.default_batch_size not in self.batch_sizes:
            raise InputError(
                "JobSpec.default_batch_size",
                f"{self.default_batch_size} is not in batch_sizes {self.batch_sizes}",
            )
        if not 0.0 <= self.eta_knob <= 1.0:
            raise InputError("JobSpec.eta_knob", f"must be in [0, 1], got {self.eta_knob}")
        if self.beta_knob is not None and not self.beta_knob > 1.0:
            raise InputError("JobSpec.beta_knob", f"must be greater than 1 (or None), got {self.beta_knob}")
        if self.job_id is not None and not self.job_id.startswith(self.job_id_prefix):
            raise InputError("JobSpec.job_id", f"{self.job_id!r} does not start with {self.job_id_prefix!r}")
        for name, default in _FIXED_BANDIT_SETTINGS.items():
            if getattr(self, name) != default:
                raise InputError(
                    f"JobSpec.{name}", f"Perseus's bandit runs with {default}; got {getattr(self, name)}"
                )
        self._resolved_id = self.job_id or f"{self.job_id_prefix}-{uuid.uuid4().hex[:12]}"

    def to_perseus(self, max_power: float) -> PerseusJobSpec:
        """This job as Perseus's spec; ``max_power`` is the watts of all the job's GPUs at their maximum limit."""
        return PerseusJobSpec(
            job_id=self._resolved_id,
            default_batch_size=self.default_batch_size,
            batch_sizes=tuple(self.batch_sizes),
            target_metric=self.target_metric,
            max_epochs=self.max_epochs,
            higher_is_better=self.higher_is_better_metric,
            eta=self.eta_knob,
            beta=math.inf if self.beta_knob is None else self.beta_knob,
            window_size=self.window_size,
            num_pruning_rounds=self.num_pruning_rounds,
            max_power=max_power,
            seed=0 if self.mab_seed is None else self.mab_seed,
        )


def _grpc_target(server_url: str) -> str:
    """``host:port`` from Zeus-style ``http://host:port`` (or a bare ``host:port``)."""
    parts = urlsplit(server_url if "//" in server_url else f"//{server_url}")
    if not parts.hostname or parts.port is None:
        raise InputError(
            "BatchSizeOptimizer.server_url",
            f"expected http://HOST:PORT of `perseus serve`, got {server_url!r}",
        )
    return f"{parts.hostname}:{parts.port}"


class BatchSizeOptimizer(PerseusBatchSizeOptimizer):
    """Gets this run's batch size from the server and reports every epoch (Zeus's client calls).

    Args:
        monitor: Measures all and only the job's GPUs; each epoch is one window.
        server_url: ``http://HOST:PORT`` (or ``HOST:PORT``) of ``perseus serve``'s gRPC port.
        job: The recurring job.
        rank: Only rank 0 may ask for the batch size (other ranks get it from rank 0).
    """

    def __init__(self, monitor: ZeusMonitor, server_url: str, job: JobSpec, rank: int = 0) -> None:
        max_power = sum(gpu.power_limit_range()[1] for gpu in monitor.gpus)
        super().__init__(monitor.energy_monitor, _grpc_target(server_url), job.to_perseus(max_power))
        self.rank = rank
        if job.job_id is None:
            logger.warning(
                "batch size optimizer job registered as %r: pass it as job_id next run", self.job.job_id
            )

    @property
    def current_batch_size(self) -> int:
        """This run's batch size, or 0 before :meth:`get_batch_size`."""
        return self._trial.batch_size if self._trial is not None else 0

    def get_batch_size(self) -> int:
        """Register the job and open this run's trial (once); returns its batch size."""
        if self.rank != 0:
            raise PerseusError("only rank 0 may ask the batch size optimizer for a batch size")
        return super().get_batch_size()
