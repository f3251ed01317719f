"""One small file per GPU saying what Perseus changed on it, so another process can undo it.

A process that dies by SIGKILL or SIGABRT (the NCCL watchdog) cannot restore the clock it locked:
the launcher that supervised it, or ``perseus devices --reset``, reads these files and undoes
exactly the recorded changes of owners that are gone. A file is written *before* the change is
applied and removed once it is undone, so a crash in between leaves at worst a harmless reset.

Files live in ``$PERSEUS_STATE_DIR`` (default ``~/.cache/perseus/gpu-state``), one per GPU UUID::

    {"uuid": "GPU-8a2b...", "pid": 4242, "clock": true, "power_limit_mw": 300000}

``clock``: the graphics clock is locked; ``power_limit_mw``: the limit to put back (``null``: the
default), present only when Perseus changed the power limit.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATE_DIR_ENV = "PERSEUS_STATE_DIR"


def state_dir() -> Path:
    explicit = os.environ.get(STATE_DIR_ENV)
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "perseus" / "gpu-state"


@dataclass(frozen=True)
class Changes:
    """What one process changed on one GPU."""

    uuid: str
    pid: int
    clock: bool = False
    power: bool = False
    power_limit_mw: int | None = None
    path: Path | None = None

    @property
    def owner_alive(self) -> bool:
        return pid_alive(self.pid)

    def describe(self) -> str:
        parts = (["locked clock"] if self.clock else []) + (["power limit"] if self.power else [])
        return f"{self.uuid}: {', '.join(parts) or 'nothing'} (process {self.pid})"


def _path(uuid: str) -> Path:
    return state_dir() / f"{re.sub(r'[^A-Za-z0-9._-]', '_', uuid)}.json"


def read(uuid: str) -> Changes | None:
    return _load(_path(uuid))


def _load(path: Path) -> Changes | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return Changes(
            uuid=str(data["uuid"]),
            pid=int(data["pid"]),
            clock=bool(data.get("clock")),
            power="power_limit_mw" in data,
            power_limit_mw=None if data.get("power_limit_mw") is None else int(data["power_limit_mw"]),
            path=path,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record(uuid: str, *, clock: bool | None = None, power_limit_mw: int | bool | None = False) -> None:
    """Note a change before it is applied (``power_limit_mw=False``: the power limit is untouched)."""
    current = read(uuid)
    data: dict[str, Any] = {"uuid": uuid, "pid": os.getpid()}
    if current is not None and current.pid == os.getpid():
        data["clock"] = current.clock
        if current.power:
            data["power_limit_mw"] = current.power_limit_mw
    if clock is not None:
        data["clock"] = clock
    if power_limit_mw is not False and "power_limit_mw" not in data:
        data["power_limit_mw"] = power_limit_mw  # the first original is the one to restore
    _write(uuid, data)


def clear(uuid: str, what: str) -> None:
    """Drop ``"clock"`` or ``"power"`` from the record once undone; remove the file when empty."""
    current = read(uuid)
    if current is None or current.pid != os.getpid():
        return
    clock = current.clock and what != "clock"
    power = current.power and what != "power"
    if not clock and not power:
        _path(uuid).unlink(missing_ok=True)
        return
    data: dict[str, Any] = {"uuid": uuid, "pid": current.pid, "clock": clock}
    if power:
        data["power_limit_mw"] = current.power_limit_mw
    _write(uuid, data)


def _write(uuid: str, data: dict[str, Any]) -> None:
    path = _path(uuid)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def all_changes() -> Iterator[Changes]:
    folder = state_dir()
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.json")):
        changes = _load(path)
        if changes is not None:
            yield changes


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def forget_file(changes: Changes) -> None:
    if changes.path is not None:
        changes.path.unlink(missing_ok=True)
