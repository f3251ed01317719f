"""The compiled step loop: built by numba once, then loaded as machine code by processes that never import numba."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from perseus.profile import load_profile
from perseus.solver import native, native_abi
from perseus.solver.frontier import compute_frontier

from .conftest import A100

SOLVE = (
    "import json, sys\n"
    "from perseus.profile import load_profile\n"
    "from perseus.solver import native\n"
    "from perseus.solver.frontier import compute_frontier\n"
    "frontier = compute_frontier(load_profile(sys.argv[1]), '1f1b', 8, 6)\n"
    "loaded = 'numba' in sys.modules\n"
    "import numba\n"  # numba still imports and compiles after its helper modules were loaded on their own
    "assert numba.njit(lambda x: x + 1)(1) == 2\n"
    "print(json.dumps({'source': native.step_loop().source, 'numba': loaded,\n"
    "                  'times': frontier.store.iteration_time.tolist(), 'energies': frontier.store.energy.tolist()}))\n"
)


def solve_in_fresh_process(cache: Path) -> tuple[dict[str, object], str]:
    """Solve 8 x 6 in a new interpreter whose kernel cache is ``cache``: its report and its stderr."""
    env = {**os.environ, "PERSEUS_KERNEL_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-c", SOLVE, str(A100)], capture_output=True, text=True, env=env,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1]), done.stderr


def test_second_process_loads_the_machine_code_without_numba_and_solves_the_same(tmp_path: Path) -> None:
    native.step_loop()  # this process's object (run.sh built it before the tests; else it is built now)
    built = native.cache_path()
    assert built is not None and built.is_file()
    cache = tmp_path / "kernels"
    cache.mkdir()
    stored = cache / built.name
    stored.write_bytes(built.read_bytes())
    first, stderr = solve_in_fresh_process(cache)
    assert first["source"] == "cache" and first["numba"] is False, stderr
    assert first["times"] == compute_frontier(load_profile(A100), "1f1b", 8, 6).store.iteration_time.tolist()

    # A damaged object is never linked (MCJIT would crash the process): one warning, and a rebuild that
    # solves the same and is kept for the next process.
    blob = bytearray(stored.read_bytes())
    blob[-100] ^= 0xFF
    stored.write_bytes(bytes(blob))
    second, stderr = solve_in_fresh_process(cache)
    assert second["source"] == "compiled" and second["numba"] is True
    assert second["times"] == first["times"] and second["energies"] == first["energies"]
    assert [line for line in stderr.splitlines() if "unusable" in line] == [
        f"compiled solver kernels at {stored} are unusable (checksum mismatch); compiling them again"
    ]
    assert list(cache.glob("perseus-steps-*.o")) == [stored]
    third, stderr = solve_in_fresh_process(cache)
    assert third["source"] == "cache" and third["numba"] is False and third["times"] == first["times"], stderr


def test_a_new_object_replaces_this_machines_older_ones_in_the_install_cache_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own, shared = tmp_path / "own", tmp_path / "shared"
    for directory in (own, shared):
        directory.mkdir()
        (directory / "perseus-steps-aaaa-mine.o").write_bytes(b"older sources, this CPU")
        (directory / "perseus-steps-aaaa-other.o").write_bytes(b"older sources, another CPU")
    monkeypatch.setattr(native, "OWN_CACHE", own)
    for directory in (own, shared):
        native._write(directory / "perseus-steps-bbbb-mine.o", b"code", {"entry": "f", "externals": []})
    assert sorted(p.name for p in own.iterdir()) == ["perseus-steps-aaaa-other.o", "perseus-steps-bbbb-mine.o"]
    assert len(list(shared.iterdir())) == 3  # a user-wide directory may serve other installs: untouched


def test_an_object_in_a_later_cache_directory_is_loaded_without_writing_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An install whose admin built the object: the process finds it wherever it lies and compiles nothing."""
    native.step_loop()  # this process's own object, compiled or cached
    built = native.cache_path()
    assert built is not None and built.is_file()
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (second / built.name).write_bytes(built.read_bytes())
    monkeypatch.setattr(native, "_cache_directories", lambda: [first, second])
    monkeypatch.setattr(native, "_loaded", None)
    assert native.step_loop().source == "cache"
    assert list(first.iterdir()) == []


def test_no_writable_cache_directory_still_solves_and_says_so(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    report, stderr = solve_in_fresh_process(not_a_directory)
    assert report["source"] == "compiled" and report["times"]
    assert stderr.splitlines() == [
        "compiling the solver's step loop for this machine (once per install and CPU, about 20 s)",
        "no writable directory for the compiled solver kernels (set PERSEUS_KERNEL_CACHE); every solve will compile "
        "them again",
    ]


def test_argument_table_refuses_arrays_the_compiled_code_would_misread() -> None:
    arrays = {name: np.zeros((2, 2) if ndim == 2 else 2, dtype=dtype) for name, dtype, ndim in native_abi.ARRAYS}
    table = native_abi.argument_table(arrays)
    assert table[1:3].tolist() == [2, 2] and table[0] == arrays["predecessors"].ctypes.data
    with pytest.raises(TypeError, match="choice: expected a C-contiguous 1-d int64 array"):
        native_abi.argument_table({**arrays, "choice": np.zeros(2, dtype=np.int32)})
    with pytest.raises(TypeError, match="class_time: expected a C-contiguous 2-d float64 array"):
        native_abi.argument_table({**arrays, "class_time": np.zeros((2, 4))[:, ::2]})
