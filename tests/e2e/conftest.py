"""Fixtures of the process tests: real `ipnet serve` processes, a real redis-server, a real AV2 log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import AV2_LOG, Replay, redis_server, weights_dir


@pytest.fixture(scope="session")
def weights() -> Path:
    return weights_dir()


@pytest.fixture(scope="session")
def replay(data_root: Path) -> Replay:
    return Replay.load(data_root / "av2" / "raw" / "sensor_logs" / AV2_LOG)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url
