"""Fixtures of the client tests: apps through TestClient (reused from tests/service), a real AV2 log."""

from __future__ import annotations

from pathlib import Path

import pytest

# the service tests' app fixtures: the client is tested against the same apps
from tests.service.conftest import make_client, make_settings  # noqa: F401
from tests.support import AV2_LOG, Replay


@pytest.fixture(scope="session")
def av2_log(data_root: Path) -> Path:
    return data_root / "av2" / "raw" / "sensor_logs" / AV2_LOG


@pytest.fixture(scope="session")
def replay(av2_log: Path) -> Replay:
    """The real AV2 log, frame by frame."""
    return Replay.load(av2_log)
