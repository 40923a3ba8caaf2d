"""Load tests and benchmark harnesses: compare.py (the hot path against its
alternatives), ingest.py, servers.py and pool.py (wrk, closed loop), and the
locust scenarios run by run_locust.py (budget_burst, ingest_batches,
dashboard_views, mixed). docs/benchmarks/README.md says how to run each."""
