"""Settings come from TRAJPRED_* environment variables and are validated."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
from pydantic import ValidationError

from models.data import AGENT_TYPES
from service.schemas import AgentType
from service.settings import Settings


def test_environment_variables_with_the_prefix(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TRAJPRED_STATE_TTL_S", "12.5")
    monkeypatch.setenv("TRAJPRED_STORE", "redis://127.0.0.1:6390/2")
    monkeypatch.setenv("TRAJPRED_SNAPSHOT_PATH", "")
    monkeypatch.setenv("TRAJPRED_API_KEYS", " key-number-one ,key-number-two,")
    monkeypatch.setenv("TRAJPRED_BASELINE", "lstm")
    monkeypatch.setenv("STATE_TTL_S", "99")  # no prefix: not ours
    s = Settings()
    assert s.state_ttl_s == 12.5 and s.uses_redis and s.snapshot_path is None and s.baseline == "lstm"
    assert s.api_key_set == {"key-number-one", "key-number-two"}
    assert Settings(snapshot_path="x.snap").snapshot_path == Path("x.snap")


@pytest.mark.parametrize(
    "field,value",
    [
        ("state_ttl_s", "0"),
        ("baseline", "transformer"),
        ("prediction_horizon_s", "7"),
        ("api_keys", "short"),
        ("max_agents", "-1"),
        ("scoring_max_pending_per_agent", "300000"),
    ],
)
def test_invalid_settings_are_refused(monkeypatch: pytest.MonkeyPatch, field: str, value: str):
    monkeypatch.setenv(f"TRAJPRED_{field.upper()}", value)
    with pytest.raises(ValidationError):
        Settings()


def test_schema_agent_types_are_the_models_agent_types():
    assert get_args(AgentType) == AGENT_TYPES
