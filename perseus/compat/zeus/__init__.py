"""Zeus's training-script API on Perseus: change the import lines, keep the script.

=========================================  ==============================================
Zeus                                       Perseus
=========================================  ==============================================
``zeus.monitor.ZeusMonitor``               :class:`ZeusMonitor` (over ``perseus.device.EnergyMonitor``)
``zeus.optimizer.power_limit.*``           :class:`GlobalPowerLimitOptimizer`, selectors,
                                           :class:`HFGlobalPowerLimitOptimizer`
``zeus.optimizer.batch_size.*``            :class:`BatchSizeOptimizer`, :class:`JobSpec`
=========================================  ==============================================

``HFGlobalPowerLimitOptimizer`` is imported on first use, so importing this package does
not import ``transformers``. The README's migration table lists every difference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from perseus.compat.zeus.batch_size import BatchSizeOptimizer, JobSpec, ZeusBSOTrainFailError
from perseus.compat.zeus.monitor import Measurement, ZeusMonitor
from perseus.compat.zeus.power_limit import (
    Energy,
    GlobalPowerLimitOptimizer,
    MaxSlowdownConstraint,
    OptimumSelector,
    Time,
    ZeusCost,
)
from perseus.power_limit import PowerLimitMeasurement

if TYPE_CHECKING:
    from perseus.compat.zeus.huggingface import HFGlobalPowerLimitOptimizer

__all__ = [
    "BatchSizeOptimizer",
    "Energy",
    "GlobalPowerLimitOptimizer",
    "HFGlobalPowerLimitOptimizer",
    "JobSpec",
    "MaxSlowdownConstraint",
    "Measurement",
    "OptimumSelector",
    "PowerLimitMeasurement",
    "Time",
    "ZeusBSOTrainFailError",
    "ZeusCost",
    "ZeusMonitor",
]


def __getattr__(name: str) -> Any:
    if name == "HFGlobalPowerLimitOptimizer":
        from perseus.compat.zeus.huggingface import HFGlobalPowerLimitOptimizer

        return HFGlobalPowerLimitOptimizer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
