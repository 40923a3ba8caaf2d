"""What every benchmark stands on: where output goes (paths.py), the seeded
bench org (seed.py), starting and stopping the server under test
(servers.py), CPU accounting (cpu.py), and two tools a benchmark runs beside
the server: the open-loop load generator (openloop.py) and the slow-database
proxy (slowdb.py)."""
