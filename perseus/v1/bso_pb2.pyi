from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_UNSPECIFIED: _ClassVar[Decision]
    DECISION_CONTINUE: _ClassVar[Decision]
    DECISION_CONVERGED: _ClassVar[Decision]
    DECISION_STOP_COST: _ClassVar[Decision]
    DECISION_STOP_MAX_EPOCHS: _ClassVar[Decision]
    DECISION_STOP_ENDED: _ClassVar[Decision]
DECISION_UNSPECIFIED: Decision
DECISION_CONTINUE: Decision
DECISION_CONVERGED: Decision
DECISION_STOP_COST: Decision
DECISION_STOP_MAX_EPOCHS: Decision
DECISION_STOP_ENDED: Decision

class JobSpec(_message.Message):
    __slots__ = ("job_id", "default_batch_size", "batch_sizes", "eta", "beta", "target_metric", "higher_is_better", "max_epochs", "window_size", "num_pruning_rounds", "max_power", "lease_seconds", "seed")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZES_FIELD_NUMBER: _ClassVar[int]
    ETA_FIELD_NUMBER: _ClassVar[int]
    BETA_FIELD_NUMBER: _ClassVar[int]
    TARGET_METRIC_FIELD_NUMBER: _ClassVar[int]
    HIGHER_IS_BETTER_FIELD_NUMBER: _ClassVar[int]
    MAX_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_PRUNING_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    MAX_POWER_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    default_batch_size: int
    batch_sizes: _containers.RepeatedScalarFieldContainer[int]
    eta: float
    beta: float
    target_metric: float
    higher_is_better: bool
    max_epochs: int
    window_size: int
    num_pruning_rounds: int
    max_power: float
    lease_seconds: float
    seed: int
    def __init__(self, job_id: _Optional[str] = ..., default_batch_size: _Optional[int] = ..., batch_sizes: _Optional[_Iterable[int]] = ..., eta: _Optional[float] = ..., beta: _Optional[float] = ..., target_metric: _Optional[float] = ..., higher_is_better: _Optional[bool] = ..., max_epochs: _Optional[int] = ..., window_size: _Optional[int] = ..., num_pruning_rounds: _Optional[int] = ..., max_power: _Optional[float] = ..., lease_seconds: _Optional[float] = ..., seed: _Optional[int] = ...) -> None: ...

class RegisterJobRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ...) -> None: ...

class RegisterJobResponse(_message.Message):
    __slots__ = ("spec", "created")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    created: bool
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class GetBatchSizeRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class TrialAssignment(_message.Message):
    __slots__ = ("job_id", "trial_number", "batch_size", "kind", "lease_seconds")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TRIAL_NUMBER_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    trial_number: int
    batch_size: int
    kind: str
    lease_seconds: float
    def __init__(self, job_id: _Optional[str] = ..., trial_number: _Optional[int] = ..., batch_size: _Optional[int] = ..., kind: _Optional[str] = ..., lease_seconds: _Optional[float] = ...) -> None: ...

class ReportEpochRequest(_message.Message):
    __slots__ = ("job_id", "trial_number", "epoch", "time", "energy", "metric")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TRIAL_NUMBER_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ENERGY_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    trial_number: int
    epoch: int
    time: float
    energy: float
    metric: float
    def __init__(self, job_id: _Optional[str] = ..., trial_number: _Optional[int] = ..., epoch: _Optional[int] = ..., time: _Optional[float] = ..., energy: _Optional[float] = ..., metric: _Optional[float] = ...) -> None: ...

class ReportEpochResponse(_message.Message):
    __slots__ = ("decision", "cost", "message")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    cost: float
    message: str
    def __init__(self, decision: _Optional[_Union[Decision, str]] = ..., cost: _Optional[float] = ..., message: _Optional[str] = ...) -> None: ...

class EndTrialRequest(_message.Message):
    __slots__ = ("job_id", "trial_number", "failed", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TRIAL_NUMBER_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    trial_number: int
    failed: bool
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., trial_number: _Optional[int] = ..., failed: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class EndTrialResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: str
    def __init__(self, status: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class TrialState(_message.Message):
    __slots__ = ("trial_number", "batch_size", "kind", "status", "epochs", "time", "energy", "cost", "reason")
    TRIAL_NUMBER_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ENERGY_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    trial_number: int
    batch_size: int
    kind: str
    status: str
    epochs: int
    time: float
    energy: float
    cost: float
    reason: str
    def __init__(self, trial_number: _Optional[int] = ..., batch_size: _Optional[int] = ..., kind: _Optional[str] = ..., status: _Optional[str] = ..., epochs: _Optional[int] = ..., time: _Optional[float] = ..., energy: _Optional[float] = ..., cost: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class JobState(_message.Message):
    __slots__ = ("spec", "phase", "survivors", "has_best", "best_cost", "best_batch_size", "trials")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    HAS_BEST_FIELD_NUMBER: _ClassVar[int]
    BEST_COST_FIELD_NUMBER: _ClassVar[int]
    BEST_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    phase: str
    survivors: _containers.RepeatedScalarFieldContainer[int]
    has_best: bool
    best_cost: float
    best_batch_size: int
    trials: _containers.RepeatedCompositeFieldContainer[TrialState]
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ..., phase: _Optional[str] = ..., survivors: _Optional[_Iterable[int]] = ..., has_best: _Optional[bool] = ..., best_cost: _Optional[float] = ..., best_batch_size: _Optional[int] = ..., trials: _Optional[_Iterable[_Union[TrialState, _Mapping]]] = ...) -> None: ...
