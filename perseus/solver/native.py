"""The compiled step loop, loaded as machine code without importing numba.

numba compiles the solver's kernels well, but starting it costs every ``perseus optimize``
about 0.7 s before the first cut (import 0.3 s, its CPU target 0.3 s, loading cached kernels
0.1 s): more than a whole small solve, and why the small pipelines stayed under 20x lowtime.
So numba runs once per machine (:mod:`perseus.solver.native_build`), and its output is kept
as an object file; later processes load that object with llvmlite's MCJIT (numba's own code
generator, 0.07 s to import) and call its C entry point through ctypes.

The object is stored with a header naming the symbols it needs from numba's runtime (its
allocator and helpers, which live in numba's C extension modules and load without numba's
Python package), and keyed by everything that shapes the machine code: the sources of the
compiled modules, the numba and llvmlite builds, Python, and this CPU's name and features.
A missing, stale or damaged object is rebuilt; an unwritable cache directory only means the
next process compiles again, and it says so.

Cache location: ``$PERSEUS_KERNEL_CACHE`` if set, else ``__pycache__`` beside this file (as
numba's own cache), else ``$XDG_CACHE_HOME/perseus`` (``~/.cache/perseus``).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import llvmlite
import llvmlite.binding as llvm
import numpy as np
import numpy.typing as npt

from perseus.solver.native_abi import argument_table

log = logging.getLogger(__name__)

FORMAT = 1
"""Version of the cache file layout (header line, then the object)."""
CACHE_ENV = "PERSEUS_KERNEL_CACHE"
CACHE_PREFIX = "perseus-steps-"
OWN_CACHE = Path(__file__).parent / "__pycache__"
"""The default cache directory: this install's own, as numba's cache is."""
COMPILED_SOURCES = ("sweep.py", "kernels.py", "mincut.py", "native_build.py", "native_abi.py")
"""The modules whose code ends up in the object: any edit to one makes a new key."""
HELPER_MODULES = {
    "numba._helperlib": "_helperlib",
    "numba._dynfunc": "_dynfunc",
    "numba.core.runtime._nrt_python": "core/runtime/_nrt_python",
}
"""numba's C extension modules holding the runtime helpers compiled code calls (module: path stem)."""


class KernelLoadError(RuntimeError):
    """A stored object cannot be used here (damaged, or it needs a symbol this process lacks)."""


@dataclass(frozen=True)
class StepLoop:
    """The compiled :func:`perseus.solver.sweep.run_steps`, callable on NumPy arrays."""

    _entry: ctypes._CFuncPtr  # type: ignore[name-defined]  # keeps the loaded code's function alive
    _engine: llvm.ExecutionEngine
    source: str
    """Where the machine code came from: ``"cache"`` or ``"compiled"`` (this process built it)."""

    def __call__(self, arrays: Mapping[str, npt.NDArray[np.generic]]) -> None:
        """Run the loop on ``arrays`` (see :data:`perseus.solver.native_abi.ARRAYS`), in place.

        ctypes releases the GIL for the call, so other threads (a server's) run meanwhile."""
        table = argument_table(arrays)
        self._entry(table.ctypes.data)


_lock = threading.Lock()
_loaded: StepLoop | None = None


def step_loop() -> StepLoop:
    """The process's compiled step loop: loaded from the cache, else compiled (and cached) first.

    ``run.sh`` calls it before the tests and the demo, so no test pays the first compilation."""
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = _load_or_build()
        return _loaded


def cache_path() -> Path | None:
    """Where this machine's object is written (the first writable cache directory; ``None`` if none is).
    Reading also looks in the others."""
    for directory in _cache_directories():
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(directory, os.W_OK | os.X_OK):
            return directory / f"{CACHE_PREFIX}{_cache_key()}.o"
    return None


def _cache_directories() -> list[Path]:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return [Path(configured)]
    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "perseus"
    return [OWN_CACHE, user]


def _numba_directory() -> Path:
    spec = importlib.util.find_spec("numba")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise KernelLoadError("numba is not installed (the solver needs it to compile its kernels once)")
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache  # the sources and the CPU do not change while the process runs
def _cache_key() -> str:
    """``SOURCES-MACHINE``: what the code is (our compiled modules, numba's and llvmlite's builds,
    Python), then what it is for (this CPU's name and features)."""
    sources = hashlib.sha256(f"format {FORMAT}\n".encode())
    here = Path(__file__).parent
    for name in COMPILED_SOURCES:
        sources.update(name.encode() + b"\0" + (here / name).read_bytes())
    sources.update((_numba_directory() / "_version.py").read_bytes())
    sources.update(f"llvmlite {llvmlite.__version__} python {sys.version} {sys.platform}\n".encode())
    machine = hashlib.sha256(f"{llvm.get_host_cpu_name()} {llvm.get_host_cpu_features().flatten()}".encode())
    return f"{sources.hexdigest()[:16]}-{machine.hexdigest()[:12]}"


def _target_machine() -> llvm.TargetMachine:
    """A target machine for this CPU with numba's JIT settings (static relocation on x86)."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(
        cpu=llvm.get_host_cpu_name(),
        features=llvm.get_host_cpu_features().flatten(),
        opt=3,
        reloc="static" if target.name.startswith("x86") else "default",
        codemodel="jitdefault",
        jit=True,
    )


def _load_or_build() -> StepLoop:
    machine = _target_machine()
    name = f"{CACHE_PREFIX}{_cache_key()}.o"
    for directory in _cache_directories():  # a read-only install may hold one its admin built
        stored = directory / name
        if stored.is_file():
            try:
                header, code = _read(stored)
                return _load(machine, code, header["entry"], header["externals"], "cache")
            except (OSError, ValueError, KeyError, KernelLoadError) as error:
                log.warning("compiled solver kernels at %s are unusable (%s); compiling them again", stored, error)
    from perseus.solver import native_build  # numba: only on the first solve on a machine

    log.warning("compiling the solver's step loop for this machine (once per install and CPU, about 20 s)")
    built = native_build.build(machine)
    path = cache_path()
    if path is None:
        log.warning(
            "no writable directory for the compiled solver kernels (set %s); every solve will compile them again",
            CACHE_ENV,
        )
    else:
        _write(path, built.code, {"entry": built.entry_symbol, "externals": list(built.externals)})
    return _load(machine, built.code, built.entry_symbol, list(built.externals), "compiled")


def _read(path: Path) -> tuple[dict[str, object], bytes]:
    blob = path.read_bytes()
    line, _, code = blob.partition(b"\n")
    header = json.loads(line)
    if header.get("format") != FORMAT or header.get("key") != _cache_key():
        raise KernelLoadError("built for other sources or another machine")
    if hashlib.sha256(code).hexdigest() != header.get("sha256"):
        raise KernelLoadError("checksum mismatch")
    return header, code


def _write(path: Path, code: bytes, header: dict[str, object]) -> None:
    """Write atomically (a temporary file in the same directory, then rename): a process reading
    the cache meanwhile sees the old object or the new one, never half of one."""
    line = json.dumps({"format": FORMAT, "key": _cache_key(), "sha256": hashlib.sha256(code).hexdigest(), **header})
    temporary: Path | None = None
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as out:
            temporary = Path(out.name)
            out.write(line.encode() + b"\n" + code)
        temporary.chmod(0o644)  # readable by every user of a shared install, as numba's cache is
        os.replace(temporary, path)
        _remove_stale(path)
    except OSError as error:
        log.warning("could not keep the compiled solver kernels at %s (%s); the next process compiles again", path, error)
        if temporary is not None:
            temporary.unlink(missing_ok=True)


def _remove_stale(path: Path) -> None:
    """Delete this machine's objects for older sources from the package's own ``__pycache__`` (one
    per edit or upgrade otherwise). Objects for other CPUs stay (a shared install serves several),
    and a user-wide cache directory is left alone (several installs may share it)."""
    if path.parent != OWN_CACHE:
        return
    machine = path.stem.rsplit("-", 1)[-1]
    for stale in path.parent.glob(f"{CACHE_PREFIX}*-{machine}.o"):
        if stale != path:
            stale.unlink(missing_ok=True)


def _load(machine: llvm.TargetMachine, code: bytes, entry: object, externals: object, source: str) -> StepLoop:
    if not isinstance(entry, str) or not isinstance(externals, list):
        raise KernelLoadError("malformed header")
    _provide_symbols([str(name) for name in externals])
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), machine)
    engine.add_object_file(llvm.ObjectFileRef.from_data(code))
    engine.finalize_object()
    address = engine.get_function_address(entry)
    if not address:
        raise KernelLoadError(f"entry point {entry} missing")
    function = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p)(address)
    return StepLoop(function, engine, source)


def _provide_symbols(names: list[str]) -> None:
    """Make every symbol the object calls resolvable before it is linked: MCJIT aborts the whole
    process on an unresolved one, so a name nobody provides is an error here instead."""
    helpers: dict[str, int] | None = None
    # The symbols already in this process: CPython's C API, libc, libm (on Windows, CPython's DLL).
    process = ctypes.pythonapi if sys.platform == "win32" else ctypes.CDLL(None)
    for name in names:
        if llvm.address_of_symbol(name):
            continue
        if helpers is None:
            helpers = _runtime_helpers()
        address = helpers.get(name)
        if address is None:
            try:
                address = ctypes.cast(getattr(process, name), ctypes.c_void_p).value
            except AttributeError:
                raise KernelLoadError(f"needs {name}, which no loaded library provides") from None
        llvm.add_symbol(name, address)


def _runtime_helpers() -> dict[str, int]:
    """Addresses of numba's C runtime helpers under the names compiled code calls them by
    (``numba_*``, ``NRT_*``, the C math functions), as numba itself registers them."""
    modules = {name: _extension(name, stem) for name, stem in HELPER_MODULES.items()}
    helpers: dict[str, int] = {"_Py_NoneStruct": id(None)}
    for name in ("numba._helperlib", "numba._dynfunc"):
        for py_name, address in modules[name].c_helpers.items():
            helpers["numba_" + py_name] = address
            helpers.setdefault(py_name, address)  # the math functions go in under their C names
    for py_name, address in modules["numba.core.runtime._nrt_python"].c_helpers.items():
        helpers[py_name if py_name.startswith("_") else "NRT_" + py_name] = address
    return helpers


def _extension(name: str, stem: str) -> ModuleType:
    """numba's C extension ``name``, loaded from its file without importing the numba package."""
    if name in sys.modules:
        return sys.modules[name]
    directory = _numba_directory()
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = directory / f"{stem}{suffix}"
        if path.exists():
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None:
                break
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # one instance per process, shared with numba if it loads later
            return module
    raise KernelLoadError(f"numba's {stem} extension not found in {directory}")
