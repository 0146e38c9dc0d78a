"""Clients of the prediction service: ``clients.client`` (typed HTTP client), ``ipnet replay``, ``ipnet bench``.

Nothing is imported here: ``clients.peers`` run inside the peers' own virtualenvs (``clients.benchmarks``),
which have neither httpx nor the service's dependencies.
"""
