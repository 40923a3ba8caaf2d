"""The summary's own entry of a response's Server-Timing header: the API adds
`app;dur=<ms>` to every answer, beside the summary's `summary;desc=...`."""

from __future__ import annotations

from collections.abc import Mapping


def summary_timing(headers: Mapping[str, str]) -> str:
    entries = [entry.strip() for entry in headers.get("server-timing", "").split(",")]
    return next((entry for entry in entries if entry.startswith("summary;")), "")
