"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.processes import redis_server
from models.data import default_data_root
from tests.support import AV2_LOG, Replay, weights_dir


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real-data folder (``$TRAJPRED_DATA_ROOT`` or ``<repo>/../shared/data``).

    Outside CI a machine without the data skips the data tests; in CI (``CI`` set) missing data fails them.
    """
    root = default_data_root()
    if not root.is_dir():
        msg = f"real trajectory data not found at {root} (set TRAJPRED_DATA_ROOT to the shared data folder)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return root


@pytest.fixture(scope="session")
def weights() -> Path:
    """The model weights the service tests run (shipped, or ``TRAJPRED_WEIGHTS_DIR``)."""
    return weights_dir()


@pytest.fixture(scope="session")
def replay(data_root: Path) -> Replay:
    """A real AV2 sensor log, frame by frame."""
    return Replay.load(data_root / "av2" / "raw" / "sensor_logs" / AV2_LOG)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server for the whole session (tests use distinct key prefixes)."""
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url
