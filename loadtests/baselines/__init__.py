"""What the hot path is compared against (loadtests.compare): the same
reservation written as a plain sync Django view (sync_*: views, settings,
urls, wsgi) and as an async Django view (async_*), and the floor, an ASGI app
that does no work, for what the server and the load generator cost alone.
Served only by the benchmarks, never part of config.urls."""
