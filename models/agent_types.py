"""The agent types the models know (their one-hot input), in a module light enough for the serving path:
``models.data`` (the loaders, with pandas) re-exports it."""

from __future__ import annotations

AGENT_TYPES = ("vehicle", "pedestrian", "cyclist", "unknown")
