"""Fixtures of the server tests: a real server on 127.0.0.1 and shipped profiles (PostgreSQL: tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from server_helpers import profile_slice

from perseus.client import PerseusClient
from perseus.profile import PipelineProfile
from perseus.server.app import ServerConfig, ServerThread


@pytest.fixture(scope="session")
def profile4() -> PipelineProfile:
    """GPT-3 175B on A100, first 4 stages, every 2nd frequency (19 clocks): small but real."""
    return profile_slice(4, freq_step=2)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(ServerConfig(port=0, db=f"sqlite:///{tmp_path / 'perseus.db'}")) as srv:
        yield srv


@pytest.fixture
def client(server: ServerThread) -> Iterator[PerseusClient]:
    with PerseusClient(f"127.0.0.1:{server.port}", retry_timeout=5) as c:
        yield c

