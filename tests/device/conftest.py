"""Shared fixtures for the device layer tests: a fake clock, the A100 profile, a fake NVML."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from perseus.device import DEFAULT_SIM_PROFILE, restore_all, safety
from perseus.profile import PipelineProfile, load_profile

sys.path.insert(0, str(Path(__file__).parent))
import fake_nvml


class FakeClock:
    """A clock that only moves when slept on (or advanced), for exact sim arithmetic."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def a100() -> PipelineProfile:
    return load_profile(DEFAULT_SIM_PROFILE)


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[ModuleType]:
    """The fake NVML module, reset to one A100 with a journal in tmp_path/journal.txt."""
    fake_nvml.configure(journal=tmp_path / "journal.txt")
    yield fake_nvml
    fake_nvml.configure()


@pytest.fixture(autouse=True)
def _state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Per-GPU state files of this test go to its own folder, never the user's cache."""
    folder = tmp_path / "gpu-state"
    monkeypatch.setenv("PERSEUS_STATE_DIR", str(folder))
    return folder


@pytest.fixture(autouse=True)
def _restore_after_test() -> Iterator[None]:
    """No test may leak a locked (fake or simulated) clock into the next one."""
    yield
    restore_all()
    assert not safety.is_final()
