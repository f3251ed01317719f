"""The typed Perseus client that workers, scripts and the CLI use to talk to ``perseus serve``.

A worker (one rank)::

    client = PerseusClient("127.0.0.1:7787", token=None)
    schedule = client.register_rank(job_id, rank, stage, gpu.supported_frequencies(), pipeline_id=dp_rank)
    # schedule.mode: "plan"        lock schedule.instructions[i].frequency before instruction i
    #                "power_limit" set schedule.power_limit watts, leave clocks alone
    #                "profiling"   lock schedule.profiling.frequency, run warmup + measured iterations,
    #                              then client.report_profile(job_id, rank, f, {"forward": (t, e), ...})
    #                "default"     unlock clocks (optimizing, or this stage finished profiling)
    version = client.report_iteration(job_id, rank, iteration, seconds, joules)
    if version != schedule.version:
        schedule = client.get_schedule(job_id, rank)   # or follow client.watch_schedule(job_id, rank)
"""

from perseus.client.client import DEFAULT_TARGET, PerseusClient, PerseusRpcError
from perseus.client.types import (
    FrontierInfo,
    JobInfo,
    PlanInfo,
    PowerCapInfo,
    ProfileAck,
    ProfilingStep,
    ReportAck,
    RunInfo,
    ServedSchedule,
    Target,
)

__all__ = [
    "DEFAULT_TARGET",
    "FrontierInfo",
    "JobInfo",
    "PerseusClient",
    "PerseusRpcError",
    "PlanInfo",
    "PowerCapInfo",
    "ProfileAck",
    "ProfilingStep",
    "ReportAck",
    "RunInfo",
    "ServedSchedule",
    "Target",
]
