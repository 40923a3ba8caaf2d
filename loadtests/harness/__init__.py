"""Tools the benchmarks run beside the server under test: the open-loop load
generator (openloop.py) and the slow-database proxy (slowdb.py)."""
