"""Load tests and benchmarks. A module at the top of the package is a
benchmark: `python -m loadtests.NAME`, writing one page of docs/benchmarks/
(raw output, logs and CSV files go to loadtests/results/, which git ignores).
The subpackages are what they are built from:

    baselines/  what the hot path is compared against (sync and async Django, the floor)
    locust/     locust scenarios, their users, shapes, pacing and phases, and their runner
    wrk/        wrk's Lua scripts, running wrk, one bounded wrk measurement
    harness/    paths, the seeded bench org, server start/stop, CPU accounting,
                the open-loop generator, the slow-database proxy
    reports/    what every markdown report shares, and compare's tables and plots

Entry points (old name -> new name, where it moved):

    python -m loadtests.compare         hot path vs. sync/async Django and the floor
    python -m loadtests.hot_row         all holds on one team vs. spread out
    python -m loadtests.ingest          POST /v1/events in batches, wrk
    python -m loadtests.servers         which ASGI server runs Tollgate in production
    python -m loadtests.header_flood    hold latency during a header flood, before and after the limits
    python -m loadtests.pool            throughput and p99 against the hot-path pool size
    python -m loadtests.hold_cost       PostgreSQL's own cost of a hold, without HTTP
    python -m loadtests.hold_ids        UUID v4 vs. v7 reservation ids on a large table
    python -m loadtests.closed_holds    what keeping closed holds in check costs
    python -m loadtests.move            how long manage.py move_data takes
    python -m loadtests.scale           dashboard latency and aggregation at scale
    python -m loadtests.bench_summary   was `manage.py bench_summary`
    python -m loadtests.locust.run      was loadtests.run_locust
    python -m loadtests.harness.openloop  was loadtests.openloop
    python -m loadtests.harness.slowdb    was loadtests.slowdb

Modules and files that moved (old -> new, under loadtests/):

    baseline_views.py           baselines/sync_views.py
    baseline_settings.py        baselines/sync_settings.py
    baseline_urls.py            baselines/sync_urls.py
    baseline_wsgi.py            baselines/sync_wsgi.py
    baseline_async_views.py     baselines/async_views.py
    baseline_async_settings.py  baselines/async_settings.py
    baseline_async_urls.py      baselines/async_urls.py
    baseline_async_asgi.py      baselines/async_asgi.py
    floor_app.py                baselines/floor.py
    locust_common.py            locust/common.py
    locust_users.py             locust/users.py
    pacing.py                   locust/pacing.py
    phases.py                   locust/phases.py
    budget_burst.py             locust/budget_burst.py
    ingest_batches.py           locust/ingest_batches.py
    dashboard_views.py          locust/dashboard_views.py
    mixed.py                    locust/mixed.py
    locustfile_reservations.py  locust/reservations.py
    run_locust.py               locust/run.py
    reservations.lua            wrk/reservations.lua
    ingest.lua                  wrk/ingest.lua
    wrkbench.py                 wrk/bench.py
    openloop.py                 harness/openloop.py
    slowdb.py                   harness/slowdb.py
    compare.py                  compare.py (the runs), harness/paths.py, harness/seed.py,
                                harness/servers.py, harness/cpu.py, wrk/run.py,
                                reports/markdown.py, reports/compare.py
    (dashboard) bench_summary   bench_summary.py
"""
