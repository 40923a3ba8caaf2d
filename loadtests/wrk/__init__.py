"""wrk, the closed-loop load generator: its Lua scripts (reservations.lua,
ingest.lua), running it and reading its results (run.py), and one bounded
measurement of a server process with rounds and medians (bench.py)."""
