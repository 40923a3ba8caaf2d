"""Where benchmarks read their scripts and write their output: reports for
docs/benchmarks/, everything else (logs, raw wrk and locust output) to
loadtests/results/, which git ignores."""

from __future__ import annotations

from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]
RESULTS_DIR = BASE_DIR / "loadtests" / "results"
DOCS_DIR = BASE_DIR / "docs" / "benchmarks"
