"""Fixtures of the service tests: apps built by ``create_app`` and run with their lifespan."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings

MakeClient = Callable[..., TestClient]


@pytest.fixture
def make_settings(weights: Path) -> Callable[..., Settings]:
    """Settings with the test weights and no snapshot file unless a test asks for one."""

    def make(**overrides: Any) -> Settings:
        # a fresh /metrics exposition on every read: the tests read counters right after the requests
        # and the app ready when its lifespan has started (the server's default opens the listener first)
        base: dict[str, Any] = {
            "weights_dir": weights,
            "snapshot_path": None,
            "metrics_cache_s": 0.0,
            "startup_in_background": False,
        }
        return Settings(**{**base, **overrides})

    return make


@pytest.fixture
def make_client(make_settings: Callable[..., Settings]) -> Iterator[MakeClient]:
    """``make_client(**settings)``: a started ``TestClient`` (lifespan run), closed at the end of the test."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        client = TestClient(create_app(make_settings(**overrides)))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in reversed(clients):
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client()
