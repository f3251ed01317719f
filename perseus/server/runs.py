"""Iteration reports grouped by training run (attempt): validation and run statistics.

A run id names one launch of a job's training. Reports are keyed by (job, run, rank, iteration),
so a rerun of the same job never collides with an earlier run, while an exact retry of a report
(a sender that did not see the acknowledgement) is recognised and not stored twice.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from perseus.errors import InputError
from perseus.reports import IterationReport, RunInfo
from perseus.server import models as m
from perseus.server.types import MAX_TEXT, finite, in_range

#: Reports one ReportIterations call may carry (about 0.3 MB of protobuf at most).
MAX_BATCH = 4096
RUN_ID = re.compile(r"[A-Za-z0-9._:-]{0,64}")
#: The highest clock a report may carry (the server's frequency lists stop there too).
MAX_CLOCK_MHZ = 100_000
#: Planned instructions one report may count: 2**31 fits every integer column (a million-microbatch
#: iteration has a few million instructions).
MAX_INSTRUCTIONS = 2**31 - 1


@dataclass
class RunStats:
    """Counts of one run's stored reports, kept in memory (one entry per reporting rank)."""

    reports_per_rank: dict[int, int] = field(default_factory=dict)
    first_report_at: float = 0.0
    last_report_at: float = 0.0
    measure_only_reports: int = 0
    planned_instructions: int = 0
    at_planned_clock: int = 0
    clock_sum: float = 0.0
    """Sum of the read-back clocks (MHz) of the ``clock_reports`` reports that read one."""
    clock_reports: int = 0

    def add(self, rank: int, count: int, first: float, last: float) -> None:
        self.reports_per_rank[rank] = self.reports_per_rank.get(rank, 0) + count
        self.first_report_at = min(self.first_report_at or first, first)
        self.last_report_at = max(self.last_report_at, last)

    def observe(self, report: IterationReport) -> None:
        """Count what the GPU did in one stored report (measure-only, planned-clock share, clock)."""
        self.add_observed(int(report.measure_only), report.planned_instructions, report.at_planned_clock,
                          report.clock_mhz, int(report.clock_mhz > 0))

    def add_observed(self, measure_only: int, planned: int, at_planned: int, clock_sum: float, clocks: int) -> None:
        self.measure_only_reports += measure_only
        self.planned_instructions += planned
        self.at_planned_clock += at_planned
        self.clock_sum += clock_sum
        self.clock_reports += clocks

    def view(self, run_id: str) -> RunInfo:
        counts = self.reports_per_rank.values()
        mean_clock = self.clock_sum / self.clock_reports if self.clock_reports else 0.0
        return RunInfo(run_id, len(counts), max(counts, default=0), sum(counts), self.first_report_at,
                       self.last_report_at, self.measure_only_reports, self.planned_instructions,
                       self.at_planned_clock, mean_clock)


def validate(run_id: str, reports: Sequence[IterationReport]) -> None:
    """Raise InputError naming the first bad field of a batch."""
    validate_run_id(run_id)
    if len(reports) > MAX_BATCH:
        raise InputError("reports", f"at most {MAX_BATCH} per call, got {len(reports)}")
    for i, r in enumerate(reports):
        validate_report(r, f"reports[{i}].")


def validate_run_id(run_id: str) -> None:
    if not RUN_ID.fullmatch(run_id):
        raise InputError("run_id", "at most 64 characters of A-Z a-z 0-9 . _ : -")


def checked_report(
    run_id: str, rank: int, iteration: int, time: float, energy: float, plan_name: str, **observed: Any
) -> IterationReport:
    """One report of run ``run_id``, validated (InputError naming the bad field).

    ``observed``: the read-back fields of :class:`IterationReport` (``measure_only``, ``clock_mhz``, ...).
    """
    validate_run_id(run_id)
    report = IterationReport(rank, iteration, time, energy, plan_name, **observed)
    validate_report(report)
    return report


def validate_report(r: IterationReport, prefix: str = "") -> None:
    """Raise InputError naming ``prefix`` + the field of a bad report."""
    in_range(f"{prefix}iteration", r.iteration, 0, 2**62)
    finite(f"{prefix}time", r.time, positive=True)
    finite(f"{prefix}energy", r.energy)
    finite(f"{prefix}busy_time", r.busy_time)
    finite(f"{prefix}busy_energy", r.busy_energy)
    if len(r.plan_name) > MAX_TEXT:
        raise InputError(f"{prefix}plan_name", f"at most {MAX_TEXT} characters")
    finite(f"{prefix}clock_mhz", r.clock_mhz)
    if r.clock_mhz > MAX_CLOCK_MHZ:
        raise InputError(f"{prefix}clock_mhz", f"at most {MAX_CLOCK_MHZ} MHz, got {r.clock_mhz}")
    in_range(f"{prefix}planned_instructions", r.planned_instructions, 0, MAX_INSTRUCTIONS)
    in_range(f"{prefix}at_planned_clock", r.at_planned_clock, 0, r.planned_instructions)


def load(s: Session, job_ids: Collection[str] | None = None) -> dict[str, dict[str, RunStats]]:
    """Run statistics, oldest run first, from the stored reports: of every job, or of ``job_ids``."""
    table = m.IterationReportRow
    runs: dict[str, dict[str, RunStats]] = {}
    read = table.clock_mhz > 0
    query = select(
        table.job_id, table.run_id, table.rank, func.count(), func.min(table.created_at), func.max(table.created_at),
        func.sum(case((table.measure_only, 1), else_=0)), func.sum(table.planned_instructions),
        func.sum(table.at_planned_clock), func.sum(case((read, table.clock_mhz), else_=0.0)),
        func.sum(case((read, 1), else_=0)),
    ).group_by(table.job_id, table.run_id, table.rank)
    if job_ids is not None:
        query = query.where(table.job_id.in_(job_ids))
    for job_id, run_id, rank, count, first, last, measure_only, planned, at_planned, clocks, read_n in s.execute(query):
        stats = runs.setdefault(job_id, {}).setdefault(run_id, RunStats())
        stats.add(rank, count, first, last)
        stats.add_observed(int(measure_only or 0), int(planned or 0), int(at_planned or 0), float(clocks or 0.0),
                           int(read_n or 0))
    return {job_id: dict(sorted(by_run.items(), key=lambda kv: kv[1].first_report_at))
            for job_id, by_run in runs.items()}
