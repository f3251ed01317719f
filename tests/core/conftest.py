from __future__ import annotations

from pathlib import Path

import pytest

from perseus.profile import PipelineProfile, load_profile
from perseus.solver import Frontier, compute_frontier

ROOT = Path(__file__).resolve().parents[2]
A100 = ROOT / "profiles" / "gpt3-175b+a100_sxm_bf16" / "profile.csv"


@pytest.fixture(scope="session")
def a100_profile() -> PipelineProfile:
    return load_profile(A100)


@pytest.fixture(scope="session")
def a100_frontier(a100_profile: PipelineProfile) -> Frontier:
    """GPT-3 175B on A100, 1F1B 8 stages x 6 microbatches: the frontier several tests inspect."""
    return compute_frontier(a100_profile, "1f1b", 8, 6)


def write_csv(tmp_path: Path, rows: list[str], header: str = "stage,instruction,frequency,time,energy") -> Path:
    path = tmp_path / "profile.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path
