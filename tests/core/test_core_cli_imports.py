"""`perseus --help` and `perseus optimize` import only what they use (start-up time is most of a small run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import A100

# The LP solver is scipy.optimize; numba only compiles the step loop, once per machine.
HEAVY = ("grpc", "numpy", "numba", "scipy.linalg", "scipy.optimize", "matplotlib", "igraph", "sqlalchemy", "torch", "rich")
PROBE = (
    "import json, sys\n"
    "from perseus.cli.main import main\n"
    "try:\n"
    "    code = main(sys.argv[2:])\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "print(json.dumps([code, sorted(h for h in sys.argv[1].split(',') if h in sys.modules)]))\n"
)


def imported(*argv: str) -> tuple[int, list[str]]:
    """Exit code of ``perseus ARGV`` in a fresh interpreter and which heavy packages it imported."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(HEAVY), *argv], capture_output=True, text=True, timeout=300, check=False
    )
    code, modules = json.loads(done.stdout.splitlines()[-1])
    return code, modules


def test_help_imports_nothing_heavy() -> None:
    assert imported("--help") == (0, [])
    assert imported("jobs", "--help") == (0, ["grpc"])  # only the chosen command's module loads


def test_optimize_imports_no_plotting_and_no_lp_solver(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    argv = ["optimize", str(A100), "--stages", "8", "--microbatches", "2", "--out", out]
    imported(*argv)  # the first solve on a machine may compile the step loop with numba (perseus.solver.native)
    assert imported(*argv) == (0, ["numpy"])  # later ones load its machine code: no numba
    code, modules = imported(*argv, "--lower-bound")
    assert code == 0 and "scipy.optimize" in modules and "matplotlib" not in modules
