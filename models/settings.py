"""The model library's own settings (training, evaluation, the card): environment variables read in one
place, as the service reads its own (``service.settings.Settings``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: the checkout's sibling folder of shared data (the repository root is the parent of ``models/``)
SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


class LibrarySettings(BaseSettings):
    """Each field is the environment variable ``TRAJPRED_<FIELD NAME>``."""

    model_config = SettingsConfigDict(env_prefix="TRAJPRED_", extra="ignore", frozen=True)

    data_root: Path = Field(
        default=SHARED_DATA,
        description="the folder of real trajectory data that training, evaluation and the card read "
        "(its README names every dataset's provenance and licence)",
    )
