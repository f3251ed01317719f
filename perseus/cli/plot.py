"""``perseus plot``: frontier and timeline PNGs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("plot", help="draw a frontier or a plan timeline as PNG",
                                   description="Draw a frontier or a plan's timeline as a PNG image.")
    kinds = parser.add_subparsers(dest="plot_kind", metavar="KIND", required=True)
    frontier = kinds.add_parser("frontier", help="iteration time vs energy of every plan in DIR/frontier.csv",
                                description="Plot iteration time against energy for DIR/frontier.csv; with several "
                                "DIRs (e.g. one job optimized under several --schedule values), all on one chart.")
    frontier.add_argument("directories", type=Path, nargs="+", metavar="DIR",
                          help="output directory of `perseus optimize`")
    frontier.add_argument("--out", type=Path, default=None, help="PNG path (default: first DIR/frontier.png)")
    frontier.set_defaults(handler=run_frontier)
    timeline = kinds.add_parser("timeline", help="one row per stage, boxes per instruction",
                                description="Plot a plan's per-stage timeline, colored by frequency or power, "
                                "with the critical path outlined.")
    timeline.add_argument("plan", type=Path, metavar="PLAN.json", help="a plan JSON file, or DIR:PLAN (plans.npz)")
    timeline.add_argument("--profile", type=Path, required=True, metavar="PROFILE.csv",
                          help="the profile the plan was computed from (instruction times and power)")
    timeline.add_argument("--blocking-power", type=float, default=None, metavar="W",
                          help="default: meta.json beside the profile")
    timeline.add_argument("--color-by", choices=("frequency", "power"), default="frequency")
    timeline.add_argument("--out", type=Path, default=None, help="PNG path (default PLAN.png)")
    timeline.set_defaults(handler=run_timeline)


def run_frontier(args: argparse.Namespace) -> int:
    from perseus.plot import frontier_label, plot_frontier, plot_frontiers, read_frontier_csv

    default_out = Path(args.directories[0]) / "frontier.png"
    if len(args.directories) == 1:
        out = plot_frontier(args.directories[0], args.out or default_out)
    else:
        frontiers = [
            (frontier_label(d), [(t, e) for _, t, e in read_frontier_csv(d)]) for d in args.directories
        ]
        out = plot_frontiers(frontiers, args.out or default_out)
    print(f"wrote {out}")
    return 0


def run_timeline(args: argparse.Namespace) -> int:
    from perseus.plan.store import load_plan
    from perseus.plot import plot_timeline
    from perseus.profile import load_profile

    plan = load_plan(args.plan)
    profile = load_profile(args.profile, blocking_power=args.blocking_power)
    # DIR:PLAN draws next to the store, as DIR/PLAN.png.
    default = args.plan.with_suffix(".png") if args.plan.is_file() else Path(str(args.plan).rpartition(":")[0]) / f"{plan.name}.png"
    out = plot_timeline(plan, profile, args.out or default, args.color_by)
    print(f"wrote {out}")
    return 0
