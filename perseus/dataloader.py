"""Energy-aware data loader for recurring training jobs (Zeus's ``ZeusDataLoader`` idea).

Wrap the training data loader; iterate epochs with :meth:`EnergyAwareDataLoader.epochs`
and batches by iterating the loader itself::

    loader = EnergyAwareDataLoader(train_loader, monitor=monitor, max_epochs=100,
                                   target_metric=0.9, cost_threshold=5e6, eta=0.5)
    for epoch in loader.epochs():
        for batch in loader:
            train_step(batch)
        loader.report_metric(evaluate(), higher_is_better=True)

While the first epochs run, a :class:`~perseus.power_limit.GlobalPowerLimitOptimizer`
profiles power limits behind the scenes and then applies the one minimising the same
energy-time cost this loader accounts (``eta * energy + (1 - eta) * max_power * time``).
Training stops when the target metric is reached, after ``max_epochs``, or early when
the cost spent so far plus the predicted cost to reach the target exceeds
``cost_threshold``: a recurring job whose run is going badly (e.g. an unlucky seed) is
cut short instead of burning energy. The prediction extrapolates the metric's average
per-epoch improvement over the last epochs, and assumes at least one more epoch when
there is no improvement to extrapolate, so the early stop never fires on a guess that
is more pessimistic than "one more epoch".
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from perseus.errors import InputError
from perseus.power_limit import distributed
from perseus.power_limit.optimizer import GlobalPowerLimitOptimizer, WindowMonitor
from perseus.power_limit.selectors import OptimumSelector, ZeusCost, zeus_cost

if TYPE_CHECKING:
    from perseus.device.base import GPU

T = TypeVar("T")

EPOCH_WINDOW = "__perseus_epoch"
TREND_EPOCHS = 3
"""How many recent per-epoch improvements the remaining-epochs prediction averages."""


@dataclass(frozen=True)
class EpochRecord:
    """Time (s, slowest rank), energy (J, all GPUs) and cost of one finished epoch."""

    epoch: int
    time: float
    energy: float
    cost: float
    metric: float | None


class EnergyAwareDataLoader(Generic[T]):
    """Wraps an iterable of batches; profiles power limits and stops runs that cost too much.

    Args:
        loader: the batches of one epoch (e.g. a ``torch.utils.data.DataLoader``); iterated once per epoch.
        monitor: energy monitor over this process's GPUs (``perseus.device.EnergyMonitor``).
        max_epochs: hard cap on the number of epochs (>= 1).
        target_metric: stop once a reported metric reaches it; None trains ``max_epochs`` epochs.
        cost_threshold: stop early when the predicted total cost to reach the target exceeds it
            (same unit as :func:`~perseus.power_limit.zeus_cost`: joules); needs ``target_metric``.
        eta: energy-time trade-off of the cost, in [0, 1] (1: energy only, 0: time only).
        selector: power-limit selector; default ``ZeusCost(eta)`` so both optimise one cost.
        warmup_steps, profile_steps, pl_step, profile_path, gpus: see ``GlobalPowerLimitOptimizer``.
    """

    def __init__(
        self,
        loader: Iterable[T],
        *,
        monitor: WindowMonitor,
        max_epochs: int,
        target_metric: float | None = None,
        cost_threshold: float | None = None,
        eta: float = 0.5,
        selector: OptimumSelector | None = None,
        warmup_steps: int = 10,
        profile_steps: int = 40,
        pl_step: float = 25.0,
        profile_path: str | Path | None = None,
        gpus: Sequence[GPU] | None = None,
    ) -> None:
        name = type(self).__name__
        if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
            raise InputError(f"{name}.max_epochs", f"must be an integer >= 1, got {max_epochs!r}")
        if target_metric is not None and not _finite(target_metric):
            raise InputError(f"{name}.target_metric", f"must be a finite number, got {target_metric!r}")
        if cost_threshold is not None:
            if not _finite(cost_threshold) or cost_threshold <= 0:
                raise InputError(
                    f"{name}.cost_threshold", f"must be a positive number, got {cost_threshold!r}"
                )
            if target_metric is None:
                raise InputError(
                    f"{name}.cost_threshold", "needs target_metric: the cost is the cost to reach it"
                )
        if not _finite(eta) or not 0.0 <= eta <= 1.0:
            raise InputError(f"{name}.eta", f"must be a number in [0, 1], got {eta!r}")

        self.loader = loader
        self.monitor = monitor
        self.max_epochs = max_epochs
        self.target_metric = target_metric
        self.cost_threshold = cost_threshold
        self.eta = float(eta)
        self.optimizer = GlobalPowerLimitOptimizer(
            monitor,
            selector if selector is not None else ZeusCost(eta),
            warmup_steps=warmup_steps,
            profile_steps=profile_steps,
            pl_step=pl_step,
            profile_path=profile_path,
            gpus=gpus,
        )
        self.history: list[EpochRecord] = []
        self.reached_target = False
        self.stop_reason: str | None = None
        self._metric: float | None = None
        self._higher_is_better = True
        self._in_epoch = False

    # ---- public API ------------------------------------------------------------------------

    @property
    def max_power(self) -> float:
        """Watts that convert time into cost: the highest power limit times the job's GPUs."""
        return self.optimizer.max_power_limit * self.optimizer.num_gpus

    @property
    def total_time(self) -> float:
        return sum(r.time for r in self.history)

    @property
    def total_energy(self) -> float:
        return sum(r.energy for r in self.history)

    @property
    def total_cost(self) -> float:
        return sum(r.cost for r in self.history)

    @property
    def stopped_early(self) -> bool:
        """Whether training was cut short by the cost threshold."""
        return self.stop_reason is not None and self.stop_reason.startswith("cost")

    def epochs(self) -> Iterator[int]:
        """Yield epoch numbers until the target is reached, the cost is too high, or ``max_epochs``."""
        for epoch in range(self.max_epochs):
            self._metric = None
            self.monitor.begin_window(EPOCH_WINDOW)
            self.optimizer.on_epoch_begin()
            self._in_epoch = True
            try:
                yield epoch
            finally:
                self._in_epoch = False
            self.optimizer.on_epoch_end()
            window = self.monitor.end_window(EPOCH_WINDOW)
            self._record(epoch, float(window.time), float(window.total_energy))
            if self._should_stop():
                return
        self.stop_reason = f"max_epochs ({self.max_epochs}) reached"

    def __iter__(self) -> Iterator[T]:
        """The batches of the current epoch; power-limit profiling runs on these steps."""
        if not self._in_epoch:
            raise RuntimeError("iterate the loader inside `for epoch in loader.epochs():`")
        for batch in self.loader:
            self.optimizer.on_step_begin()
            yield batch
            self.optimizer.on_step_end()

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def report_metric(self, metric: float, higher_is_better: bool = True) -> None:
        """Report this epoch's validation metric (the last report of an epoch counts)."""
        if not _finite(metric):
            raise InputError(
                "EnergyAwareDataLoader.report_metric", f"metric must be a finite number, got {metric!r}"
            )
        self._metric = float(metric)
        self._higher_is_better = higher_is_better

    def close(self) -> None:
        """Give the GPUs back their default power limit (also done at exit by the device layer)."""
        self.optimizer.close()

    def __enter__(self) -> EnergyAwareDataLoader[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def predicted_remaining_epochs(self) -> int:
        """Epochs still needed to reach the target, extrapolating the recent metric trend (>= 1).

        0 when there is no target metric (nothing to reach).
        """
        if self.target_metric is None:
            return 0
        sign = 1.0 if self._higher_is_better else -1.0
        metrics = [r.metric for r in self.history if r.metric is not None]
        if not metrics:
            return 1
        gap = sign * (self.target_metric - metrics[-1])
        recent = metrics[-(TREND_EPOCHS + 1) :]
        gains = [sign * (b - a) for a, b in itertools.pairwise(recent)]
        rate = sum(gains) / len(gains) if gains else 0.0
        if gap <= 0 or rate <= 0:
            return 1
        return max(1, math.ceil(gap / rate))

    def predicted_cost(self) -> float:
        """Cost spent so far plus the predicted cost of the remaining epochs at the last epoch's cost."""
        if not self.history:
            return 0.0
        return self.total_cost + self.predicted_remaining_epochs() * self.history[-1].cost

    # ---- internals ---------------------------------------------------------------------------

    def _record(self, epoch: int, time: float, energy: float) -> None:
        (time,) = distributed.all_reduce([time], "max")
        (energy,) = distributed.all_reduce([energy], "sum")
        cost = zeus_cost(energy, time, self.eta, self.max_power)
        self.history.append(EpochRecord(epoch, time, energy, cost, self._metric))

    def _should_stop(self) -> bool:
        metric = self._metric
        reached = over = False
        if self.target_metric is not None and metric is not None:
            sign = 1.0 if self._higher_is_better else -1.0
            reached = sign * (metric - self.target_metric) >= 0
            if not reached and self.cost_threshold is not None:
                over = self.predicted_cost() > self.cost_threshold
        # Ranks may see slightly different metrics; any rank stopping stops them all.
        reached_any, over_any = distributed.all_reduce([float(reached), float(over)], "max")
        if reached_any:
            self.reached_target = True
            self.stop_reason = f"target metric {self.target_metric:g} reached"
            return True
        if over_any:
            self.stop_reason = (
                f"cost threshold {self.cost_threshold:g} exceeded: spent {self.total_cost:.4g}, "
                f"predicted {self.predicted_cost():.4g} to reach the target"
            )
            return True
        return False


def _finite(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
