"""The error a client raises when the service answers with an error (HTTP status or a stream's error reply)."""

from __future__ import annotations

from service.schemas import ErrorBody


class ApiError(Exception):
    """The service answered with an error status (after any retries)."""

    def __init__(self, status: int, error: ErrorBody | None, text: str, attempts: int = 1) -> None:
        self.status = status
        self.error = error
        self.text = text
        self.attempts = attempts
        what = f"{error.code}: {error.message}" if error is not None else text[:200]
        super().__init__(f"HTTP {status} ({what})")

    @property
    def code(self) -> str | None:
        """The service's machine code (``stale_timestamp``, ``store_unavailable``...), if any."""
        return self.error.code if self.error is not None else None
