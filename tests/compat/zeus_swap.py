"""Run a Zeus training script on Perseus with only its ``from zeus... import ...`` lines changed.

:func:`swap_imports` rewrites every ``from zeus.<module> import <names>`` (single-line or
parenthesised) to ``from perseus.compat.zeus import <names>`` and nothing else.
:func:`run_zeus_script` runs the result in a fresh interpreter on simulated GPUs and then
evaluates an expression over the script's globals, so a test can check what the script built.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).parent / "zeus_scripts"
REPO = Path(__file__).resolve().parents[2]

_ZEUS_IMPORT = re.compile(r"^from zeus(?:\.\w+)* import (\([^)]*\)|[^\n]*)$", re.MULTILINE)

# Runs the swapped script as __main__, then prints one JSON line with the requested values.
_RUNNER = """
import json, runpy, sys
script, expression = sys.argv[1], sys.argv[2]
sys.argv = [script, *sys.argv[3:]]
scope = runpy.run_path(script, run_name="__main__")
print("@@RESULT " + json.dumps(eval(expression, scope)))
"""


def swap_imports(source: str) -> str:
    """The script with its Zeus imports pointing at ``perseus.compat.zeus``; fails if it has none."""
    swapped, count = _ZEUS_IMPORT.subn(lambda m: f"from perseus.compat.zeus import {m.group(1)}", source)
    if count == 0:
        raise AssertionError("the script has no `from zeus... import` line to swap")
    if re.search(r"^\s*(import zeus|from zeus)", swapped, re.MULTILINE):
        raise AssertionError("a Zeus import the swap does not handle is left in the script")
    return swapped


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    """Pairs of differing lines (the swap keeps the line count)."""
    a, b = before.splitlines(), after.splitlines()
    assert len(a) == len(b), "the swap changed the number of lines"
    return [(x, y) for x, y in zip(a, b, strict=True) if x != y]


def run_zeus_script(
    name: str, tmp_path: Path, *args: str, report: str = "None", env: dict[str, str] | None = None
) -> tuple[Any, str]:
    """Run ``zeus_scripts/<name>`` swapped; returns (the value of ``report`` in its globals, its output)."""
    swapped = tmp_path / name
    swapped.write_text(swap_imports((SCRIPTS / name).read_text()))
    environment = {
        **os.environ,
        "PERSEUS_DEVICE": "sim",
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER, str(swapped), report, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
        cwd=tmp_path,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{name} failed (exit {proc.returncode}):\n{output[-4000:]}"
    results = [line for line in proc.stdout.splitlines() if line.startswith("@@RESULT ")]
    assert len(results) == 1, f"{name} printed no result line:\n{output[-4000:]}"
    return json.loads(results[0].removeprefix("@@RESULT ")), output
