"""``python -m perseus.server [serve options]``: the same as ``perseus serve``, without the other commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from perseus.cli import serve
from perseus.errors import PerseusError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perseus.server")
    subparsers = parser.add_subparsers(dest="command", required=True)
    serve.register(subparsers)
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.handler(args))
    except PerseusError as exc:
        print(f"perseus: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
