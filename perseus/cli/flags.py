"""The flag rules every Perseus command line shares, as one ``argparse.ArgumentParser`` subclass.

* ``--max_steps`` and ``--max-steps`` are the same flag in every command (the launcher's flags are
  spelled with ``_`` like torchrun's, the ``perseus`` commands' with ``-``; users mix them up).
* A flag is never matched by an abbreviation: ``--max_step`` is an error naming the flag, not a
  silent ``--max_steps``.
* ``--help`` shows each flag's default.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to a flag's help unless the help already says its default or it has none."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            "default" in text
            or action.default in (None, argparse.SUPPRESS)
            or not action.option_strings
            or action.nargs == 0  # store_true and friends: the default is "off"
        ):
            return action.help
        return f"{text} (default: %(default)s)".lstrip()


class FlagParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with the rules in the module docstring (subcommands inherit them)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        argv = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args([self._canonical(a) for a in argv], namespace)

    def _canonical(self, arg: str) -> str:
        """``arg`` with its flag respelled to the one this parser knows (``_`` or ``-``), if needed."""
        if not arg.startswith("--") or arg == "--":
            return arg
        flag, eq, value = arg.partition("=")
        if flag in self._option_string_actions:
            return arg
        for twin in ("--" + flag[2:].replace("_", "-"), "--" + flag[2:].replace("-", "_")):
            if twin in self._option_string_actions:
                return twin + eq + value
        return arg
