"""Pipeline instructions: what one stage (GPU) runs for one microbatch of one model chunk."""

from __future__ import annotations

from dataclasses import dataclass

from perseus.errors import InputError

V_SHAPED_SCHEDULES: frozenset[str] = frozenset({"zbv", "dualpipev"})
"""Schedules whose two chunks per GPU form a V: GPU ``s`` holds virtual stages ``s`` and ``2S-1-s``."""
SPLIT_BACKWARD_SCHEDULES: frozenset[str] = frozenset({"zb", "zbv", "dualpipev"})
"""Schedules that run backwards split into ``backward_input`` and ``backward_weight``."""


@dataclass(frozen=True, order=True)
class Instruction:
    """One forward, backward or backward part of one microbatch through one model chunk on one stage."""

    stage: int
    kind: str
    """``forward``, ``backward`` (fused), ``backward_input`` or ``backward_weight``."""
    microbatch: int
    chunk: int = 0
    """Model chunk on this stage; :func:`virtual_stage` says which part of the model it is."""

    @property
    def name(self) -> str:
        return instruction_name(self.kind, self.microbatch, self.chunk)


def instruction_name(kind: str, microbatch: int, chunk: int = 0) -> str:
    """The stable name plans and workers match instructions by: ``forward:3``, ``backward_weight:5@1``."""
    return f"{kind}:{microbatch}{f'@{chunk}' if chunk else ''}"


StageOrder = list[list[Instruction]]




def virtual_stage(schedule: str, num_stages: int, stage: int, chunk: int) -> int:
    """Position in the model of ``chunk`` on GPU ``stage``.

    Looping schedules deal chunks round-robin (virtual stage ``chunk * S + stage``); V-shaped
    ones send the model down the GPUs and back up, so the first and last chunk share GPU 0.
    """
    if schedule in V_SHAPED_SCHEDULES and chunk == 1:
        return 2 * num_stages - 1 - stage
    return chunk * num_stages + stage


def placement(schedule: str, num_stages: int, virtual: int) -> tuple[int, int]:
    """``(stage, chunk)`` holding virtual stage ``virtual``; inverse of :func:`virtual_stage`."""
    chunk, stage = divmod(virtual, num_stages)
    if schedule in V_SHAPED_SCHEDULES and chunk == 1:
        return num_stages - 1 - stage, 1
    return stage, chunk


def schedule_chunks(schedule: str, chunks: int | None) -> int:
    """Model chunks per stage ``schedule`` runs with, given the chunks asked for (None: its default).

    Interleaved 1F1B defaults to 2 and needs at least 2; ``zb`` defaults to 1 (ZB-H1); the
    V-shaped schedules always run 2; the others 1. Asking a schedule for chunks it cannot run
    raises InputError naming ``--chunks``.
    """
    fixed = {"zbv": 2, "dualpipev": 2, "1f1b": 1, "gpipe": 1}.get(schedule)
    if fixed is not None:
        if chunks not in (None, fixed):
            raise InputError("--chunks", f"{schedule} runs {fixed} chunk(s) per stage, got {chunks}")
        return fixed
    minimum = 2 if schedule == "interleaved-1f1b" else 1
    if chunks is not None and chunks < minimum:
        raise InputError("--chunks", f"{schedule} needs at least {minimum} chunk(s) per stage, got {chunks}")
    return minimum if chunks is None else chunks


def check_shape(num_stages: int, num_microbatches: int) -> None:
    """Raise InputError unless there is at least one stage and one microbatch."""
    if num_stages < 1:
        raise InputError("num_stages", f"must be >= 1, got {num_stages}")
    if num_microbatches < 1:
        raise InputError("num_microbatches", f"must be >= 1, got {num_microbatches}")
