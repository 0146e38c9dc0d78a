"""Clients of the prediction service: the typed HTTP client, ``ipnet replay``, ``ipnet bench``, benchmarks."""

from clients.client import ApiError, AsyncTrajpredClient, RetryPolicy, TrajpredClient

__all__ = ["ApiError", "AsyncTrajpredClient", "RetryPolicy", "TrajpredClient"]
