"""Mutation check: does the test suite notice when a part that matters is broken on purpose?

Each mutant is one small, named edit to one file (a sign flipped, a pass skipped, a commit
dropped). For every mutant the tracked tree is copied to a temporary directory, the edit is
applied there, and the tests that guard that part run against the copy (PYTHONPATH points at
it, so subprocesses the tests start import the mutated code too). A mutant is *killed* when
those tests fail, *survived* when they pass. The untouched copy runs the same tests first, so a
kill means the mutant, not a test that fails anyway.

Not part of CI (minutes per mutant). Run from the repository root:

    .venv/bin/python scripts/mutants.py            # every mutant
    .venv/bin/python scripts/mutants.py --list     # names and what they break
    .venv/bin/python scripts/mutants.py solver-no-reclaim evaluator-blocking-sign
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
CORE = ("tests/core",)
REPORTS = (
    "tests/server/test_server_rpcs.py",
    "tests/server/test_server_restart.py::test_kill9_while_serving_then_restart",
    "tests/server/test_server_db.py",
)
SAFETY = ("tests/device/test_device_safety.py", "tests/power_limit/test_power_limit_restore.py")


@dataclass(frozen=True)
class Mutant:
    """One deliberate bug: replace ``old`` (which must occur exactly once) by ``new`` in ``path``."""

    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    breaks: str


MUTANTS = [
    Mutant(
        "evaluator-blocking-sign",
        "perseus/pipeline/evaluate.py",
        "return iteration_time, spent + profile.blocking_power * idle",
        "return iteration_time, spent - profile.blocking_power * idle",
        CORE,
        "evaluator: blocked GPU time earns energy instead of costing it",
    ),
    Mutant(
        "evaluator-idle-per-virtual-stage",
        "perseus/pipeline/evaluate.py",
        "idle = dag.num_stages * iteration_time",
        "idle = dag.num_stages * dag.num_chunks * iteration_time",
        CORE,
        "evaluator: interleaved chunks counted as extra GPUs drawing blocking power",
    ),
    Mutant(
        "cost-table-blocking-sign",
        "perseus/pipeline/costs.py",
        "cost=energy - profile.blocking_power * time,",
        "cost=energy + profile.blocking_power * time,",
        CORE,
        "solver's effective energy: blocking power added instead of subtracted",
    ),
    Mutant(
        "solver-no-reclaim",
        "perseus/solver/frontier.py",
        "choice, finish, latest = self._reclaim(faster, deadline, faster_finish)",
        "choice, finish, latest = faster, faster_finish, None",
        CORE,
        "solver: the reclaim pass is skipped, sped-up plans keep their slack",
    ),
    Mutant(
        "solver-reclaim-forward-only",
        "perseus/solver/frontier.py",
        "if cost_forward <= cost_backward:",
        "if True:",
        CORE,
        "solver: reclaim keeps the forward sweep even when the backward one is cheaper",
    ),
    Mutant(
        "solver-cut-ignores-cost",
        "perseus/solver/frontier.py",
        "capacity[crit_ids] = rate",
        "capacity[crit_ids] = np.where(np.isfinite(rate), 1.0, np.inf)",
        CORE,
        "solver: the cut takes the fewest instructions, not the cheapest ones",
    ),
    Mutant(
        "solver-cut-everything",
        "perseus/solver/frontier.py",
        "cut = local[self._network.min_cut(capacity, tight, crit_ids[sources], crit_ids[sinks])]",
        "cut = np.flatnonzero(np.isfinite(rate))",
        CORE,
        "solver: every critical instruction is sped up, not a minimum cut",
    ),
    Mutant(
        "solver-step-to-fastest",
        "perseus/solver/frontier.py",
        "best = int(np.argmin(rates))",
        "best = 0",
        CORE,
        "solver step: a cut instruction jumps straight to its fastest clock",
    ),
    Mutant(
        "solver-step-nearest",
        "perseus/solver/frontier.py",
        "best = int(np.argmin(rates))",
        "best = len(rates) - 1",
        CORE,
        "solver step: the next faster clock, ignoring the convex hull",
    ),
    Mutant(
        "solver-no-series-ties",
        "perseus/solver/frontier.py",
        "    return np.array(sorted(chosen), dtype=np.int64)",
        "    return cut",
        CORE,
        "solver: equally priced series neighbours are no longer sped up with the cut (a speed-up only)",
    ),
    Mutant(
        "pareto-keeps-dominated",
        "perseus/profile/pareto.py",
        "if cost < best_cost:",
        "if cost < best_cost or m.time > 0:",
        CORE,
        "option filter: dominated clocks (slower and dearer) are kept",
    ),
    Mutant(
        "server-report-not-committed",
        "perseus/server/reports.py",
        "        with self._engine.begin() as conn:",
        "        with self._engine.connect() as conn:  # rolled back, never committed",
        REPORTS,
        "server: an acknowledged iteration report is never committed",
    ),
    Mutant(
        "server-straggler-not-committed",
        "perseus/server/core.py",
        "                        s.add(m.StragglerRow(job_id=job_id, pipeline_id=pipeline_id, factor=factor))",
        "                        pass",
        REPORTS,
        "server: a straggler report lives only in memory",
    ),
    Mutant(
        "server-target-not-committed",
        "perseus/server/core.py",
        "                row.target_json, row.plan_id = target.to_json(), plan_id",
        "                pass",
        REPORTS,
        "server: a new target (and the plan it picks) lives only in memory",
    ),
    Mutant(
        "signal-no-restore",
        "perseus/device/safety.py",
        "def _on_signal(signum: int, frame: FrameType | None) -> None:\n    restore_all(final=True)",
        "def _on_signal(signum: int, frame: FrameType | None) -> None:\n    pass",
        SAFETY,
        "SIGTERM/SIGINT: GPU clocks and power limits are not restored",
    ),
    Mutant(
        "signal-swallowed",
        "perseus/device/safety.py",
        "    signal.signal(signum, signal.SIG_DFL)\n    os.kill(os.getpid(), signum)",
        "    signal.signal(signum, signal.SIG_DFL)",
        SAFETY,
        "SIGTERM: clocks restored but the process keeps running",
    ),
]


@dataclass(frozen=True)
class Outcome:
    status: str
    """killed, survived, stale (the code it edits is gone), or timeout."""
    seconds: float
    detail: str


def tracked_files() -> list[str]:
    listing = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    )
    return [name for name in listing.stdout.decode().split("\0") if name and (ROOT / name).is_file()]


@contextmanager
def tree_copy(files: list[str]) -> Iterator[Path]:
    """A throwaway copy of the working tree (tracked and untracked-not-ignored files)."""
    with tempfile.TemporaryDirectory(prefix="perseus-mutant-") as tmp:
        for name in files:
            target = Path(tmp) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target)
        yield Path(tmp)


def run_tests(tree: Path, tests: tuple[str, ...], timeout: float, every_failure: bool) -> tuple[int | None, str]:
    """pytest on ``tests`` against the code in ``tree``: (exit code, or None on timeout; what failed).

    Stops at the first failure unless ``every_failure``; then it names every failing test.
    """
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "400"}
    stop = [] if every_failure else ["-x"]
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfE", *stop, "-p", "no:cacheprovider", *tests]
    try:
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"no result after {timeout:.0f} s"
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    failed = [line.split(" - ")[0].split(" ", 1)[1] for line in lines if line.startswith(("FAILED ", "ERROR "))]
    summary = lines[-1].strip("= ") if lines else proc.stderr.strip()[-200:]
    return proc.returncode, "\n".join([*failed, summary]) if failed else summary


def check_imports_from(tree: Path) -> None:
    """Refuse to run if ``perseus`` would not be imported from the copy (then nothing is mutated)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", "import perseus; print(perseus.__file__)"],
        cwd=tree, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()
    if not Path(out).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"mutants: perseus is imported from {out}, not from the mutated copy {tree}")


def run_mutant(mutant: Mutant, files: list[str], timeout: float, every_failure: bool) -> Outcome:
    started = time.monotonic()
    with tree_copy(files) as tree:
        path = tree / mutant.path
        text = path.read_text()
        if text.count(mutant.old) != 1:
            return Outcome("stale", 0.0, f"{mutant.path}: the code to mutate occurs {text.count(mutant.old)} times")
        path.write_text(text.replace(mutant.old, mutant.new))
        check_imports_from(tree)
        code, last = run_tests(tree, mutant.tests, timeout, every_failure)
    seconds = time.monotonic() - started
    if code is None:
        return Outcome("timeout", seconds, last)
    return Outcome("survived" if code == 0 else "killed", seconds, last)


def baseline(tests: tuple[str, ...], files: list[str], timeout: float) -> None:
    """The guarding tests must pass on the unmutated copy, else a 'kill' would mean nothing."""
    with tree_copy(files) as tree:
        check_imports_from(tree)
        code, last = run_tests(tree, tests, timeout, every_failure=False)
    if code != 0:
        raise SystemExit(f"mutants: {' '.join(tests)} fail without any mutant ({last}); fix them first")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per test run (default 900)")
    parser.add_argument("--every-failure", action="store_true", help="run every guarding test, not just up to the first failure")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of each test set")
    args = parser.parse_args(argv)
    console = Console()
    known = {m.name: m for m in MUTANTS}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown mutant(s) {', '.join(unknown)}; see --list")
    chosen = [known[n] for n in args.names] if args.names else MUTANTS
    if args.list:
        for m in chosen:
            console.print(f"[bold]{m.name}[/] ({m.path}): {m.breaks}; guarded by {' '.join(m.tests)}")
        return 0

    files = tracked_files()
    if not args.no_baseline:
        for tests in dict.fromkeys(m.tests for m in chosen):
            with console.status(f"baseline: {' '.join(tests)}"):
                baseline(tests, files, args.timeout)
    table = Table(title=f"Mutants ({len(chosen)}): killed means a test failed")
    for column in ("mutant", "breaks", "result", "s", "failing tests (first only, without --every-failure)"):
        table.add_column(column, overflow="fold")
    survivors = []
    for k, mutant in enumerate(chosen, 1):
        with console.status(f"[{k}/{len(chosen)}] {mutant.name}"):
            outcome = run_mutant(mutant, files, args.timeout, args.every_failure)
        style = {"killed": "green", "survived": "bold red"}.get(outcome.status, "yellow")
        console.print(f"[{k}/{len(chosen)}] {mutant.name}: [{style}]{outcome.status}[/] ({outcome.seconds:.0f} s)")
        table.add_row(mutant.name, mutant.breaks, f"[{style}]{outcome.status}[/]", f"{outcome.seconds:.0f}",
                      outcome.detail)
        if outcome.status != "killed":
            survivors.append(mutant.name)
    console.print(table)
    console.print(f"not killed: {', '.join(survivors)}" if survivors else "every mutant was killed")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
