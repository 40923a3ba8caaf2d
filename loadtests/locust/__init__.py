"""Locust scenarios and their runner, `python -m loadtests.locust.run SCENARIO`.

Locustfiles: budget_burst.py, ingest_batches.py, dashboard_views.py, mixed.py
(run by run.py) and reservations.py (run by hand). The users they share are in
users.py, the load shapes and timing hooks in common.py, the per-user pacing in
pacing.py and the per-phase recorder in phases.py."""
