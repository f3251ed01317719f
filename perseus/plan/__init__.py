"""Frequency plans (frontier points) and the per-rank PowerStateSchedule served to workers."""

from perseus.plan.model import SCHEDULES, FrequencyPlan, PlannedInstruction, PowerStateSchedule

__all__ = ["SCHEDULES", "FrequencyPlan", "PlannedInstruction", "PowerStateSchedule"]
