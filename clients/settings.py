"""The command-line client's settings: environment variables read in one place (the service's are
``service.settings.Settings``)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class ClientSettings(BaseSettings):
    """Each field is the environment variable ``TRAJPRED_CLIENT_<FIELD NAME>``."""

    model_config = SettingsConfigDict(env_prefix="TRAJPRED_CLIENT_", extra="ignore", frozen=True)

    api_key: str | None = None  # sent as X-API-Key by `ipnet replay`, `ipnet bench`
