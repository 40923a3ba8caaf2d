"""Load tests and the benchmark harness that compares the hot path's designs:
compare.py runs them (with the baselines in baseline_*.py, the open-loop
generator openloop.py and the slow-database proxy slowdb.py);
locustfile_reservations.py is the locust scenario."""
