"""``perseus serve``: run the Perseus gRPC server (scheduler, health, reflection)."""

from __future__ import annotations

import argparse
import dataclasses
import os

from perseus.control.drift import DriftConfig
from perseus.control.straggler import StragglerConfig
from perseus.server.control import ControlConfig
from perseus.server.limits import Limits, flag


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the Perseus server that profiles jobs and serves frequency plans to workers",
        description=(
            "Run the gRPC control plane. Jobs, plans and reports live in the database (any SQLAlchemy "
            "URL; migrated to the newest schema on start), so the server can be restarted at any time "
            "and workers reconnect to the same plans."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7787, help="port (default 7787; 0 picks a free one)")
    parser.add_argument("--db", default="sqlite:///perseus.db", help="SQLAlchemy URL (default sqlite:///perseus.db)")
    parser.add_argument(
        "--token",
        default=os.environ.get("PERSEUS_TOKEN"),
        help="require 'authorization: Bearer TOKEN' on every call (default: env PERSEUS_TOKEN)",
    )
    parser.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate chain")
    parser.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    parser.add_argument(
        "--insecure", action="store_true",
        help="allow a non-loopback address without --token, or with --token but without TLS (behind a TLS proxy)",
    )
    parser.add_argument("--profile-dir", metavar="DIR", help="also write each assembled profile to DIR/JOB/")
    parser.add_argument("--frontier-workers", type=int, default=2, metavar="N",
                        help="frontier computations at once, smallest job first (default 2)")
    parser.add_argument("--frontier-time-limit", type=float, default=6 * 3600.0, metavar="S",
                        help="fail a job whose frontier takes longer than S seconds (default 21600)")
    parser.add_argument("--frontier-memory-limit", type=int, default=16 * 1024, metavar="MIB",
                        help="fail a job whose frontier needs more than MIB of memory (default 16384; 0: none)")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                        help="least severe server log lines to print (default info)")
    parser.add_argument("--metrics-port", type=int, metavar="PORT",
                        help="serve Prometheus metrics on http://METRICS_HOST:PORT/metrics (0 picks a free port)")
    parser.add_argument("--metrics-host", default="127.0.0.1", help="address of the metrics endpoint (default 127.0.0.1)")
    loop = parser.add_argument_group("closed loop", "automatic stragglers and drift (see README: Closed loop)")
    st, dr = StragglerConfig(), DriftConfig()
    loop.add_argument("--auto-stragglers", choices=("on", "off"), default="on",
                      help="switch the other pipelines when one is persistently slower (default on)")
    loop.add_argument("--straggler-window", type=int, default=st.window, metavar="N",
                      help="iterations per pipeline in the median pace (default %(default)s)")
    loop.add_argument("--straggler-enter", type=float, default=st.enter, metavar="X",
                      help="pace relative to the other pipelines that makes a straggler (default %(default)s)")
    loop.add_argument("--straggler-exit", type=float, default=st.exit, metavar="X",
                      help="relative pace below which a straggler has recovered (default %(default)s)")
    loop.add_argument("--straggler-confirm", type=int, default=st.confirm, metavar="N",
                      help="iterations in a row a straggler change must be called for (default %(default)s)")
    loop.add_argument("--straggler-dwell", type=int, default=st.dwell, metavar="N",
                      help="iterations a straggler decision stands before the next (default %(default)s)")
    loop.add_argument("--drift-detection", choices=("on", "off"), default="on",
                      help="compare stages with the plan's prediction and re-plan on drift (default on)")
    loop.add_argument("--drift-window", type=int, default=dr.window, metavar="N",
                      help="iterations per stage in the median measured/predicted ratio (default %(default)s)")
    loop.add_argument("--drift-threshold", type=float, default=dr.threshold, metavar="X",
                      help="relative time or energy difference that counts as drift (default %(default)s)")
    loop.add_argument("--drift-hold", type=int, default=dr.hold, metavar="N",
                      help="iterations a drift must persist before the job counts as drifted (default %(default)s)")
    loop.add_argument("--drift-max-scale", type=float, default=dr.max_scale, metavar="X",
                      help="largest ratio a profile rescale may explain; beyond it: re-profile (default %(default)s)")
    loop.add_argument("--drift-max-spread", type=float, default=dr.max_spread, metavar="X",
                      help="largest relative spread in a window a rescale may explain (default %(default)s)")
    limits = parser.add_argument_group("limits", "what clients may ask of the server (see README: Security)")
    for name, help_text in LIMIT_HELP.items():
        limits.add_argument(flag(name), type=int, default=getattr(Limits(), name), metavar="N",
                            help=f"{help_text} (default %(default)s)")
    parser.set_defaults(handler=run)


#: One flag per :class:`~perseus.server.limits.Limits` field.
LIMIT_HELP: dict[str, str] = {
    "max_message_bytes": "largest request or response in bytes",
    "max_page_bytes": "largest page of a paged GetFrontier response in bytes (at most --max-message-bytes)",
    "max_jobs": "jobs stored at once",
    "max_ranks_per_job": "ranks registered per job",
    "max_profile_bytes": "largest profile CSV a client may register, in bytes",
    "max_watch_streams": "open WatchSchedule streams in total",
    "max_watch_streams_per_client": "open WatchSchedule streams from one client address",
    "max_report_streams": "open StreamReports streams (one per reporting rank) in total",
    "max_report_streams_per_client": "open StreamReports streams from one client address",
}


def run(args: argparse.Namespace) -> int:
    import logging
    import sys
    from pathlib import Path

    from perseus.server.app import ServerConfig
    from perseus.server.app import run as serve
    from perseus.server.pool import PoolLimits

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    config = ServerConfig(
        host=args.host,
        port=args.port,
        db=args.db,
        token=args.token or None,
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None,
        insecure=args.insecure,
        profile_dir=Path(args.profile_dir) if args.profile_dir else None,
        limits=Limits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Limits)}),
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        frontier=PoolLimits(args.frontier_workers, args.frontier_time_limit, args.frontier_memory_limit),
        control=control_config(args),
    )
    return serve(config, announce=lambda line: print(line, file=sys.stdout, flush=True))


def control_config(args: argparse.Namespace) -> ControlConfig:
    """The closed loop's settings from ``perseus serve``'s flags (validated by :meth:`ServerConfig.validate`)."""
    return ControlConfig(
        straggler=StragglerConfig(args.straggler_window, args.straggler_enter, args.straggler_exit,
                                  args.straggler_confirm, args.straggler_dwell),
        drift=DriftConfig(args.drift_window, args.drift_threshold, args.drift_hold, args.drift_max_scale,
                          args.drift_max_spread),
        auto_stragglers=args.auto_stragglers == "on",
        drift_detection=args.drift_detection == "on",
    )
