"""Load tests and the benchmark harness that compares the hot path's designs
(see compare.py and locustfile_reservations.py)."""
