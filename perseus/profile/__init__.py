"""Instruction profiles: loading, validating and Pareto-filtering time/energy measurements."""

from perseus.profile.io import load_profile, parse_profile, save_profile
from perseus.profile.model import (
    ALL_KINDS,
    INSTRUCTION_KINDS,
    SPLIT_KINDS,
    InstructionProfile,
    Measurement,
    PipelineProfile,
    split_backward,
)
from perseus.profile.pareto import lower_convex_hull, pareto_options

__all__ = [
    "ALL_KINDS",
    "INSTRUCTION_KINDS",
    "SPLIT_KINDS",
    "InstructionProfile",
    "Measurement",
    "PipelineProfile",
    "load_profile",
    "lower_convex_hull",
    "pareto_options",
    "parse_profile",
    "save_profile",
    "split_backward",
]
