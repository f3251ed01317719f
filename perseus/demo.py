"""``bash run.sh demo``: the whole Perseus story on this machine, in a few minutes, on a CPU.

1. Start a Perseus server (SQLite in ``./out/demo``).
2. Profile: torchrun workers train ``gpt3-tiny`` as a 4-stage pipeline on simulated GPUs that
   behave like the A100s of the Perseus paper's GPT-3 profile; the server drives the sweep
   (one frequency after the other) and assembles the profile.
3. Optimize: the server computes the time-energy frontier of frequency plans.
4. Serve and train: the workers train with the all-max-frequency baseline, the no-slowdown plan
   and a plan allowed 5% slowdown, applying every instruction's frequency and reporting every
   iteration to the server.
5. Print measured iteration time and energy per plan, and save the frontier and timeline plots.

``--local`` runs the same story without a server (local sweep, in-process solver, plan files),
which keeps the demo working if the server part is unavailable.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perseus.errors import PerseusError
from perseus.plan import FrequencyPlan

MODEL = "gpt3-tiny"
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class DemoConfig:
    out: Path
    pp: int = 4
    microbatches: int = 8
    microbatch_size: int = 2
    time_scale: float = 0.25
    steps: int = 6
    slowdown: float = 1.05
    local: bool = False

    def common_args(self) -> list[str]:
        return [MODEL, str(self.microbatch_size), str(self.microbatches), "--pp", str(self.pp), "--device", "sim",
                "--sim_time_scale", str(self.time_scale), "--profile_dir", str(self.out / "profiles")]


@dataclass
class Row:
    label: str
    plan: FrequencyPlan | None
    time: float
    energy: float


def say(text: str) -> None:
    print(f"\n[demo] {text}", flush=True)


def run_workers(cfg: DemoConfig, *args: str) -> None:
    """``bash run.sh MODEL MB NMB ...`` (the launcher) with the demo's pipeline."""
    cmd = [sys.executable, "-m", "merak_integration.launch", *cfg.common_args(), *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    print("$ bash run.sh " + " ".join(cmd[3:]), flush=True)
    code = subprocess.call(cmd, cwd=ROOT, env=env)
    if code != 0:
        raise PerseusError(f"demo: workers exited with status {code}")


def measured(out_dir: Path) -> tuple[float, float]:
    rows = json.loads((out_dir / "iterations.json").read_text())[1:]  # first iteration: connection set-up
    return statistics.median(r["time"] for r in rows), statistics.median(r["energy"] for r in rows)


def profile_path(cfg: DemoConfig) -> Path:
    return cfg.out / "profiles" / f"{MODEL}+uniform+pp{cfg.pp}+mbs{cfg.microbatch_size}" / "profile.csv"


def with_server(cfg: DemoConfig) -> tuple[list[Row], list[FrequencyPlan]]:
    from perseus.client import PerseusClient, Target
    from perseus.server.app import ServerConfig, ServerThread

    say(f"starting a Perseus server (SQLite {cfg.out / 'perseus.db'})")
    with ServerThread(ServerConfig(port=0, db=f"sqlite:///{cfg.out / 'perseus.db'}")) as server:
        address = f"127.0.0.1:{server.port}"
        job = f"demo-{MODEL}-pp{cfg.pp}"
        say("1/3 profile: the server sweeps the frequencies high to low on every stage, stopping below a "
            "stage's least-energy clock once its energy rose 3 times in a row")
        run_workers(cfg, "--profile", "true", "--server", address, "--job_name", job,
                    "--num_warmup_steps", "1", "--num_prof_steps", "1")
        with PerseusClient(address) as client:
            say("2/3 optimize: the server computes the time-energy frontier")
            info = client.wait_for_phase(job, "serving", timeout=300)
            frontier = [p.plan for p in client.get_frontier(job, include_plans=True).plans if p.plan is not None]
            print(f"frontier: {len(frontier)} plans, {frontier[0].iteration_time:.3f}-{frontier[-1].iteration_time:.3f} s "
                  f"per iteration (job {info.job_id}, blocking power {info.blocking_power:.1f} W)", flush=True)
            say("3/3 serve and train: baseline (all max frequency), then the served plans")
            rows = [train(cfg, "all max frequency (baseline)", None, [])]
            for label, target in (("no slowdown", Target.fastest()),
                                  (f"<= {100 * (cfg.slowdown - 1):.0f}% slowdown", Target.max_slowdown(cfg.slowdown))):
                client.set_target(job, target)
                name = client.get_job(job).plan_name
                plan = next((p for p in frontier if p.name == name), None)
                rows.append(train(cfg, f"{label} ({name})", plan, ["--server", address, "--job_name", job]))
    return rows, frontier


def local(cfg: DemoConfig) -> tuple[list[Row], list[FrequencyPlan]]:
    from perseus.profile import load_profile
    from perseus.solver import compute_frontier

    say("1/3 profile locally (no server)")
    run_workers(cfg, "--profile", "true", "--num_warmup_steps", "1", "--num_prof_steps", "1")
    say("2/3 optimize in-process")
    frontier = compute_frontier(load_profile(profile_path(cfg)), "1f1b", cfg.pp, cfg.microbatches)
    say("3/3 train with plan files")
    rows = [train(cfg, "all max frequency (baseline)", None, [])]
    fastest = frontier.fastest
    slow = frontier.plan_within(fastest.iteration_time * cfg.slowdown)
    for label, plan in (("no slowdown", fastest), (f"<= {100 * (cfg.slowdown - 1):.0f}% slowdown", slow)):
        path = cfg.out / f"plan-{plan.name}.json"
        plan.save(path)
        rows.append(train(cfg, f"{label} ({plan.name})", plan, ["--plan", str(path)]))
    return rows, list(frontier.plans)


def train(cfg: DemoConfig, label: str, plan: FrequencyPlan | None, extra: list[str]) -> Row:
    out = cfg.out / "train" / label.split(" (")[0].replace(" ", "-").replace("<=", "le").replace("%", "pct")
    print(f"-- training: {label}", flush=True)
    run_workers(cfg, "--max_steps", str(cfg.steps), "--out_dir", str(out), *extra)
    t, e = measured(out)
    return Row(label, plan, t, e)


def report(cfg: DemoConfig, rows: list[Row], frontier: list[FrequencyPlan]) -> None:
    from rich.console import Console
    from rich.table import Table

    base = rows[0]
    max_plan = _max_frequency_plan(cfg)
    table = Table(title=f"{MODEL}, {cfg.pp} stages x {cfg.microbatches} microbatches, simulated A100s "
                        f"(time scale {cfg.time_scale:g}): measured, and planned on the profile")
    for col in ("plan", "iteration time", "energy / iteration", "time vs baseline: measured / planned",
                "energy saved: measured / planned"):
        table.add_column(col, justify="left" if col == "plan" else "right", no_wrap=col == "plan")
    for r in rows:
        planned_time = planned_energy = "-"
        if r.plan is not None and max_plan is not None:
            planned_time = f"{100 * (r.plan.iteration_time / max_plan.iteration_time - 1):+.1f}%"
            planned_energy = f"{100 * (1 - r.plan.energy / max_plan.energy):.1f}%"
        table.add_row(r.label, f"{r.time:.3f} s", f"{r.energy:.1f} J",
                      f"{100 * (r.time / base.time - 1):+.1f}% / {planned_time}",
                      f"{100 * (1 - r.energy / base.energy):.1f}% / {planned_energy}")
    Console(width=max(110, shutil.get_terminal_size().columns)).print(table)
    print("Plans are picked on planned time. Measured time adds what the plan does not model: each clock change "
          "the workers request (the simulated GPU, like NVML, takes a while to switch) and scheduling noise on "
          "this machine's shared cores, so a plan measures slightly slower than planned.")


def _max_frequency_plan(cfg: DemoConfig) -> FrequencyPlan | None:
    """The all-max-frequency plan, evaluated on the measured profile (None if that is impossible)."""
    try:
        from dataclasses import replace

        from perseus.pipeline.evaluate import evaluate_plan
        from perseus.pipeline.schedules import stage_orders
        from perseus.plan import PlannedInstruction
        from perseus.profile import load_profile

        profile = load_profile(profile_path(cfg))
        fmax = profile.frequencies()[0]
        stages = tuple(
            tuple(PlannedInstruction(i.kind, i.microbatch, fmax) for i in order)
            for order in stage_orders("1f1b", cfg.pp, cfg.microbatches)
        )
        plan = FrequencyPlan("1f1b", cfg.pp, cfg.microbatches, 0.0, 0.0, stages, name="max-frequency")
        t, e = evaluate_plan(profile, plan)
        return replace(plan, iteration_time=t, energy=e)
    except (ImportError, PerseusError, KeyError):
        return None


def plots(cfg: DemoConfig, rows: list[Row], frontier: list[FrequencyPlan]) -> None:
    try:
        from perseus import plot
    except ImportError:
        print("(perseus.plot not available: skipping plots)")
        return
    from perseus.profile import load_profile

    chosen = next((r.plan for r in rows if r.plan is not None), None)
    jobs: list[tuple[str, Any]] = []
    if hasattr(plot, "plot_frontier") and frontier:
        max_plan = _max_frequency_plan(cfg)
        baselines = [max_plan] if max_plan is not None else []
        jobs.append(("frontier.png", lambda out: plot.plot_frontier(frontier, out, baselines=baselines, chosen=chosen)))
    if hasattr(plot, "plot_timeline") and chosen is not None:
        jobs.append(("timeline.png", lambda out: plot.plot_timeline(chosen, load_profile(profile_path(cfg)), out)))
    for name, draw in jobs:
        try:
            draw(cfg.out / name)
        except Exception as exc:  # a plot is a bonus: never lose the demo's results over it
            print(f"(could not draw {name}: {exc})")
        else:
            print(f"saved {cfg.out / name}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bash run.sh demo", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--out", default="out/demo", help="output folder (default ./out/demo; replaced)")
    parser.add_argument("--pp", type=int, default=4, help="pipeline stages (simulated GPUs)")
    parser.add_argument("--microbatches", type=int, default=8)
    parser.add_argument("--time-scale", type=float, default=0.25, help="simulated instruction time multiplier")
    parser.add_argument("--steps", type=int, default=6, help="training iterations per plan")
    parser.add_argument("--local", action="store_true", help="no server: local sweep, in-process solver, plan files")
    args = parser.parse_args(argv)
    cfg = DemoConfig(Path(args.out).resolve(), args.pp, args.microbatches, time_scale=args.time_scale,
                     steps=args.steps, local=args.local)
    if cfg.out.exists():
        shutil.rmtree(cfg.out)
    cfg.out.mkdir(parents=True)
    start = time.perf_counter()
    try:
        rows, frontier = local(cfg) if cfg.local else with_server(cfg)
        report(cfg, rows, frontier)
        plots(cfg, rows, frontier)
    except PerseusError as exc:
        print(f"perseus: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(f"demo finished in {time.perf_counter() - start:.0f} s; outputs in {cfg.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

