"""Every plan of a frontier in one compact file (``plans.npz``).

A frontier of a 16-stage x 256-microbatch pipeline holds about 3,000 plans of 8,192
instructions each: one pretty-printed JSON file per plan is GBs. Plans of one frontier share
their instruction order and differ from their neighbours in a few instructions, so the store
keeps:

* the *slots*: every instruction, stage by stage in execution order (the order a worker
  applies them), once for all plans;
* one frequency row per plan, in slot order, each row stored as its difference from the
  previous plan's (mostly zeros), deflate-compressed by ``numpy.savez_compressed``.

``numpy.load`` runs with ``allow_pickle=False``: the file holds plain arrays only.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import math
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from perseus.errors import InputError
from perseus.plan.model import SCHEDULES, FrequencyPlan, PlannedInstruction

PLANS_FILENAME = "plans.npz"
BASELINE_FILENAME = "baseline.csv"
"""Beside the store: the all-max-frequency plan's ``plan,iteration_time,energy`` (what plots compare with)."""
FORMAT = "perseus-plans/1"
MAX_STORE_ENTRIES = 200_000_000
"""Plans x instructions a store may hold once decoded (800 MB as int32): refuse larger files
before decompressing them."""


@dataclass(frozen=True)
class Slot:
    """One instruction position of a stage's execution order."""

    stage: int
    kind: str
    microbatch: int
    chunk: int


@dataclass(frozen=True, eq=False)
class PlanStore:
    """The plans of one frontier: shared instruction slots and a frequency matrix (plan x slot)."""

    schedule: str
    num_stages: int
    num_microbatches: int
    num_chunks: int
    slots: tuple[Slot, ...]
    """Every instruction, stage by stage, each stage's in execution order."""
    names: tuple[str, ...]
    iteration_time: npt.NDArray[np.float64]
    energy: npt.NDArray[np.float64]
    frequencies: npt.NDArray[np.int32]
    """``(plans, slots)`` MHz."""

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(name) from None

    def plan(self, k: int) -> FrequencyPlan:
        """Plan ``k`` as a :class:`FrequencyPlan`."""
        entries = [
            PlannedInstruction(s.kind, s.microbatch, f, s.chunk)
            for s, f in zip(self.slots, self.frequencies[k].tolist(), strict=True)
        ]
        bounds = np.searchsorted([s.stage for s in self.slots], np.arange(self.num_stages + 1)).tolist()
        stages = [tuple(entries[a:b]) for a, b in itertools.pairwise(bounds)]
        return FrequencyPlan(
            schedule=self.schedule,
            num_stages=self.num_stages,
            num_microbatches=self.num_microbatches,
            iteration_time=float(self.iteration_time[k]),
            energy=float(self.energy[k]),
            stages=tuple(stages),
            num_chunks=self.num_chunks,
            name=self.names[k],
        )

    def plans(self) -> list[FrequencyPlan]:
        return [self.plan(k) for k in range(len(self))]

    def export(self, indices: Iterable[int], directory: Path) -> list[Path]:
        """Write plans ``indices`` as ``directory/<plan>.json`` in the plan JSON schema."""
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for k in indices:
            plan = self.plan(k)
            path = directory / f"{plan.name}.json"
            plan.save(path)
            written.append(path)
        return written

    @classmethod
    def from_plans(cls, plans: Sequence[FrequencyPlan]) -> PlanStore:
        """A store of ``plans``, which must share schedule, sizes and instruction order."""
        if not plans:
            raise ValueError("a plan store needs at least one plan")
        first = plans[0]
        slots = tuple(
            Slot(s, p.instruction, p.microbatch, p.chunk) for s, stage in enumerate(first.stages) for p in stage
        )
        shape = (first.schedule, first.num_stages, first.num_microbatches, first.num_chunks)
        for plan in plans:
            if (plan.schedule, plan.num_stages, plan.num_microbatches, plan.num_chunks) != shape:
                raise ValueError(f"plan {plan.name!r} is for another pipeline than {first.name!r}")
        return cls(
            schedule=first.schedule,
            num_stages=first.num_stages,
            num_microbatches=first.num_microbatches,
            num_chunks=first.num_chunks,
            slots=slots,
            names=tuple(p.name for p in plans),
            iteration_time=np.array([p.iteration_time for p in plans]),
            energy=np.array([p.energy for p in plans]),
            frequencies=np.array(
                [[i.frequency for stage in p.stages for i in stage] for p in plans], dtype=np.int32
            ),
        )

    def save(self, path: str | Path) -> None:
        """Write the store; rows are delta-encoded against the previous plan and compressed."""
        kinds = sorted({s.kind for s in self.slots})
        kind_index = {k: i for i, k in enumerate(kinds)}
        header = {
            "format": FORMAT,
            "schedule": self.schedule,
            "num_stages": self.num_stages,
            "num_microbatches": self.num_microbatches,
            "num_chunks": self.num_chunks,
            "kinds": kinds,
            "names": list(self.names),
        }
        deltas = np.diff(self.frequencies, axis=0, prepend=np.zeros((1, len(self.slots)), dtype=np.int32))
        # Neighbouring plans differ by a few hundred MHz at most: 16 bits suffice unless a
        # hand-made plan carries absurd clocks.
        narrow = deltas.size == 0 or int(np.abs(deltas).max()) <= np.iinfo(np.int16).max
        with Path(path).open("wb") as f:
            np.savez_compressed(
                f,
                header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
                slot_stage=np.array([s.stage for s in self.slots], dtype=np.int32),
                slot_kind=np.array([kind_index[s.kind] for s in self.slots], dtype=np.int32),
                slot_microbatch=np.array([s.microbatch for s in self.slots], dtype=np.int32),
                slot_chunk=np.array([s.chunk for s in self.slots], dtype=np.int32),
                iteration_time=self.iteration_time,
                energy=self.energy,
                frequency_deltas=deltas.astype(np.int16 if narrow else np.int32),
            )

    @classmethod
    def load(cls, path: str | Path) -> PlanStore:
        """Read a store written by :meth:`save`; anything malformed is one InputError naming the file."""
        path = Path(path)
        where = str(path)
        if path.is_dir():
            path = path / PLANS_FILENAME
            where = str(path)
        if path.is_file() and not zipfile.is_zipfile(path):
            raise InputError(where, "not a Perseus plan store (not a zip archive)")
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(bytes(data["header"]).decode())
                shapes = {key: data[key].shape for key in ("slot_stage", "iteration_time")}
                if shapes["slot_stage"][0] * shapes["iteration_time"][0] > MAX_STORE_ENTRIES:
                    raise InputError(where, f"holds more than {MAX_STORE_ENTRIES} plan entries")
                arrays = {key: data[key] for key in data.files if key != "header"}
        except FileNotFoundError:
            raise InputError(where, "no such file") from None
        except InputError:
            raise
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
            raise InputError(where, f"not a Perseus plan store ({exc})") from None
        return _from_arrays(header, arrays, where)


def _from_arrays(header: object, arrays: dict[str, np.ndarray], where: str) -> PlanStore:
    try:
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ValueError(f"format is not {FORMAT}")
        kinds = [str(k) for k in header["kinds"]]
        names = tuple(str(n) for n in header["names"])
        slot_kind = arrays["slot_kind"]
        if len(slot_kind) and not 0 <= int(slot_kind.min()) <= int(slot_kind.max()) < len(kinds):
            raise ValueError("instruction kind index out of range")
        slots = tuple(
            Slot(int(s), kinds[k], int(m), int(c))
            for s, k, m, c in zip(
                arrays["slot_stage"].tolist(), slot_kind.tolist(),
                arrays["slot_microbatch"].tolist(), arrays["slot_chunk"].tolist(), strict=True,
            )
        )
        deltas = arrays["frequency_deltas"]
        if deltas.shape != (len(names), len(slots)) or arrays["iteration_time"].shape != (len(names),):
            raise ValueError("array shapes disagree")
        store = PlanStore(
            schedule=str(header["schedule"]),
            num_stages=int(header["num_stages"]),
            num_microbatches=int(header["num_microbatches"]),
            num_chunks=int(header["num_chunks"]),
            slots=slots,
            names=names,
            iteration_time=arrays["iteration_time"].astype(np.float64),
            energy=arrays["energy"].astype(np.float64),
            frequencies=np.cumsum(deltas, axis=0, dtype=np.int32),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(where, f"not a Perseus plan store ({exc})") from None
    if store.schedule not in SCHEDULES or any(not 0 <= s.stage < store.num_stages for s in slots):
        raise InputError(where, "not a Perseus plan store (schedule or stage out of range)")
    return store


def load_plan(spec: str | Path) -> FrequencyPlan:
    """A plan from a plan JSON file, or ``DIR:PLAN`` / ``FILE.npz:PLAN`` naming one plan of a store."""
    text = str(spec)
    store_path, sep, name = text.rpartition(":")
    if sep and name and not Path(text).exists():
        store = PlanStore.load(store_path)
        try:
            return store.plan(store.index(name))
        except KeyError:
            raise InputError(text, f"no plan named {name!r} in {store_path}") from None
    return FrequencyPlan.load(text)


ROW_PREFIX = "perseus-plan-z1:"
"""Marks a plan stored compactly in one text field (a database row), see :func:`encode_plan`."""


def encode_plan(plan: FrequencyPlan) -> str:
    """``plan`` as one compact text field: a short JSON header, then its instruction slots and
    frequencies (stage-major, delta-encoded) deflated and base64-encoded.

    A 16 x 256 plan is about 8 KB this way instead of about 400 KB of JSON.
    """
    return encode_rows(PlanStore.from_plans([plan]))[0]


def encode_rows(store: PlanStore) -> list[str]:
    """Every plan of ``store`` as :func:`encode_plan`'s text, without materialising the plans
    (the slot columns are built once for all of them)."""
    kinds = sorted({s.kind for s in store.slots})
    columns = np.array(
        [[s.stage, kinds.index(s.kind), s.microbatch, s.chunk] for s in store.slots], dtype=np.int32
    ).reshape(-1, 4)
    rows = []
    for k in range(len(store)):
        table = np.column_stack([columns, store.frequencies[k]]).T  # one row per field: long runs compress
        packed = zlib.compress(np.diff(table, axis=1, prepend=0).astype("<i4").tobytes(), 9)
        header = {"schedule": store.schedule, "num_stages": store.num_stages,
                  "num_microbatches": store.num_microbatches, "num_chunks": store.num_chunks,
                  "iteration_time": float(store.iteration_time[k]), "energy": float(store.energy[k]),
                  "name": store.names[k], "kinds": kinds, "slots": len(store.slots)}
        rows.append(ROW_PREFIX + json.dumps(header, separators=(",", ":")) + "\n" + base64.b64encode(packed).decode())
    return rows


@dataclass(frozen=True)
class RowSummary:
    """What a compact plan row's header says of its plan, read without decoding its clocks."""

    name: str
    iteration_time: float
    energy: float


def row_summary(text: str, *, source: str = "<plan>") -> RowSummary:
    """The header of :func:`encode_plan`'s text (InputError naming ``source`` if it is not one)."""
    try:
        if not text.startswith(ROW_PREFIX):
            raise ValueError("no compact-plan prefix")
        header = json.loads(text[len(ROW_PREFIX) :].partition("\n")[0])
        summary = RowSummary(str(header["name"]), float(header["iteration_time"]), float(header["energy"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(source, f"not a compact plan ({exc})") from None
    if not (math.isfinite(summary.iteration_time) and math.isfinite(summary.energy)):
        raise InputError(source, "not a compact plan (iteration time or energy not finite)")
    return summary


def decode_plan(text: str, *, source: str = "<plan>") -> FrequencyPlan:
    """The plan of :func:`encode_plan`'s text, or of plain plan JSON."""
    if not text.startswith(ROW_PREFIX):
        return FrequencyPlan.from_json(text, source=source)
    try:
        head, _, body = text[len(ROW_PREFIX) :].partition("\n")
        header = json.loads(head)
        count = int(header["slots"])
        if not 0 <= count <= MAX_STORE_ENTRIES:
            raise ValueError("slot count out of range")
        raw = zlib.decompressobj().decompress(base64.b64decode(body, validate=True), 5 * 4 * count + 1)
        table = np.cumsum(np.frombuffer(raw, dtype="<i4").reshape(5, count), axis=1)
        kinds = [str(k) for k in header["kinds"]]
        store = PlanStore(
            schedule=str(header["schedule"]), num_stages=int(header["num_stages"]),
            num_microbatches=int(header["num_microbatches"]), num_chunks=int(header["num_chunks"]),
            slots=tuple(Slot(int(s), kinds[k], int(m), int(c)) for s, k, m, c in table[:4].T.tolist()),
            names=(str(header["name"]),), iteration_time=np.array([float(header["iteration_time"])]),
            energy=np.array([float(header["energy"])]), frequencies=table[4:5].astype(np.int32),
        )
        plan = store.plan(0)
    except (KeyError, TypeError, ValueError, IndexError, zlib.error, binascii.Error) as exc:
        raise InputError(source, f"not a compact plan ({exc})") from None
    return plan
