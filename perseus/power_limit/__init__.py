"""Single-GPU and data-parallel energy optimization: one power limit for every GPU of the job.

:class:`GlobalPowerLimitOptimizer` profiles power limits during real training and applies
the one an :class:`OptimumSelector` picks (:class:`Time`, :class:`Energy`,
:class:`ZeusCost`, :class:`MaxSlowdownConstraint`). Data-parallel ranks aggregate their
measurements through ``torch.distributed`` so they all choose the same limit.
"""

from perseus.power_limit.optimizer import (
    Done,
    GlobalPowerLimitOptimizer,
    Profiling,
    Ready,
    Warmup,
    power_limit_candidates,
)
from perseus.power_limit.selectors import (
    MAX_SLOWDOWN_ENV,
    Energy,
    MaxSlowdownConstraint,
    OptimumSelector,
    PowerLimitMeasurement,
    Time,
    ZeusCost,
    max_slowdown_from_env,
    zeus_cost,
)
from perseus.power_limit.store import SavedProfile, load_saved_profile, save_saved_profile

__all__ = [
    "MAX_SLOWDOWN_ENV",
    "Done",
    "Energy",
    "GlobalPowerLimitOptimizer",
    "MaxSlowdownConstraint",
    "OptimumSelector",
    "PowerLimitMeasurement",
    "Profiling",
    "Ready",
    "SavedProfile",
    "Time",
    "Warmup",
    "ZeusCost",
    "load_saved_profile",
    "max_slowdown_from_env",
    "power_limit_candidates",
    "save_saved_profile",
    "zeus_cost",
]
