"""Load tests and benchmark harnesses: compare.py (the hot path against its
alternatives, with the baselines in baseline_*.py, the open-loop generator
openloop.py and the slow-database proxy slowdb.py), ingest.py, servers.py and
pool.py (wrk, closed loop), hold_cost.py and hot_row.py, and the locust
scenarios run by run_locust.py (budget_burst, ingest_batches, dashboard_views,
mixed). docs/benchmarks/README.md says how to run each."""
