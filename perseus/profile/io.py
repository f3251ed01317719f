"""Reading and writing instruction profiles (CSV ``stage,instruction,frequency,time,energy``).

Every problem in a file is reported as an :class:`~perseus.errors.InputError` naming the
file, the line and what is wrong, so the CLI can print one line and exit 2.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from perseus.errors import InputError
from perseus.profile.model import ALL_KINDS, SPLIT_KINDS, InstructionProfile, Measurement, PipelineProfile

COLUMNS: tuple[str, ...] = ("stage", "instruction", "frequency", "time", "energy")
META_FILENAME = "meta.json"

# Physical bounds on every number a profile may hold. Anything outside is a typo or a unit
# mix-up, and letting it through breaks the solver's arithmetic (1e308 J overflows a sum to
# inf and picks a wrong fastest plan; a stage index of 1e9 would enumerate a billion stages).
MAX_FILE_BYTES = 64 * 2**20
"""A 16-stage profile at 200 clocks is about 200 KB; 64 MB is far beyond any real one."""
MAX_FIELD_CHARS = 64
"""The longest field a real profile holds is a float's repr (about 25 characters)."""
MAX_STAGES = 1024
"""Pipelines run 16-64 stages today; 1024 leaves room while keeping loops over stages bounded."""
MAX_OPTIONS = 1024
"""Frequencies per instruction: GPUs expose about 200 graphics clocks."""
MAX_FREQUENCY_MHZ = 10_000
"""Graphics clocks are 200-3,000 MHz."""
MIN_TIME_S, MAX_TIME_S = 1e-7, 3600.0
"""An instruction shorter than 0.1 us or longer than an hour is not a pipeline pass."""
MAX_POWER_W = 10_000.0
"""Average power (energy / time) and blocking power: a GPU draws at most about 1 kW."""


def parse_profile(
    text: str,
    *,
    source: str,
    blocking_power: float,
    num_stages: int | None = None,
) -> PipelineProfile:
    """Parse profile CSV text. ``source`` names the file in error messages.

    ``num_stages``, when given, must equal the number of stages in the file.
    """
    check_blocking_power(blocking_power, source)
    reader = csv.reader(io.StringIO(text))
    header = _next_row(reader, source)
    if header is None:
        raise InputError(source, "file is empty; expected a header " + ",".join(COLUMNS), line=1)
    header = [h.strip() for h in header]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise InputError(source, f"missing column(s) {', '.join(missing)}; expected {','.join(COLUMNS)}", line=1)
    index = {c: header.index(c) for c in COLUMNS}

    rows: dict[tuple[int, str], dict[int, Measurement]] = {}
    while (row := _next_row(reader, source)) is not None:
        line_no = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            raise InputError(source, f"expected {len(header)} fields, found {len(row)}", line=line_no)
        stage = _parse_int(row[index["stage"]], "stage", source, line_no, minimum=0, maximum=MAX_STAGES - 1)
        kind = row[index["instruction"]].strip()
        if kind not in ALL_KINDS:
            raise InputError(source, f"instruction must be one of {', '.join(ALL_KINDS)}, got {kind!r}", line=line_no)
        frequency = _parse_int(
            row[index["frequency"]], "frequency", source, line_no, minimum=1, maximum=MAX_FREQUENCY_MHZ
        )
        time = _parse_positive(row[index["time"]], "time", source, line_no)
        if not MIN_TIME_S <= time <= MAX_TIME_S:
            raise InputError(source, f"time must be between {MIN_TIME_S:g} and {MAX_TIME_S:g} s, got {time:g}", line=line_no)
        energy = _parse_positive(row[index["energy"]], "energy", source, line_no)
        if energy > MAX_POWER_W * time:
            raise InputError(
                source, f"energy {energy} J in {time} s is above {MAX_POWER_W:.0f} W; check the units", line=line_no
            )
        per_freq = rows.setdefault((stage, kind), {})
        if frequency in per_freq:
            raise InputError(
                source, f"duplicate measurement for stage {stage} {kind} at {frequency} MHz", line=line_no
            )
        if len(per_freq) == MAX_OPTIONS:
            raise InputError(source, f"stage {stage} {kind} has more than {MAX_OPTIONS} frequencies", line=line_no)
        per_freq[frequency] = Measurement(frequency, time, energy)

    if not rows:
        raise InputError(source, "no measurements found")
    stages_found = sorted({stage for stage, _ in rows})
    expected_stages = num_stages if num_stages is not None else stages_found[-1] + 1
    if num_stages is not None and stages_found[-1] + 1 > num_stages:
        raise InputError(source, f"profile has {stages_found[-1] + 1} stages but {num_stages} were asked for")
    for stage in range(expected_stages):
        if stage not in stages_found:
            raise InputError(
                source,
                f"stage {stage} is missing: profile has {len(stages_found)} stage(s) but {expected_stages} were asked for",
            )
        _check_stage_kinds(rows, stage, source)
    profiles = {
        key: InstructionProfile(key[0], key[1], tuple(per_freq.values())) for key, per_freq in rows.items()
    }
    return PipelineProfile(profiles, blocking_power=blocking_power, source=source)


def load_profile(
    path: str | Path,
    *,
    blocking_power: float | None = None,
    num_stages: int | None = None,
) -> PipelineProfile:
    """Load a profile CSV. Without ``blocking_power``, read it from ``meta.json`` beside the file."""
    path = Path(path)
    text = read_text_file(path, MAX_FILE_BYTES)
    if blocking_power is None:
        blocking_power = read_blocking_power(path)
    return parse_profile(text, source=str(path), blocking_power=blocking_power, num_stages=num_stages)


def read_meta(profile_path: Path) -> dict[str, object]:
    """The ``meta.json`` beside a profile as a dict ({} when there is none); one clear line if it is bad."""
    meta_path = profile_path.parent / META_FILENAME
    if not meta_path.exists():
        return {}
    try:
        meta = json.loads(read_text_file(meta_path, MAX_META_BYTES))
    except json.JSONDecodeError:
        raise InputError(str(meta_path), "is not valid JSON") from None
    if not isinstance(meta, dict):
        raise InputError(str(meta_path), "expected a JSON object")
    return meta


def read_blocking_power(profile_path: Path) -> float:
    """The ``blocking_power`` (watts) recorded in ``meta.json`` next to a profile."""
    meta_path = profile_path.parent / META_FILENAME
    if not meta_path.exists():
        raise InputError(
            str(profile_path),
            f"no blocking power given and no {META_FILENAME} beside the profile; pass --blocking-power WATTS",
        )
    text = read_text_file(meta_path, MAX_META_BYTES)
    try:
        meta = json.loads(text)
        value = float(meta["blocking_power"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise InputError(str(meta_path), "expected a JSON object with a numeric 'blocking_power' (watts)") from None
    check_blocking_power(value, str(meta_path))
    return value


MAX_META_BYTES = 2**20
"""meta.json holds a handful of keys."""


def check_blocking_power(watts: float, where: str) -> None:
    """Blocking power must be a finite number of watts in [0, MAX_POWER_W]."""
    if not (math.isfinite(watts) and 0 <= watts <= MAX_POWER_W):
        raise InputError(where, f"blocking power must be between 0 and {MAX_POWER_W:.0f} W, got {watts}")


def read_text_file(path: Path, max_bytes: int) -> str:
    """The UTF-8 text of ``path``; a missing file, a directory, an oversized or undecodable file is one
    InputError naming it (with the line of the first bad byte)."""
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise InputError(str(path), "no such file") from None
    except IsADirectoryError:
        raise InputError(str(path), "is a directory, expected a file") from None
    except OSError as exc:
        raise InputError(str(path), f"cannot read: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise InputError(str(path), f"file is larger than {max_bytes // 2**20} MB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(str(path), f"not UTF-8 text (byte 0x{data[exc.start]:02x})", line=line) from None


def _next_row(reader: Any, source: str) -> list[str] | None:
    """The next CSV row, with csv's own errors and overlong fields reported at their line."""
    try:
        row = next(reader, None)
    except csv.Error as exc:
        raise InputError(source, f"malformed CSV: {exc}", line=reader.line_num) from None
    if row is not None and any(len(cell) > MAX_FIELD_CHARS for cell in row):
        raise InputError(source, f"field longer than {MAX_FIELD_CHARS} characters", line=reader.line_num)
    return row


def format_profile(measurements: Iterable[tuple[int, str, Measurement]]) -> str:
    """CSV text for ``(stage, instruction, measurement)`` triples, in the order given."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for stage, kind, m in measurements:
        writer.writerow([stage, kind, m.frequency, repr(m.time), repr(m.energy)])
    return out.getvalue()


def save_profile(profile: PipelineProfile, directory: str | Path, **meta: object) -> Path:
    """Write ``profile.csv`` and ``meta.json`` (blocking power plus ``meta``) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rows = ((p.stage, p.instruction, m) for p in profile for m in p.measurements)
    csv_path = directory / "profile.csv"
    csv_path.write_text(format_profile(rows))
    (directory / META_FILENAME).write_text(
        json.dumps({"blocking_power": profile.blocking_power, **meta}, indent=2) + "\n"
    )
    return csv_path


def _check_stage_kinds(rows: dict[tuple[int, str], dict[int, Measurement]], stage: int, source: str) -> None:
    """A stage needs a forward and a backward, fused or split into both parts at the same frequencies."""
    if (stage, "forward") not in rows:
        raise InputError(source, f"stage {stage} has no forward measurements")
    split = [k for k in SPLIT_KINDS if (stage, k) in rows]
    if len(split) == 1:
        missing = next(k for k in SPLIT_KINDS if k not in split)
        raise InputError(source, f"stage {stage} has {split[0]} but no {missing} measurements (give both or neither)")
    if split and rows[(stage, SPLIT_KINDS[0])].keys() != rows[(stage, SPLIT_KINDS[1])].keys():
        raise InputError(source, f"stage {stage}: backward_input and backward_weight must be measured at the same frequencies")
    if not split and (stage, "backward") not in rows:
        raise InputError(source, f"stage {stage} has no backward measurements")


def _parse_int(cell: str, name: str, source: str, line: int, *, minimum: int, maximum: int) -> int:
    try:
        value = int(cell.strip())
    except ValueError:
        raise InputError(source, f"{name} must be an integer, got {cell.strip()!r}", line=line) from None
    if not minimum <= value <= maximum:
        raise InputError(source, f"{name} must be between {minimum} and {maximum}, got {value}", line=line)
    return value


def _parse_positive(cell: str, name: str, source: str, line: int) -> float:
    try:
        value = float(cell.strip())
    except ValueError:
        raise InputError(source, f"{name} must be a number, got {cell.strip()!r}", line=line) from None
    if not math.isfinite(value) or value <= 0:
        raise InputError(source, f"{name} must be a positive number, got {cell.strip()!r}", line=line)
    return value
