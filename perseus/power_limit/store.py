"""The saved power-limit profile: measurements written once, reused by later runs of the same job.

A JSON file so a person can read it::

    {"version": 1, "num_gpus": 4, "power_limit_range": [100.0, 300.0], "pl_step": 25.0,
     "warmup_steps": 10, "profile_steps": 40,
     "measurements": [{"power_limit": 300.0, "time": 9.2, "energy": 2053.7}, ...]}

It keeps the raw measurements rather than the chosen limit, so a later run may use
another selector on the same profile. Zeus's profile files (``{"measurements": [...]}``
with no ``version``) are read too, so a job moving from Zeus keeps its profile; Perseus's
files carry the same ``measurements`` list, so Zeus reads them back.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perseus.errors import InputError
from perseus.power_limit.selectors import PowerLimitMeasurement

FORMAT_VERSION = 1


@dataclass(frozen=True)
class SavedProfile:
    """Aggregated measurements of one profiling run and the settings that produced them."""

    measurements: tuple[PowerLimitMeasurement, ...]
    num_gpus: int | None
    """GPUs whose energy the measurements add up; None when the file does not say (Zeus's)."""
    power_limit_range: tuple[float, float] = (0.0, 0.0)
    pl_step: float = 0.0
    warmup_steps: int = 0
    profile_steps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "num_gpus": self.num_gpus,
            "power_limit_range": list(self.power_limit_range),
            "pl_step": self.pl_step,
            "warmup_steps": self.warmup_steps,
            "profile_steps": self.profile_steps,
            "measurements": [
                {"power_limit": m.power_limit, "time": m.time, "energy": m.energy} for m in self.measurements
            ],
            **self.extra,
        }


def save_saved_profile(profile: SavedProfile, path: str | Path) -> None:
    """Write atomically (temporary file + rename) so a crash never leaves half a profile behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(profile.to_dict(), f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_saved_profile(path: str | Path) -> SavedProfile:
    """Read a profile written by :func:`save_saved_profile`; any problem is an InputError naming the file."""
    source = str(path)
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise InputError(source, f"cannot read the power-limit profile: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise InputError(source, f"not valid JSON: {e.msg}", line=e.lineno) from None
    if not isinstance(data, dict):
        raise InputError(source, "expected a JSON object with 'measurements' and 'num_gpus'")
    if "version" not in data and set(data) == {"measurements"}:
        return _zeus_profile(data["measurements"], source)
    if data.get("version") != FORMAT_VERSION:
        raise InputError(source, f"unsupported version {data.get('version')!r}; expected {FORMAT_VERSION}")
    num_gpus = data.get("num_gpus")
    if not isinstance(num_gpus, int) or isinstance(num_gpus, bool) or num_gpus < 1:
        raise InputError(source, f"'num_gpus' must be a positive integer, got {num_gpus!r}")
    measurements = _measurements(data.get("measurements"), source)
    pl_range = data.get("power_limit_range", [0.0, 0.0])
    if not (isinstance(pl_range, list) and len(pl_range) == 2 and all(_is_number(v) for v in pl_range)):
        raise InputError(source, f"'power_limit_range' must be [min_watts, max_watts], got {pl_range!r}")
    settings = {key: data.get(key, 0) for key in ("pl_step", "warmup_steps", "profile_steps")}
    for key, value in settings.items():
        if not _is_number(value):
            raise InputError(source, f"'{key}' must be a number, got {value!r}")
    return SavedProfile(
        measurements=measurements,
        num_gpus=num_gpus,
        power_limit_range=(float(pl_range[0]), float(pl_range[1])),
        pl_step=float(settings["pl_step"]),
        warmup_steps=int(settings["warmup_steps"]),
        profile_steps=int(settings["profile_steps"]),
    )


def _zeus_profile(rows: object, source: str) -> SavedProfile:
    """A Zeus profile file: measurements only; the settings that produced them are not recorded."""
    measurements = _measurements(rows, source)
    limits = sorted({m.power_limit for m in measurements}, reverse=True)
    return SavedProfile(measurements=measurements, num_gpus=None, power_limit_range=(limits[-1], limits[0]))


def _measurements(rows: object, source: str) -> tuple[PowerLimitMeasurement, ...]:
    if not isinstance(rows, list) or not rows:
        raise InputError(source, "'measurements' must be a non-empty list")
    return tuple(_measurement(row, i, source) for i, row in enumerate(rows))


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _measurement(row: Any, i: int, source: str) -> PowerLimitMeasurement:
    where = f"measurements[{i}]"
    if not isinstance(row, dict):
        raise InputError(source, f"{where} must be an object with power_limit, time, energy")
    values: list[float] = []
    for key in ("power_limit", "time", "energy"):
        value = row.get(key)
        if not (isinstance(value, (int, float)) and _is_number(value) and value > 0):
            raise InputError(source, f"{where}.{key} must be a positive number, got {value!r}")
        values.append(float(value))
    return PowerLimitMeasurement(*values)


def measurements_match(saved: Sequence[PowerLimitMeasurement], power_limits: Sequence[float]) -> bool:
    """Whether a saved profile covers exactly the power limits this run would profile."""
    return sorted(m.power_limit for m in saved) == sorted(power_limits)
