"""Instruction profiles: loading, validating and Pareto-filtering time/energy measurements."""

from perseus.profile.io import load_profile, parse_profile, save_profile
from perseus.profile.model import INSTRUCTION_KINDS, InstructionProfile, Measurement, PipelineProfile
from perseus.profile.pareto import lower_convex_hull, pareto_options

__all__ = [
    "INSTRUCTION_KINDS",
    "InstructionProfile",
    "Measurement",
    "PipelineProfile",
    "load_profile",
    "lower_convex_hull",
    "pareto_options",
    "parse_profile",
    "save_profile",
]
