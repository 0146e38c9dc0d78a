"""Clients of the prediction service: ``clients.client`` (typed HTTP client), ``ipnet replay``, ``ipnet bench``.

Nothing is imported here: ``clients.peer_mlserver`` is loaded by MLServer in its own virtualenv, which has
neither httpx nor the service's dependencies.
"""
