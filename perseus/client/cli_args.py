"""Connection options shared by the CLI commands that talk to a Perseus server."""

from __future__ import annotations

import argparse
import os

from perseus.client.client import DEFAULT_TARGET, PerseusClient


def add_connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=os.environ.get("PERSEUS_SERVER", DEFAULT_TARGET),
        metavar="HOST:PORT[,HOST:PORT...]",
        help=f"Perseus server, or replicas to fail over between (default: env PERSEUS_SERVER or {DEFAULT_TARGET})",
    )
    parser.add_argument("--token", default=None, help="bearer token (default: env PERSEUS_TOKEN)")
    parser.add_argument("--tls-ca", default=None, metavar="PEM", help="use TLS, trusting this CA certificate")
    parser.add_argument("--tls", action="store_true", help="use TLS with the system's trusted CAs")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def client_from_args(args: argparse.Namespace) -> PerseusClient:
    # A CLI user wants an answer soon: retry a restarting server briefly only.
    return PerseusClient(args.server, args.token, tls=args.tls, tls_ca=args.tls_ca, retry_timeout=5.0, timeout=30.0)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned text columns."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)
