"""PNG plots of a frontier and of a plan's timeline (matplotlib, headless)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from perseus.errors import InputError
from perseus.pipeline.dag import PipelineDAG
from perseus.pipeline.evaluate import plan_frequencies
from perseus.plan.model import FrequencyPlan
from perseus.plan.store import BASELINE_FILENAME, PLANS_FILENAME, load_plan
from perseus.profile.model import PipelineProfile

_HATCH = {"backward": "//", "backward_input": "\\\\", "backward_weight": ".."}
"""Box hatching per instruction kind in timelines (forwards are plain)."""


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_frontier_csv(directory: str | Path) -> list[tuple[str, float, float]]:
    """``(plan, iteration_time, energy)`` rows of ``DIR/frontier.csv``."""
    path = Path(directory) / "frontier.csv" if Path(directory).is_dir() else Path(directory)
    try:
        with path.open() as f:
            rows = list(csv.DictReader(f))
        return [(r["plan"], float(r["iteration_time"]), float(r["energy"])) for r in rows]
    except FileNotFoundError:
        raise InputError(str(path), "no such file (run `perseus optimize ... --out DIR` first)") from None
    except (KeyError, ValueError):
        raise InputError(str(path), "expected columns plan,iteration_time,energy with numbers") from None


def frontier_label(directory: str | Path) -> str:
    """``DIR (schedule)``, the schedule read from the plans ``perseus optimize`` wrote there, if any."""
    folder = Path(directory)
    if (folder / PLANS_FILENAME).is_file():  # the compact store: its first plan says the schedule
        plan = load_plan(f"{folder}:{read_frontier_csv(folder)[0][0]}")
    elif plans := sorted((folder / "plans").glob("*.json"))[:1]:
        plan = FrequencyPlan.load(plans[0])
    else:
        return folder.name
    chunks = f", {plan.num_chunks} chunks" if plan.num_chunks > 1 else ""
    return f"{Path(directory).name} ({plan.schedule}{chunks})"


def plot_frontiers(frontiers: Sequence[tuple[str, Sequence[tuple[float, float]]]], out_png: str | Path) -> Path:
    """Several frontiers on one chart, e.g. one job under 1F1B, interleaved and zero-bubble schedules.

    Each frontier is ``(label, [(iteration_time, energy), ...])``; each gets its own colour and
    a marker at its fastest plan, where the schedules' iteration times at max frequency compare.
    """
    if not frontiers:
        raise InputError("DIR", "give at least one frontier directory")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for k, (label, points) in enumerate(frontiers):
        times, energies = zip(*sorted(points), strict=True)
        color = plt.get_cmap("tab10")(k % 10)
        ax.step(times, energies, where="post", color=color, lw=1.2, label=label)
        ax.scatter([times[0]], [energies[0]], marker="o", s=24, color=color)
    return _save_time_energy_chart(plt, fig, ax, out_png)


def plot_frontier(
    source: str | Path | Sequence[FrequencyPlan],
    out_png: str | Path,
    baselines: Sequence[FrequencyPlan] = (),
    chosen: FrequencyPlan | None = None,
) -> Path:
    """Draw iteration time against energy for every frontier plan, with optional baselines marked."""
    marks = [(p.name or "baseline", p.iteration_time, p.energy) for p in baselines]
    title = "Perseus frontier"
    if isinstance(source, (str, Path)):
        points = [(t, e) for _, t, e in read_frontier_csv(source)]
        saved = Path(source) / BASELINE_FILENAME
        if Path(source).is_dir() and saved.is_file() and not baselines:
            marks = [("all max frequency" if n == "max-frequency" else n, t, e) for n, t, e in read_frontier_csv(saved)]
        title = Path(source).resolve().name
    else:
        points = [(p.iteration_time, p.energy) for p in source]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    times, energies = zip(*points, strict=True)
    ax.step(times, energies, where="post", color="#1f77b4", lw=1.2, label="Perseus frontier")
    ax.scatter(times, energies, s=6, color="#1f77b4")
    for name, t, e in marks:
        ax.scatter([t], [e], marker="x", s=60, label=name)
    title += f": {len(points)} plans, {min(times):.3f}-{max(times):.3f} s per iteration"
    reference = next((m for m in marks if m[0] in ("all max frequency", "max-frequency")), None)
    if reference is not None:
        no_slower = [e for t, e in points if t <= reference[1] * (1 + 1e-9)]
        if no_slower:
            title += f"\n{100 * (1 - min(no_slower) / reference[2]):.1f}% less energy than all max frequency, no slower"
    ax.set_title(title, fontsize=9)
    if chosen is not None:
        ax.scatter([chosen.iteration_time], [chosen.energy], marker="*", s=140, color="#d62728",
                   label=f"chosen ({chosen.name})", zorder=5)
    return _save_time_energy_chart(plt, fig, ax, out_png)


def _save_time_energy_chart(plt: Any, fig: Any, ax: Any, out_png: str | Path) -> Path:
    ax.set_xlabel("iteration time (s)")
    ax.set_ylabel("iteration energy (J)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out_png)
    fig.savefig(out)
    plt.close(fig)
    return out


LABEL_MIN_SHARE = 0.006
"""Boxes longer than this share of the iteration carry their microbatch number (about 4 characters wide)."""


def plot_timeline(plan: FrequencyPlan, profile: PipelineProfile, out_png: str | Path, color_by: str = "frequency") -> Path:
    """One row per stage, one box per instruction, colored by frequency or average power.

    Instructions on the critical path (zero slack) get a black outline.
    """
    if color_by not in ("frequency", "power"):
        raise InputError("--color-by", f"must be frequency or power, got {color_by!r}")
    from perseus.pipeline.costs import instruction_measurements

    dag = PipelineDAG.build(plan.schedule, plan.num_stages, plan.num_microbatches, plan.num_chunks)
    freqs = plan_frequencies(plan, dag)
    durations, powers = np.empty(dag.num_nodes), np.empty(dag.num_nodes)
    for node, inst in enumerate(dag.nodes):
        ms = {m.frequency: m for m in instruction_measurements(profile, dag, inst.stage, inst.kind, inst.chunk)}
        if freqs[node] not in ms:
            raise InputError(profile.source, f"stage {inst.stage} {inst.kind} has no measurement at {freqs[node]} MHz")
        m = ms[freqs[node]]
        durations[node], powers[node] = m.time, m.energy / m.time
    finish = dag.finish_times(durations)
    makespan = float(finish.max())
    critical = dag.latest_finish_times(durations, makespan) - finish <= 1e-9 * makespan
    values = np.asarray(freqs, dtype=float) if color_by == "frequency" else powers
    plt = _pyplot()
    cmap = plt.get_cmap("viridis")
    lo, hi = float(values.min()), float(values.max())
    norm = plt.Normalize(lo, hi if hi > lo else lo + 1)
    fig, ax = plt.subplots(figsize=(10, 0.5 + 0.45 * dag.num_stages), dpi=120)
    for node, inst in enumerate(dag.nodes):
        start = finish[node] - durations[node]
        ax.barh(
            inst.stage, durations[node], left=start, height=0.8, color=cmap(norm(values[node])),
            edgecolor="black" if critical[node] else "white", linewidth=1.4 if critical[node] else 0.3,
            hatch=_HATCH.get(inst.kind),
        )
        if durations[node] > LABEL_MIN_SHARE * makespan:  # room for the microbatch number
            ax.text(start + durations[node] / 2, inst.stage, str(inst.microbatch), ha="center", va="center",
                    fontsize=6, color="white" if norm(values[node]) < 0.6 else "black")
    ax.set_yticks(range(dag.num_stages), [f"stage {s}" for s in range(dag.num_stages)])
    ax.invert_yaxis()
    ax.set_xlabel("time (s); numbers: microbatch; // backward, \\\\ input gradient, .. weight gradient; "
                  "black outline = critical path")
    ax.set_title(f"{plan.name or 'plan'}: {plan.iteration_time:.3f} s, {plan.energy:.0f} J per iteration")
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax,
                 label="frequency (MHz)" if color_by == "frequency" else "power (W)")
    fig.tight_layout()
    out = Path(out_png)
    fig.savefig(out)
    plt.close(fig)
    return out
