"""Conversions between :class:`JobSpec` and its protobuf message."""

from __future__ import annotations

from perseus.bso.spec import JobSpec
from perseus.v1 import bso_pb2


def spec_to_proto(spec: JobSpec) -> bso_pb2.JobSpec:
    return bso_pb2.JobSpec(
        job_id=spec.job_id,
        default_batch_size=spec.default_batch_size,
        batch_sizes=list(spec.batch_sizes),
        eta=spec.eta,
        beta=spec.beta,
        target_metric=spec.target_metric,
        higher_is_better=spec.higher_is_better,
        max_epochs=spec.max_epochs,
        window_size=spec.window_size,
        num_pruning_rounds=spec.num_pruning_rounds,
        max_power=spec.max_power,
        lease_seconds=spec.lease_seconds,
        seed=spec.seed,
    )


def spec_from_proto(msg: bso_pb2.JobSpec) -> JobSpec:
    """Unset optional fields (0) take the :class:`JobSpec` defaults."""
    defaults = JobSpec("", 1, (), 0.0, 1)
    return JobSpec(
        job_id=msg.job_id,
        default_batch_size=msg.default_batch_size,
        batch_sizes=tuple(msg.batch_sizes),
        target_metric=msg.target_metric,
        max_epochs=msg.max_epochs,
        higher_is_better=msg.higher_is_better,
        eta=msg.eta,
        beta=msg.beta,
        window_size=msg.window_size,
        num_pruning_rounds=msg.num_pruning_rounds or defaults.num_pruning_rounds,
        max_power=msg.max_power,
        lease_seconds=msg.lease_seconds or defaults.lease_seconds,
        seed=msg.seed,
    )
