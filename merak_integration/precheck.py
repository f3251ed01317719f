"""What the launcher checks before it starts any worker: fail early, once, in one line.

A wrong plan file or a server job of another pipeline shape would otherwise surface in every rank
after torchrun started them all, under a traceback. Here it is one ``InputError`` naming the file
or flag, in well under a second. An unreachable server is not an error: training goes on without
Perseus (default clocks, nothing reported), and the launcher says so once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from merak_integration.config import RunConfig
from merak_integration.plans import check_plan, check_schedule
from perseus.errors import InputError

#: Seconds the launcher waits for the server to answer before it goes on without it.
SERVER_CHECK_TIMEOUT = 3.0


def precheck(cfg: RunConfig, warn: Callable[[str], None] = print) -> RunConfig:
    """Check the plan file, the simulated GPUs' profile and the server; returns the config to run.

    Raises InputError naming the file or flag. Without a reachable server the returned config has
    no server (``warn`` says so).
    """
    if cfg.plan:
        check_plan_file(cfg)
    if cfg.sim_profile:
        from pathlib import Path

        if not Path(cfg.sim_profile).is_file():
            raise InputError("--sim_profile", f"no such file: {cfg.sim_profile}")
    if cfg.server and not check_server(cfg):
        warn(f"perseus: warning: server {cfg.server} did not answer within {SERVER_CHECK_TIMEOUT:g} s; training "
             "runs without Perseus: default clocks, no plan, nothing reported")
        return dataclasses.replace(cfg, server=None)
    return cfg


def check_plan_file(cfg: RunConfig) -> None:
    """The ``--plan`` file must be for this pipeline: schedule, stages, microbatches, instruction order."""
    from perseus.plan import FrequencyPlan

    assert cfg.plan is not None
    plan = FrequencyPlan.load(cfg.plan)
    check_plan(plan, cfg, cfg.plan)
    spec = cfg.pipeline_spec()
    for stage in range(cfg.pp):
        check_schedule(plan.stage_schedule(stage), spec.instruction_names(stage), cfg.plan)


def check_server(cfg: RunConfig) -> bool:
    """False if the server is unreachable; raises InputError if its job has another pipeline shape."""
    from merak_integration.pipelinespec import model_partition
    from merak_integration.serverlink import job_id_for
    from perseus.client import PerseusClient, PerseusRpcError
    from perseus.client.health import TRANSIENT

    job_id = job_id_for(cfg, model_partition(cfg.pipeline_spec())[1].tag)
    with PerseusClient(cfg.server, retry_timeout=0.0, timeout=SERVER_CHECK_TIMEOUT) as client:
        try:
            job = client.get_job(job_id)
        except PerseusRpcError as exc:
            if exc.code in TRANSIENT:
                return False
            if exc.code.name == "NOT_FOUND":
                return True  # rank 0 registers it
            raise InputError("--server", str(exc)) from None
    want = (cfg.schedule, cfg.pp, cfg.num_microbatches, cfg.num_chunks, cfg.dp)
    got = (job.schedule, job.num_stages, job.num_microbatches, job.num_chunks, job.dp_degree)
    if got != want:
        raise InputError(
            "--job_name" if cfg.job_name else "--server",
            f"job {job_id} at {cfg.server} is for schedule {got[0]}, {got[1]} stages, {got[2]} microbatches, "
            f"{got[3]} chunks, dp {got[4]}; this run is {want[0]}, {want[1]} stages, {want[2]} microbatches, "
            f"{want[3]} chunks, dp {want[4]}",
        )
    return True
