"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.data import default_data_root


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real-data folder (``$TRAJPRED_DATA_ROOT`` or ``<repo>/../shared/data``); skip if it is absent."""
    root = default_data_root()
    if not root.is_dir():
        pytest.skip(
            f"real trajectory data not found at {root} (set TRAJPRED_DATA_ROOT to the shared data folder)"
        )
    return root
