"""Cutting a model's layer list into pipeline stages.

Methods (the ``--partition_method`` flag, as in Merak):

- ``uniform``: the same number of layers per stage (embedding and head count as layers).
- ``parameters``: balance parameter counts; minimises the largest stage (exact, dynamic programming).
- ``uniform_transformer``: the same number of transformer (or residual) blocks per stage; the
  embedding joins the first stage and the head the last.
- ``custom:0,8,14,21,27``: explicit layer boundaries, ``num_stages + 1`` increasing numbers from 0
  to the number of layers.

A partition is a tuple of boundaries ``b`` with stage ``i`` holding layers ``b[i]:b[i+1]``. With
interleaved 1F1B the model is cut into ``pp * chunks`` virtual stages; virtual stage
``chunk * pp + rank`` runs on rank ``rank``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from perseus.errors import InputError

METHODS: tuple[str, ...] = ("uniform", "parameters", "uniform_transformer", "custom:B0,B1,...")


@dataclass(frozen=True)
class Partition:
    """Layer boundaries of every (virtual) stage and what each stage holds."""

    method: str
    boundaries: tuple[int, ...]
    parameters: tuple[int, ...]
    """Parameters per stage."""

    @property
    def num_stages(self) -> int:
        return len(self.boundaries) - 1

    def layers(self, stage: int) -> range:
        return range(self.boundaries[stage], self.boundaries[stage + 1])

    @property
    def tag(self) -> str:
        """Short name for profile folders: the method, or ``custom-0-8-14`` for custom boundaries."""
        if self.method.startswith("custom"):
            return "custom-" + "-".join(str(b) for b in self.boundaries)
        return self.method

    def table(self, kinds: Sequence[str] | None = None, gpu_of: Sequence[tuple[int, int]] | None = None) -> str:
        """Human-readable partition: layers and parameters per stage.

        ``gpu_of[v]`` is ``(GPU, chunk)`` of virtual stage ``v`` when GPUs hold several model chunks:
        rows then name the virtual stage and the GPU that runs it.
        """
        lines = [f"partition ({self.method}): boundaries {','.join(map(str, self.boundaries))}"]
        for s in range(self.num_stages):
            r = self.layers(s)
            what = ""
            if kinds is not None:
                blocks = sum(1 for i in r if kinds[i] == "block")
                parts = [f"{blocks} block{'' if blocks == 1 else 's'}"] if blocks else []
                parts += [k for k in ("embedding", "stem", "head") if any(kinds[i] == k for i in r)]
                what = f" ({' + '.join(parts)})" if parts else ""
            span = f"layer {r.start}" if len(r) == 1 else f"layers {r.start}-{r.stop - 1}"
            name = f"stage {s}" if gpu_of is None else f"virtual stage {s} (GPU {gpu_of[s][0]}, chunk {gpu_of[s][1]})"
            lines.append(f"  {name}: {span}{what}, {self.parameters[s]:,} parameters")
        return "\n".join(lines)


def partition(
    method: str,
    parameter_counts: Sequence[int],
    kinds: Sequence[str],
    num_stages: int,
) -> Partition:
    """Partition ``len(parameter_counts)`` layers into ``num_stages`` stages with ``method``."""
    n = len(parameter_counts)
    if num_stages < 1:
        raise InputError("--pp", f"must be >= 1, got {num_stages}")
    if num_stages > n:
        raise InputError("--pp", f"{num_stages} stages but the model has only {n} layers")
    if method == "uniform":
        bounds = _even(0, n, num_stages)
    elif method == "parameters":
        bounds = _balance(parameter_counts, num_stages)
    elif method == "uniform_transformer":
        bounds = _uniform_blocks(kinds, num_stages)
    elif method.startswith("custom:"):
        bounds = _custom(method, n, num_stages)
    else:
        raise InputError("--partition_method", f"must be one of {', '.join(METHODS)}; got {method!r}")
    params = tuple(sum(parameter_counts[bounds[s] : bounds[s + 1]]) for s in range(num_stages))
    return Partition(method, tuple(bounds), params)


def _even(start: int, stop: int, parts: int) -> list[int]:
    """Boundaries splitting ``start:stop`` into ``parts`` near-equal runs (earlier parts get extras)."""
    size, extra = divmod(stop - start, parts)
    out = [start]
    for i in range(parts):
        out.append(out[-1] + size + (1 if i < extra else 0))
    return out


def _balance(weights: Sequence[int], parts: int) -> list[int]:
    """Contiguous split minimising the heaviest part (then the number of layers of the heaviest)."""
    n = len(weights)
    prefix = [0]
    for w in weights:
        prefix.append(prefix[-1] + w)
    inf = float("inf")
    # best[k][i]: minimal max-part weight splitting the first i layers into k non-empty parts.
    best = [[inf] * (n + 1) for _ in range(parts + 1)]
    cut = [[0] * (n + 1) for _ in range(parts + 1)]
    best[0][0] = 0
    for k in range(1, parts + 1):
        for i in range(k, n - (parts - k) + 1):
            for j in range(k - 1, i):
                cost = max(best[k - 1][j], prefix[i] - prefix[j])
                if cost < best[k][i]:
                    best[k][i] = cost
                    cut[k][i] = j
    bounds = [n]
    for k in range(parts, 0, -1):
        bounds.append(cut[k][bounds[-1]])
    return bounds[::-1]


def _uniform_blocks(kinds: Sequence[str], parts: int) -> list[int]:
    blocks = [i for i, k in enumerate(kinds) if k == "block"]
    if len(blocks) < parts:
        raise InputError("--pp", f"{parts} stages but the model has only {len(blocks)} blocks")
    per = _even(0, len(blocks), parts)
    # Stage s starts at its first block; the first stage also takes everything before, the last
    # everything after (embedding, head).
    bounds = [0] + [blocks[per[s]] for s in range(1, parts)] + [len(kinds)]
    return bounds


def _custom(method: str, n: int, parts: int) -> list[int]:
    text = method.split(":", 1)[1]
    try:
        bounds = [int(x) for x in text.split(",")]
    except ValueError:
        raise InputError("--partition_method", f"custom boundaries must be integers, got {text!r}") from None
    if len(bounds) != parts + 1:
        raise InputError(
            "--partition_method", f"custom needs {parts + 1} boundaries for {parts} stages, got {len(bounds)}"
        )
    if bounds[0] != 0 or bounds[-1] != n:
        raise InputError("--partition_method", f"custom boundaries must start at 0 and end at {n} (layers)")
    if any(b >= c for b, c in itertools.pairwise(bounds)):
        raise InputError("--partition_method", f"custom boundaries must increase strictly, got {text}")
    return bounds
