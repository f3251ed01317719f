"""The server's closed loop: feeds iteration reports to the straggler and drift detectors.

:class:`Controller` keeps, per job, the reports of iterations not every rank has sent yet and the
detectors' states (memory only: after a restart the windows fill again from new reports; what they
decided is stored by :class:`~perseus.server.core.SchedulerCore`). Once every rank of the job has
reported an iteration, each rank's measured busy time and energy are divided by what the plan it ran
predicts for its stage (:func:`perseus.control.predict.stage_busy`), and the ratios go to
:mod:`perseus.control.straggler` (per pipeline) and :mod:`perseus.control.drift` (per stage).
With replicas, one of them feeds a job's controller from every replica's stored reports and its own
(see ``SchedulerCore._follow_reports``), so a report may arrive twice: an iteration counts once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from perseus.control.drift import DriftConfig, DriftState, DriftVerdict, closest_copy
from perseus.control.drift import observe as observe_drift
from perseus.control.predict import stage_busy
from perseus.control.straggler import StragglerConfig, StragglerState
from perseus.control.straggler import observe as observe_pace
from perseus.errors import InputError
from perseus.plan import FrequencyPlan
from perseus.profile import PipelineProfile
from perseus.reports import IterationReport
from perseus.server.types import RankInfo

log = logging.getLogger("perseus.server")

MAX_PENDING = 64
"""Iterations per job kept while waiting for their last rank: a rank that stopped reporting must not grow memory."""
MAX_DONE = 1024
"""Finished iterations per job remembered to ignore a report that arrives again (far more than can be in flight)."""


@dataclass(frozen=True)
class ControlConfig:
    """``perseus serve``'s closed-loop settings."""

    straggler: StragglerConfig = field(default_factory=StragglerConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    auto_stragglers: bool = True
    drift_detection: bool = True

    def validate(self) -> None:
        self.straggler.validate()
        self.drift.validate()


ControlListener = Callable[[str, str], None]
"""``callback(job_id, event)`` with event ``"drifted"`` (needs a re-profile or is being re-planned),
``"replanned"`` (a rescaled profile's frontier is served) or ``"stragglers"`` (automatic stragglers changed)."""


@dataclass(frozen=True)
class Decision:
    """What one iteration's reports call for; ``None`` fields: no change."""

    stragglers: Mapping[int, float] | None = None
    """Straggling pipeline -> its pace relative to the others'."""
    drift: DriftVerdict | None = None


@dataclass
class _JobLoop:
    pending: dict[tuple[str, int], dict[int, tuple[float, float, str]]] = field(default_factory=dict)
    straggler: StragglerState = field(default_factory=StragglerState)
    drift: DriftState = field(default_factory=DriftState)
    predicted: dict[str, tuple[int, tuple[tuple[float, float], ...] | None]] = field(default_factory=dict)
    """Plan name -> (id of the profile it was predicted under, per-stage busy time and energy)."""
    iterations: int = 0
    """Iterations fed to the detectors (monotonic across runs)."""
    silent: bool = False
    """Reports without busy time were seen and said so."""
    done: dict[tuple[str, int], None] = field(default_factory=dict)
    """Iterations already fed to the detectors (insertion-ordered, the last :data:`MAX_DONE`): a report
    read again (from the database and from this replica's own stores) must not start them over."""


class Controller:
    """Per-job closed-loop state; the caller (the core, under its lock) serialises calls."""

    def __init__(self, config: ControlConfig) -> None:
        self.config = config
        self._jobs: dict[str, _JobLoop] = {}

    def forget(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

    def reset_drift(self, job_id: str) -> None:
        """Start drift windows afresh (the profile or the frontier changed)."""
        loop = self._jobs.get(job_id)
        if loop is not None:
            loop.drift = DriftState()
            loop.predicted.clear()

    def observe(
        self,
        job_id: str,
        num_stages: int,
        ranks: Mapping[int, RankInfo],
        plans: Callable[[str], FrequencyPlan | None],
        profile: PipelineProfile | None,
        run_id: str,
        reports: Sequence[IterationReport],
    ) -> Decision:
        """Take newly stored reports; a decision once an iteration is complete (all ranks reported)."""
        if profile is None or not reports:
            return Decision()
        loop = self._jobs.setdefault(job_id, _JobLoop())
        complete: list[dict[int, tuple[float, float, str]]] = []
        for r in reports:
            if r.busy_time <= 0 or r.busy_energy <= 0:
                if not loop.silent:
                    loop.silent = True
                    log.warning("job %s: rank %d reports no busy time/energy (an older worker?): no automatic "
                                "stragglers or drift detection for these reports", job_id, r.rank)
                continue
            key = (run_id, r.iteration)
            if key in loop.done:
                continue
            got = loop.pending.setdefault(key, {})
            got[r.rank] = (r.busy_time, r.busy_energy, r.plan_name)
            if len(got) >= len(ranks):
                complete.append(loop.pending.pop(key))
                loop.done[key] = None
        while len(loop.pending) > MAX_PENDING:
            loop.pending.pop(next(iter(loop.pending)))
        while len(loop.done) > MAX_DONE:
            loop.done.pop(next(iter(loop.done)))
        stragglers: Mapping[int, float] | None = None
        verdict: DriftVerdict | None = None
        for iteration in complete:
            s, v = self._iteration(loop, num_stages, ranks, plans, profile, iteration)
            stragglers = s if s is not None else stragglers
            verdict = v or verdict
        return Decision(stragglers, verdict)

    def _iteration(
        self,
        loop: _JobLoop,
        num_stages: int,
        ranks: Mapping[int, RankInfo],
        plans: Callable[[str], FrequencyPlan | None],
        profile: PipelineProfile,
        got: Mapping[int, tuple[float, float, str]],
    ) -> tuple[Mapping[int, float] | None, DriftVerdict | None]:
        paces: dict[int, float] = {}
        copies: dict[int, list[tuple[float, float]]] = {}
        for rank, (t, e, plan_name) in got.items():
            info = ranks.get(rank)
            predicted = self._predicted(loop, plans, profile, plan_name)
            if info is None or predicted is None or not 0 <= info.stage < len(predicted):
                return None, None  # no prediction (no plan, a power-limit baseline): nothing to compare
            pt, pe = predicted[info.stage]
            ratio = (t / pt, e / pe)
            paces[info.pipeline_id] = max(paces.get(info.pipeline_id, 0.0), ratio[0])
            copies.setdefault(info.stage, []).append(ratio)
        loop.iterations += 1
        stragglers = None
        if self.config.auto_stragglers and len(paces) >= 2:
            before = loop.straggler.slow
            loop.straggler = observe_pace(self.config.straggler, loop.straggler, loop.iterations, paces)
            if loop.straggler.slow != before:
                stragglers = dict(loop.straggler.slow)
        verdict = None
        if self.config.drift_detection:
            ratios = {stage: closest_copy(c) for stage, c in copies.items()}
            loop.drift, verdict = observe_drift(self.config.drift, loop.drift, ratios, num_stages)
        return stragglers, verdict

    def _predicted(
        self, loop: _JobLoop, plans: Callable[[str], FrequencyPlan | None], profile: PipelineProfile, name: str
    ) -> tuple[tuple[float, float], ...] | None:
        cached = loop.predicted.get(name)
        if cached is not None and cached[0] == id(profile):
            return cached[1]
        plan = plans(name) if name else None
        try:
            predicted = stage_busy(profile, plan) if plan is not None else None
        except InputError:
            predicted = None
        if predicted is not None and any(t <= 0 or e <= 0 for t, e in predicted):
            predicted = None
        if len(loop.predicted) > 4096:
            loop.predicted.clear()
        loop.predicted[name] = (id(profile), predicted)
        return predicted


DRIFT_STATES: tuple[str, ...] = ("", "replanning", "replanned", "reprofile")


@dataclass(frozen=True)
class DriftStatus:
    """A job's drift as stored (jobs.drift_json): ``state`` is one of :data:`DRIFT_STATES`."""

    state: str = ""
    """"": no drift; "replanning": a rescaled profile's frontier is being computed (the old plans run
    meanwhile); "replanned": it is served; "reprofile": no scale explains it, `perseus jobs reprofile` needed."""
    note: str = ""

    def to_json(self) -> str:
        import json

        return json.dumps({"state": self.state, "note": self.note}) if self.state else "{}"

    @classmethod
    def from_json(cls, text: str | None) -> DriftStatus:
        import json

        data = json.loads(text or "{}")
        state = str(data.get("state", ""))
        return cls(state if state in DRIFT_STATES else "", str(data.get("note", "")))
