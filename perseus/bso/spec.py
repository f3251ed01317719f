"""The spec of a recurring job, shared by the client and the server."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from perseus.bso.search import DEFAULT_PRUNING_ROUNDS, SearchConfig
from perseus.errors import InputError

DEFAULT_LEASE_SECONDS = 2 * 3600.0


@dataclass(frozen=True)
class JobSpec:
    """A recurring training job whose batch size the optimizer tunes.

    Attributes:
        job_id: Stable name of the recurring job; every run of it uses the same id.
        default_batch_size: The batch size the user would otherwise use; it is explored first.
        batch_sizes: Candidate batch sizes (the default is added if missing).
        target_metric: Validation metric value at which a run has converged.
        max_epochs: A run that has not converged after this many epochs is stopped.
        higher_is_better: True for accuracy-like metrics, False for WER/loss-like ones.
        eta: Energy/time trade-off of the cost ``eta * J + (1 - eta) * max_power * s`` (0..1).
        beta: A run is stopped once its cost exceeds ``beta`` x the best converged cost (> 1).
        window_size: Recent costs per batch size the bandit uses (0 = all).
        num_pruning_rounds: Pruning rounds before Thompson sampling starts.
        max_power: Watts: sum of the maximum power limits of the job's GPUs (0 = let the client fill it in).
        lease_seconds: A running trial that reports nothing for this long is marked failed.
        seed: Seed of the bandit's sampling.
    """

    job_id: str
    default_batch_size: int
    batch_sizes: tuple[int, ...]
    target_metric: float
    max_epochs: int
    higher_is_better: bool = True
    eta: float = 0.5
    beta: float = 2.0
    window_size: int = 10
    num_pruning_rounds: int = DEFAULT_PRUNING_ROUNDS
    max_power: float = 0.0
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    seed: int = 0

    def normalized(self) -> JobSpec:
        """A validated copy: candidates sorted and deduplicated with the default included.

        Raises:
            InputError: naming the first bad field.
        """
        where = f"job {self.job_id!r}" if self.job_id else "job"
        if not self.job_id or len(self.job_id) > 255:
            raise InputError(where, "job_id must be a non-empty string of at most 255 characters")
        sizes = sorted({int(b) for b in (*self.batch_sizes, self.default_batch_size)})
        if any(b <= 0 for b in sizes):
            raise InputError(where, f"batch sizes must be positive integers, got {sizes}")
        if not 0.0 <= self.eta <= 1.0:
            raise InputError(where, f"eta must be in [0, 1], got {self.eta}")
        if not self.beta > 1.0:
            raise InputError(where, f"beta must be greater than 1, got {self.beta}")
        if self.max_epochs < 1:
            raise InputError(where, f"max_epochs must be at least 1, got {self.max_epochs}")
        if not math.isfinite(self.target_metric):
            raise InputError(where, f"target_metric must be a finite number, got {self.target_metric}")
        if self.window_size < 0:
            raise InputError(where, f"window_size must be >= 0, got {self.window_size}")
        if self.num_pruning_rounds < 1:
            raise InputError(where, f"num_pruning_rounds must be >= 1, got {self.num_pruning_rounds}")
        if not (math.isfinite(self.max_power) and self.max_power > 0):
            raise InputError(where, f"max_power must be a positive number of watts, got {self.max_power}")
        if not self.lease_seconds > 0:
            raise InputError(where, f"lease_seconds must be positive, got {self.lease_seconds}")
        return replace(self, batch_sizes=tuple(sizes))

    def search_config(self) -> SearchConfig:
        return SearchConfig(
            batch_sizes=tuple(self.batch_sizes),
            default_batch_size=self.default_batch_size,
            eta=self.eta,
            beta=self.beta,
            target_metric=self.target_metric,
            higher_is_better=self.higher_is_better,
            max_epochs=self.max_epochs,
            max_power=self.max_power,
            window_size=self.window_size,
            num_pruning_rounds=self.num_pruning_rounds,
            seed=self.seed,
        )
