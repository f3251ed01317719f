"""Pareto filtering of an instruction's frequency options.

Measurements are noisy: a lower frequency sometimes measures faster, or a higher one cheaper.
For planning, an option is useful only if no other option is both at least as fast and at
least as cheap in *effective* energy (energy minus what blocking would draw anyway). The
kept options are strictly faster-and-costlier one way, slower-and-cheaper the other, so
the per-instruction frontier never goes backwards.
"""

from __future__ import annotations

from collections.abc import Sequence

from perseus.profile.model import Measurement


def pareto_options(measurements: Sequence[Measurement], blocking_power: float) -> list[Measurement]:
    """Options not dominated in (time, effective energy), fastest first.

    Ties in time keep the cheaper option; ties in cost keep the faster one, and on a full tie
    the higher frequency (so a plan never slows a GPU for nothing).
    """
    ordered = sorted(
        measurements, key=lambda m: (m.time, m.effective_energy(blocking_power), -m.frequency)
    )
    kept: list[Measurement] = []
    best_cost = float("inf")
    for m in ordered:
        cost = m.effective_energy(blocking_power)
        if cost < best_cost:
            kept.append(m)
            best_cost = cost
    return kept


def lower_convex_hull(options: Sequence[Measurement], blocking_power: float) -> list[Measurement]:
    """The options on the lower convex hull of (time, effective energy), fastest first.

    ``options`` must already be Pareto-filtered (fastest first, cost strictly falling).
    The hull's piecewise-linear cost is the convex relaxation used by the lower bound.
    """
    hull: list[Measurement] = []
    for m in options:
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            ca, cb, cm = (x.effective_energy(blocking_power) for x in (a, b, m))
            # Drop b when it lies on or above the segment from a to m.
            if (cb - ca) * (m.time - a.time) >= (cm - ca) * (b.time - a.time):
                hull.pop()
            else:
                break
        hull.append(m)
    return hull
