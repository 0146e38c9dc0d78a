"""The benchmark's peers: the same stateful GRU work served by other serving systems, each run in its own
virtualenv (``clients.benchmarks`` starts them). Their modules import only ``models`` and their server."""
