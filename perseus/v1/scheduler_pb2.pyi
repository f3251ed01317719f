from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_PHASE_UNSPECIFIED: _ClassVar[JobPhase]
    JOB_PHASE_PROFILING: _ClassVar[JobPhase]
    JOB_PHASE_OPTIMIZING: _ClassVar[JobPhase]
    JOB_PHASE_SERVING: _ClassVar[JobPhase]
    JOB_PHASE_FAILED: _ClassVar[JobPhase]

class ScheduleMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCHEDULE_MODE_UNSPECIFIED: _ClassVar[ScheduleMode]
    SCHEDULE_MODE_PLAN: _ClassVar[ScheduleMode]
    SCHEDULE_MODE_POWER_LIMIT: _ClassVar[ScheduleMode]
    SCHEDULE_MODE_PROFILING: _ClassVar[ScheduleMode]
    SCHEDULE_MODE_DEFAULT: _ClassVar[ScheduleMode]

class BaselineKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BASELINE_KIND_UNSPECIFIED: _ClassVar[BaselineKind]
    BASELINE_KIND_MAX_FREQUENCY: _ClassVar[BaselineKind]
    BASELINE_KIND_GLOBAL_POWER_LIMIT: _ClassVar[BaselineKind]
    BASELINE_KIND_PER_STAGE_POWER_LIMIT: _ClassVar[BaselineKind]
JOB_PHASE_UNSPECIFIED: JobPhase
JOB_PHASE_PROFILING: JobPhase
JOB_PHASE_OPTIMIZING: JobPhase
JOB_PHASE_SERVING: JobPhase
JOB_PHASE_FAILED: JobPhase
SCHEDULE_MODE_UNSPECIFIED: ScheduleMode
SCHEDULE_MODE_PLAN: ScheduleMode
SCHEDULE_MODE_POWER_LIMIT: ScheduleMode
SCHEDULE_MODE_PROFILING: ScheduleMode
SCHEDULE_MODE_DEFAULT: ScheduleMode
BASELINE_KIND_UNSPECIFIED: BaselineKind
BASELINE_KIND_MAX_FREQUENCY: BaselineKind
BASELINE_KIND_GLOBAL_POWER_LIMIT: BaselineKind
BASELINE_KIND_PER_STAGE_POWER_LIMIT: BaselineKind

class ProfilingConfig(_message.Message):
    __slots__ = ("warmup_iterations", "measure_iterations", "early_stop_rises", "frequencies")
    WARMUP_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    MEASURE_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    EARLY_STOP_RISES_FIELD_NUMBER: _ClassVar[int]
    FREQUENCIES_FIELD_NUMBER: _ClassVar[int]
    warmup_iterations: int
    measure_iterations: int
    early_stop_rises: int
    frequencies: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, warmup_iterations: _Optional[int] = ..., measure_iterations: _Optional[int] = ..., early_stop_rises: _Optional[int] = ..., frequencies: _Optional[_Iterable[int]] = ...) -> None: ...

class Fastest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Baseline(_message.Message):
    __slots__ = ("kind", "max_slowdown", "power_limits")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MAX_SLOWDOWN_FIELD_NUMBER: _ClassVar[int]
    POWER_LIMITS_FIELD_NUMBER: _ClassVar[int]
    kind: BaselineKind
    max_slowdown: float
    power_limits: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, kind: _Optional[_Union[BaselineKind, str]] = ..., max_slowdown: _Optional[float] = ..., power_limits: _Optional[_Iterable[float]] = ...) -> None: ...

class Target(_message.Message):
    __slots__ = ("fastest", "max_slowdown", "deadline", "energy_budget", "plan_json", "baseline")
    FASTEST_FIELD_NUMBER: _ClassVar[int]
    MAX_SLOWDOWN_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    ENERGY_BUDGET_FIELD_NUMBER: _ClassVar[int]
    PLAN_JSON_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    fastest: Fastest
    max_slowdown: float
    deadline: float
    energy_budget: float
    plan_json: str
    baseline: Baseline
    def __init__(self, fastest: _Optional[_Union[Fastest, _Mapping]] = ..., max_slowdown: _Optional[float] = ..., deadline: _Optional[float] = ..., energy_budget: _Optional[float] = ..., plan_json: _Optional[str] = ..., baseline: _Optional[_Union[Baseline, _Mapping]] = ...) -> None: ...

class RegisterTrainingJobRequest(_message.Message):
    __slots__ = ("job_id", "model", "partition", "schedule", "num_stages", "num_microbatches", "num_chunks", "dp_degree", "tp_degree", "blocking_power", "profile_csv", "profiling", "target")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    NUM_STAGES_FIELD_NUMBER: _ClassVar[int]
    NUM_MICROBATCHES_FIELD_NUMBER: _ClassVar[int]
    NUM_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    DP_DEGREE_FIELD_NUMBER: _ClassVar[int]
    TP_DEGREE_FIELD_NUMBER: _ClassVar[int]
    BLOCKING_POWER_FIELD_NUMBER: _ClassVar[int]
    PROFILE_CSV_FIELD_NUMBER: _ClassVar[int]
    PROFILING_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    model: str
    partition: str
    schedule: str
    num_stages: int
    num_microbatches: int
    num_chunks: int
    dp_degree: int
    tp_degree: int
    blocking_power: float
    profile_csv: str
    profiling: ProfilingConfig
    target: Target
    def __init__(self, job_id: _Optional[str] = ..., model: _Optional[str] = ..., partition: _Optional[str] = ..., schedule: _Optional[str] = ..., num_stages: _Optional[int] = ..., num_microbatches: _Optional[int] = ..., num_chunks: _Optional[int] = ..., dp_degree: _Optional[int] = ..., tp_degree: _Optional[int] = ..., blocking_power: _Optional[float] = ..., profile_csv: _Optional[str] = ..., profiling: _Optional[_Union[ProfilingConfig, _Mapping]] = ..., target: _Optional[_Union[Target, _Mapping]] = ...) -> None: ...

class PlannedInstruction(_message.Message):
    __slots__ = ("instruction", "microbatch", "frequency", "chunk")
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    MICROBATCH_FIELD_NUMBER: _ClassVar[int]
    FREQUENCY_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    instruction: str
    microbatch: int
    frequency: int
    chunk: int
    def __init__(self, instruction: _Optional[str] = ..., microbatch: _Optional[int] = ..., frequency: _Optional[int] = ..., chunk: _Optional[int] = ...) -> None: ...

class ProfilingStep(_message.Message):
    __slots__ = ("frequency", "warmup_iterations", "measure_iterations", "done")
    FREQUENCY_FIELD_NUMBER: _ClassVar[int]
    WARMUP_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    MEASURE_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    frequency: int
    warmup_iterations: int
    measure_iterations: int
    done: bool
    def __init__(self, frequency: _Optional[int] = ..., warmup_iterations: _Optional[int] = ..., measure_iterations: _Optional[int] = ..., done: _Optional[bool] = ...) -> None: ...

class PowerStateSchedule(_message.Message):
    __slots__ = ("job_id", "rank", "stage", "pipeline_id", "job_phase", "mode", "plan_name", "plan_id", "version", "instructions", "power_limit", "profiling", "expected_iteration_time", "expected_energy")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_PHASE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PLAN_NAME_FIELD_NUMBER: _ClassVar[int]
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    POWER_LIMIT_FIELD_NUMBER: _ClassVar[int]
    PROFILING_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ITERATION_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ENERGY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    rank: int
    stage: int
    pipeline_id: int
    job_phase: JobPhase
    mode: ScheduleMode
    plan_name: str
    plan_id: int
    version: int
    instructions: _containers.RepeatedCompositeFieldContainer[PlannedInstruction]
    power_limit: float
    profiling: ProfilingStep
    expected_iteration_time: float
    expected_energy: float
    def __init__(self, job_id: _Optional[str] = ..., rank: _Optional[int] = ..., stage: _Optional[int] = ..., pipeline_id: _Optional[int] = ..., job_phase: _Optional[_Union[JobPhase, str]] = ..., mode: _Optional[_Union[ScheduleMode, str]] = ..., plan_name: _Optional[str] = ..., plan_id: _Optional[int] = ..., version: _Optional[int] = ..., instructions: _Optional[_Iterable[_Union[PlannedInstruction, _Mapping]]] = ..., power_limit: _Optional[float] = ..., profiling: _Optional[_Union[ProfilingStep, _Mapping]] = ..., expected_iteration_time: _Optional[float] = ..., expected_energy: _Optional[float] = ...) -> None: ...

class JobInfo(_message.Message):
    __slots__ = ("job_id", "model", "partition", "schedule", "num_stages", "num_microbatches", "num_chunks", "dp_degree", "tp_degree", "blocking_power", "phase", "target", "plan_name", "version", "num_ranks", "num_profile_reports", "num_iteration_reports", "frontier_size", "error", "stragglers", "created_at", "stages_profiled", "num_iterations", "runs", "target_note", "plan_iteration_time", "plan_energy", "drift", "drift_note", "sweep_note", "auto_stragglers", "weight", "planned_power", "measured_power", "power_capped")
    class StragglersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: float
        def __init__(self, key: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    NUM_STAGES_FIELD_NUMBER: _ClassVar[int]
    NUM_MICROBATCHES_FIELD_NUMBER: _ClassVar[int]
    NUM_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    DP_DEGREE_FIELD_NUMBER: _ClassVar[int]
    TP_DEGREE_FIELD_NUMBER: _ClassVar[int]
    BLOCKING_POWER_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    PLAN_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NUM_RANKS_FIELD_NUMBER: _ClassVar[int]
    NUM_PROFILE_REPORTS_FIELD_NUMBER: _ClassVar[int]
    NUM_ITERATION_REPORTS_FIELD_NUMBER: _ClassVar[int]
    FRONTIER_SIZE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STRAGGLERS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STAGES_PROFILED_FIELD_NUMBER: _ClassVar[int]
    NUM_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    TARGET_NOTE_FIELD_NUMBER: _ClassVar[int]
    PLAN_ITERATION_TIME_FIELD_NUMBER: _ClassVar[int]
    PLAN_ENERGY_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    DRIFT_NOTE_FIELD_NUMBER: _ClassVar[int]
    SWEEP_NOTE_FIELD_NUMBER: _ClassVar[int]
    AUTO_STRAGGLERS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    PLANNED_POWER_FIELD_NUMBER: _ClassVar[int]
    MEASURED_POWER_FIELD_NUMBER: _ClassVar[int]
    POWER_CAPPED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    model: str
    partition: str
    schedule: str
    num_stages: int
    num_microbatches: int
    num_chunks: int
    dp_degree: int
    tp_degree: int
    blocking_power: float
    phase: JobPhase
    target: Target
    plan_name: str
    version: int
    num_ranks: int
    num_profile_reports: int
    num_iteration_reports: int
    frontier_size: int
    error: str
    stragglers: _containers.ScalarMap[int, float]
    created_at: float
    stages_profiled: int
    num_iterations: int
    runs: _containers.RepeatedCompositeFieldContainer[RunInfo]
    target_note: str
    plan_iteration_time: float
    plan_energy: float
    drift: str
    drift_note: str
    sweep_note: str
    auto_stragglers: _containers.RepeatedScalarFieldContainer[int]
    weight: float
    planned_power: float
    measured_power: float
    power_capped: bool
    def __init__(self, job_id: _Optional[str] = ..., model: _Optional[str] = ..., partition: _Optional[str] = ..., schedule: _Optional[str] = ..., num_stages: _Optional[int] = ..., num_microbatches: _Optional[int] = ..., num_chunks: _Optional[int] = ..., dp_degree: _Optional[int] = ..., tp_degree: _Optional[int] = ..., blocking_power: _Optional[float] = ..., phase: _Optional[_Union[JobPhase, str]] = ..., target: _Optional[_Union[Target, _Mapping]] = ..., plan_name: _Optional[str] = ..., version: _Optional[int] = ..., num_ranks: _Optional[int] = ..., num_profile_reports: _Optional[int] = ..., num_iteration_reports: _Optional[int] = ..., frontier_size: _Optional[int] = ..., error: _Optional[str] = ..., stragglers: _Optional[_Mapping[int, float]] = ..., created_at: _Optional[float] = ..., stages_profiled: _Optional[int] = ..., num_iterations: _Optional[int] = ..., runs: _Optional[_Iterable[_Union[RunInfo, _Mapping]]] = ..., target_note: _Optional[str] = ..., plan_iteration_time: _Optional[float] = ..., plan_energy: _Optional[float] = ..., drift: _Optional[str] = ..., drift_note: _Optional[str] = ..., sweep_note: _Optional[str] = ..., auto_stragglers: _Optional[_Iterable[int]] = ..., weight: _Optional[float] = ..., planned_power: _Optional[float] = ..., measured_power: _Optional[float] = ..., power_capped: _Optional[bool] = ...) -> None: ...

class RunInfo(_message.Message):
    __slots__ = ("run_id", "num_ranks", "num_iterations", "num_reports", "first_report_at", "last_report_at", "measure_only_reports", "planned_instructions", "at_planned_clock", "mean_clock_mhz")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_RANKS_FIELD_NUMBER: _ClassVar[int]
    NUM_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    NUM_REPORTS_FIELD_NUMBER: _ClassVar[int]
    FIRST_REPORT_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_REPORT_AT_FIELD_NUMBER: _ClassVar[int]
    MEASURE_ONLY_REPORTS_FIELD_NUMBER: _ClassVar[int]
    PLANNED_INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    AT_PLANNED_CLOCK_FIELD_NUMBER: _ClassVar[int]
    MEAN_CLOCK_MHZ_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    num_ranks: int
    num_iterations: int
    num_reports: int
    first_report_at: float
    last_report_at: float
    measure_only_reports: int
    planned_instructions: int
    at_planned_clock: int
    mean_clock_mhz: float
    def __init__(self, run_id: _Optional[str] = ..., num_ranks: _Optional[int] = ..., num_iterations: _Optional[int] = ..., num_reports: _Optional[int] = ..., first_report_at: _Optional[float] = ..., last_report_at: _Optional[float] = ..., measure_only_reports: _Optional[int] = ..., planned_instructions: _Optional[int] = ..., at_planned_clock: _Optional[int] = ..., mean_clock_mhz: _Optional[float] = ...) -> None: ...

class RegisterTrainingJobResponse(_message.Message):
    __slots__ = ("job", "created")
    JOB_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    job: JobInfo
    created: bool
    def __init__(self, job: _Optional[_Union[JobInfo, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class RegisterRankRequest(_message.Message):
    __slots__ = ("job_id", "rank", "stage", "pipeline_id", "gpu_name", "supported_frequencies", "schedule", "num_microbatches")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    GPU_NAME_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_FREQUENCIES_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    NUM_MICROBATCHES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    rank: int
    stage: int
    pipeline_id: int
    gpu_name: str
    supported_frequencies: _containers.RepeatedScalarFieldContainer[int]
    schedule: str
    num_microbatches: int
    def __init__(self, job_id: _Optional[str] = ..., rank: _Optional[int] = ..., stage: _Optional[int] = ..., pipeline_id: _Optional[int] = ..., gpu_name: _Optional[str] = ..., supported_frequencies: _Optional[_Iterable[int]] = ..., schedule: _Optional[str] = ..., num_microbatches: _Optional[int] = ...) -> None: ...

class RegisterRankResponse(_message.Message):
    __slots__ = ("schedule",)
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    schedule: PowerStateSchedule
    def __init__(self, schedule: _Optional[_Union[PowerStateSchedule, _Mapping]] = ...) -> None: ...

class GetScheduleRequest(_message.Message):
    __slots__ = ("job_id", "rank")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    rank: int
    def __init__(self, job_id: _Optional[str] = ..., rank: _Optional[int] = ...) -> None: ...

class InstructionMeasurement(_message.Message):
    __slots__ = ("instruction", "time", "energy")
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ENERGY_FIELD_NUMBER: _ClassVar[int]
    instruction: str
    time: float
    energy: float
    def __init__(self, instruction: _Optional[str] = ..., time: _Optional[float] = ..., energy: _Optional[float] = ...) -> None: ...

class ReportProfileRequest(_message.Message):
    __slots__ = ("job_id", "rank", "frequency", "measurements", "not_held", "read_back_mhz", "counter_flat_s")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    FREQUENCY_FIELD_NUMBER: _ClassVar[int]
    MEASUREMENTS_FIELD_NUMBER: _ClassVar[int]
    NOT_HELD_FIELD_NUMBER: _ClassVar[int]
    READ_BACK_MHZ_FIELD_NUMBER: _ClassVar[int]
    COUNTER_FLAT_S_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    rank: int
    frequency: int
    measurements: _containers.RepeatedCompositeFieldContainer[InstructionMeasurement]
    not_held: bool
    read_back_mhz: _containers.RepeatedScalarFieldContainer[int]
    counter_flat_s: float
    def __init__(self, job_id: _Optional[str] = ..., rank: _Optional[int] = ..., frequency: _Optional[int] = ..., measurements: _Optional[_Iterable[_Union[InstructionMeasurement, _Mapping]]] = ..., not_held: _Optional[bool] = ..., read_back_mhz: _Optional[_Iterable[int]] = ..., counter_flat_s: _Optional[float] = ...) -> None: ...

class ReportProfileResponse(_message.Message):
    __slots__ = ("next", "job_phase", "version")
    NEXT_FIELD_NUMBER: _ClassVar[int]
    JOB_PHASE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    next: ProfilingStep
    job_phase: JobPhase
    version: int
    def __init__(self, next: _Optional[_Union[ProfilingStep, _Mapping]] = ..., job_phase: _Optional[_Union[JobPhase, str]] = ..., version: _Optional[int] = ...) -> None: ...

class ReportIterationRequest(_message.Message):
    __slots__ = ("job_id", "rank", "iteration", "time", "energy", "plan_name", "run_id", "busy_time", "busy_energy", "measure_only", "clock_mhz", "planned_instructions", "at_planned_clock")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ENERGY_FIELD_NUMBER: _ClassVar[int]
    PLAN_NAME_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    BUSY_TIME_FIELD_NUMBER: _ClassVar[int]
    BUSY_ENERGY_FIELD_NUMBER: _ClassVar[int]
    MEASURE_ONLY_FIELD_NUMBER: _ClassVar[int]
    CLOCK_MHZ_FIELD_NUMBER: _ClassVar[int]
    PLANNED_INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    AT_PLANNED_CLOCK_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    rank: int
    iteration: int
    time: float
    energy: float
    plan_name: str
    run_id: str
    busy_time: float
    busy_energy: float
    measure_only: bool
    clock_mhz: float
    planned_instructions: int
    at_planned_clock: int
    def __init__(self, job_id: _Optional[str] = ..., rank: _Optional[int] = ..., iteration: _Optional[int] = ..., time: _Optional[float] = ..., energy: _Optional[float] = ..., plan_name: _Optional[str] = ..., run_id: _Optional[str] = ..., busy_time: _Optional[float] = ..., busy_energy: _Optional[float] = ..., measure_only: _Optional[bool] = ..., clock_mhz: _Optional[float] = ..., planned_instructions: _Optional[int] = ..., at_planned_clock: _Optional[int] = ...) -> None: ...

class IterationReport(_message.Message):
    __slots__ = ("rank", "iteration", "time", "energy", "plan_name", "busy_time", "busy_energy", "measure_only", "clock_mhz", "planned_instructions", "at_planned_clock")
    RANK_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ENERGY_FIELD_NUMBER: _ClassVar[int]
    PLAN_NAME_FIELD_NUMBER: _ClassVar[int]
    BUSY_TIME_FIELD_NUMBER: _ClassVar[int]
    BUSY_ENERGY_FIELD_NUMBER: _ClassVar[int]
    MEASURE_ONLY_FIELD_NUMBER: _ClassVar[int]
    CLOCK_MHZ_FIELD_NUMBER: _ClassVar[int]
    PLANNED_INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    AT_PLANNED_CLOCK_FIELD_NUMBER: _ClassVar[int]
    rank: int
    iteration: int
    time: float
    energy: float
    plan_name: str
    busy_time: float
    busy_energy: float
    measure_only: bool
    clock_mhz: float
    planned_instructions: int
    at_planned_clock: int
    def __init__(self, rank: _Optional[int] = ..., iteration: _Optional[int] = ..., time: _Optional[float] = ..., energy: _Optional[float] = ..., plan_name: _Optional[str] = ..., busy_time: _Optional[float] = ..., busy_energy: _Optional[float] = ..., measure_only: _Optional[bool] = ..., clock_mhz: _Optional[float] = ..., planned_instructions: _Optional[int] = ..., at_planned_clock: _Optional[int] = ...) -> None: ...

class ReportIterationsRequest(_message.Message):
    __slots__ = ("job_id", "run_id", "reports")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    run_id: str
    reports: _containers.RepeatedCompositeFieldContainer[IterationReport]
    def __init__(self, job_id: _Optional[str] = ..., run_id: _Optional[str] = ..., reports: _Optional[_Iterable[_Union[IterationReport, _Mapping]]] = ...) -> None: ...

class ReportIterationsResponse(_message.Message):
    __slots__ = ("version", "stored", "duplicates")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    version: int
    stored: int
    duplicates: int
    def __init__(self, version: _Optional[int] = ..., stored: _Optional[int] = ..., duplicates: _Optional[int] = ...) -> None: ...

class ReportBatch(_message.Message):
    __slots__ = ("seq", "job_id", "run_id", "reports")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    job_id: str
    run_id: str
    reports: _containers.RepeatedCompositeFieldContainer[IterationReport]
    def __init__(self, seq: _Optional[int] = ..., job_id: _Optional[str] = ..., run_id: _Optional[str] = ..., reports: _Optional[_Iterable[_Union[IterationReport, _Mapping]]] = ...) -> None: ...

class ReportBatchAck(_message.Message):
    __slots__ = ("seq", "version", "stored", "duplicates", "code", "error")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    seq: int
    version: int
    stored: int
    duplicates: int
    code: int
    error: str
    def __init__(self, seq: _Optional[int] = ..., version: _Optional[int] = ..., stored: _Optional[int] = ..., duplicates: _Optional[int] = ..., code: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class ReportIterationResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class SetTargetRequest(_message.Message):
    __slots__ = ("job_id", "target", "nearest")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    NEAREST_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    target: Target
    nearest: bool
    def __init__(self, job_id: _Optional[str] = ..., target: _Optional[_Union[Target, _Mapping]] = ..., nearest: _Optional[bool] = ...) -> None: ...

class SetTargetResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: JobInfo
    def __init__(self, job: _Optional[_Union[JobInfo, _Mapping]] = ...) -> None: ...

class ReportStragglerRequest(_message.Message):
    __slots__ = ("job_id", "pipeline_id", "factor")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    FACTOR_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    pipeline_id: int
    factor: float
    def __init__(self, job_id: _Optional[str] = ..., pipeline_id: _Optional[int] = ..., factor: _Optional[float] = ...) -> None: ...

class ReportStragglerResponse(_message.Message):
    __slots__ = ("job", "others_plan_name")
    JOB_FIELD_NUMBER: _ClassVar[int]
    OTHERS_PLAN_NAME_FIELD_NUMBER: _ClassVar[int]
    job: JobInfo
    others_plan_name: str
    def __init__(self, job: _Optional[_Union[JobInfo, _Mapping]] = ..., others_plan_name: _Optional[str] = ...) -> None: ...

class GetFrontierRequest(_message.Message):
    __slots__ = ("job_id", "include_plans", "page_size", "page_token", "plan_names")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PLANS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PLAN_NAMES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    include_plans: bool
    page_size: int
    page_token: str
    plan_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job_id: _Optional[str] = ..., include_plans: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., plan_names: _Optional[_Iterable[str]] = ...) -> None: ...

class PlanSummary(_message.Message):
    __slots__ = ("plan_id", "name", "iteration_time", "energy", "plan_json")
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ITERATION_TIME_FIELD_NUMBER: _ClassVar[int]
    ENERGY_FIELD_NUMBER: _ClassVar[int]
    PLAN_JSON_FIELD_NUMBER: _ClassVar[int]
    plan_id: int
    name: str
    iteration_time: float
    energy: float
    plan_json: str
    def __init__(self, plan_id: _Optional[int] = ..., name: _Optional[str] = ..., iteration_time: _Optional[float] = ..., energy: _Optional[float] = ..., plan_json: _Optional[str] = ...) -> None: ...

class GetFrontierResponse(_message.Message):
    __slots__ = ("job_id", "phase", "plans", "selected", "next_page_token", "total_plans", "first_index")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    PLANS_FIELD_NUMBER: _ClassVar[int]
    SELECTED_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_PLANS_FIELD_NUMBER: _ClassVar[int]
    FIRST_INDEX_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    phase: JobPhase
    plans: _containers.RepeatedCompositeFieldContainer[PlanSummary]
    selected: str
    next_page_token: str
    total_plans: int
    first_index: int
    def __init__(self, job_id: _Optional[str] = ..., phase: _Optional[_Union[JobPhase, str]] = ..., plans: _Optional[_Iterable[_Union[PlanSummary, _Mapping]]] = ..., selected: _Optional[str] = ..., next_page_token: _Optional[str] = ..., total_plans: _Optional[int] = ..., first_index: _Optional[int] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("job_ids",)
    JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    job_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobInfo]
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobInfo, _Mapping]]] = ...) -> None: ...

class DeleteJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class DeleteJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: JobInfo
    def __init__(self, job: _Optional[_Union[JobInfo, _Mapping]] = ...) -> None: ...

class ReprofileJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ReprofileJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: JobInfo
    def __init__(self, job: _Optional[_Union[JobInfo, _Mapping]] = ...) -> None: ...

class SetPowerCapRequest(_message.Message):
    __slots__ = ("watts", "clear")
    WATTS_FIELD_NUMBER: _ClassVar[int]
    CLEAR_FIELD_NUMBER: _ClassVar[int]
    watts: float
    clear: bool
    def __init__(self, watts: _Optional[float] = ..., clear: _Optional[bool] = ...) -> None: ...

class GetPowerCapRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CappedJob(_message.Message):
    __slots__ = ("job_id", "plan_name", "planned_power", "measured_power", "weight", "slowdown", "max_slowdown", "pinned")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_NAME_FIELD_NUMBER: _ClassVar[int]
    PLANNED_POWER_FIELD_NUMBER: _ClassVar[int]
    MEASURED_POWER_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    SLOWDOWN_FIELD_NUMBER: _ClassVar[int]
    MAX_SLOWDOWN_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    plan_name: str
    planned_power: float
    measured_power: float
    weight: float
    slowdown: float
    max_slowdown: float
    pinned: bool
    def __init__(self, job_id: _Optional[str] = ..., plan_name: _Optional[str] = ..., planned_power: _Optional[float] = ..., measured_power: _Optional[float] = ..., weight: _Optional[float] = ..., slowdown: _Optional[float] = ..., max_slowdown: _Optional[float] = ..., pinned: _Optional[bool] = ...) -> None: ...

class PowerCapInfo(_message.Message):
    __slots__ = ("set", "watts", "feasible", "note", "planned_power", "measured_power", "weighted_slowdown", "lower_bound", "exact", "jobs", "version")
    SET_FIELD_NUMBER: _ClassVar[int]
    WATTS_FIELD_NUMBER: _ClassVar[int]
    FEASIBLE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    PLANNED_POWER_FIELD_NUMBER: _ClassVar[int]
    MEASURED_POWER_FIELD_NUMBER: _ClassVar[int]
    WEIGHTED_SLOWDOWN_FIELD_NUMBER: _ClassVar[int]
    LOWER_BOUND_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    set: bool
    watts: float
    feasible: bool
    note: str
    planned_power: float
    measured_power: float
    weighted_slowdown: float
    lower_bound: float
    exact: bool
    jobs: _containers.RepeatedCompositeFieldContainer[CappedJob]
    version: int
    def __init__(self, set: _Optional[bool] = ..., watts: _Optional[float] = ..., feasible: _Optional[bool] = ..., note: _Optional[str] = ..., planned_power: _Optional[float] = ..., measured_power: _Optional[float] = ..., weighted_slowdown: _Optional[float] = ..., lower_bound: _Optional[float] = ..., exact: _Optional[bool] = ..., jobs: _Optional[_Iterable[_Union[CappedJob, _Mapping]]] = ..., version: _Optional[int] = ...) -> None: ...

class SetJobWeightRequest(_message.Message):
    __slots__ = ("job_id", "weight")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    weight: float
    def __init__(self, job_id: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...
