"""Migrations (one Alembic history for every table on perseus.db.Base) on SQLite and a real PostgreSQL."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from server_helpers import profile_slice
from sqlalchemy import create_engine, inspect, text

from perseus.client import PerseusClient, Target
from perseus.db import Base
from perseus.server.app import ServerConfig, ServerThread
from perseus.server.db import alembic_config, import_models, make_engine, upgrade


def _assert_schema_matches_models(url: str) -> None:
    import_models()
    engine = make_engine(url)
    upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == [], f"models changed without a migration (add one under perseus/server/migrations): {diff}"


def test_migrations_cover_every_model_and_round_trip(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    _assert_schema_matches_models(url)
    engine = make_engine(url)
    tables = set(inspect(engine).get_table_names())
    assert {"scheduler_jobs", "scheduler_ranks", "scheduler_plans", "scheduler_iteration_reports"} <= tables
    assert {t for t in Base.metadata.tables} <= tables  # BSO tables too, when installed
    command.downgrade(alembic_config(engine), "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(engine)
    upgrade(engine)  # idempotent: the server runs it on every start
    assert {t for t in Base.metadata.tables} <= set(inspect(engine).get_table_names())


@pytest.mark.postgres
def test_postgres_schema_and_restart(postgres_url: str) -> None:
    name = f"perseus_{uuid.uuid4().hex[:8]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        _assert_schema_matches_models(url)
        profile = profile_slice(2, freq_step=3)
        with ServerThread(ServerConfig(port=0, db=url)) as srv, PerseusClient(f"127.0.0.1:{srv.port}") as client:
            client.register_job(job_id="pg", num_stages=2, num_microbatches=3, dp_degree=2, profile=profile)
            for rank in range(4):
                client.register_rank("pg", rank, rank % 2, profile.frequencies(), pipeline_id=rank // 2)
            client.wait_for_phase("pg", "serving")
            client.set_target("pg", Target.max_slowdown(1.2))
            client.report_straggler("pg", 0, 1.1)
            for i in range(10):
                client.report_iteration("pg", 1, i, 1.0, 50.0)
            client.report_iteration("pg", 1, 3, 1.0, 50.0)  # duplicate: ignored, not an error
            client.report_iteration("pg", 0, 0, 1.0, 50.0, run_id="mo", measure_only=True, clock_mhz=1410.0)
            client.report_iteration("pg", 0, 1, 1.0, 50.0, run_id="mo", measure_only=True, clock_mhz=1005.0,
                                    planned_instructions=8, at_planned_clock=6)
            before = [client.get_schedule("pg", r) for r in range(4)]
            job_before = client.get_job("pg")
        with ServerThread(ServerConfig(port=0, db=url)) as srv, PerseusClient(f"127.0.0.1:{srv.port}") as client:
            assert [client.get_schedule("pg", r) for r in range(4)] == before
            job = client.get_job("pg")
            assert job == job_before and job.num_iteration_reports == 12
            (mo,) = [r for r in job.runs if r.run_id == "mo"]  # per-run totals rebuilt by PostgreSQL's SUM/CASE
            assert (mo.measure_only_reports, mo.planned_instructions, mo.at_planned_clock, mo.mean_clock_mhz) == (
                2, 8, 6, 1207.5)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()
