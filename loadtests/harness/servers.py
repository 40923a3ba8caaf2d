"""Starting and stopping the server a benchmark measures: a Design is its
command line and environment; serve() runs it on 127.0.0.1 for the duration
of a block and stops its whole process group on the way out."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from loadtests.harness.paths import BASE_DIR

# Never configurable: the benchmark must not be pointed at another machine.
HOST = "127.0.0.1"
READY_TIMEOUT_SECONDS = 30.0
# One worker everywhere; the same event loop and HTTP parser for every uvicorn.
# Keep-alive longer than a run: the open-loop generator keeps idle connections,
# and a server closing one just as a request goes out would be a false error.
# A short graceful shutdown: an overloaded server would otherwise finish its
# backlog before the next design can start.
UVICORN_OPTIONS = [
    "--workers",
    "1",
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--no-access-log",
    "--log-level",
    "warning",
    "--timeout-keep-alive",
    "60",
    "--timeout-graceful-shutdown",
    "1",
]
# Replaced by each run's port in a design's argv.
PORT = "{port}"


@dataclass(frozen=True)
class Design:
    key: str  # floor, sync, async, tollgate
    name: str
    server: str  # how it is served, for the report
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    holds: bool = True  # writes reservations (the floor does not)


def tollgate_design(port: int, *, workers: int = 1, pool_max: int | None = None) -> Design:
    """Tollgate alone, for the harnesses that measure only it (ingest, scale,
    locust, servers and pool sizes)."""
    options = list(UVICORN_OPTIONS)
    options[options.index("--workers") + 1] = str(workers)
    env = {"DJANGO_SETTINGS_MODULE": "config.settings", "LOG_LEVEL": "WARNING"}
    if pool_max is not None:
        env["HOTPATH_POOL_MAX"] = str(pool_max)
    return Design(
        "tollgate",
        "Tollgate",
        f"uvicorn, httptools + uvloop, {workers} worker(s)",
        [
            sys.executable,
            "-m",
            "uvicorn",
            "config.asgi:application",
            "--host",
            HOST,
            "--port",
            str(port),
            *options,
        ],
        env,
    )


class DesignFailed(Exception):
    """The server of a design did not start or did not answer."""


def free_port() -> int:
    """A port nothing listens on now. Each run takes a new one: other
    benchmarks on a shared machine use fixed ports, and a server of theirs
    answering on ours would be measured instead (seen: a run of 429s)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def ensure_port_free(port: int) -> None:
    # A server left over from another run would be benchmarked instead of ours.
    with socket.socket() as probe:
        if probe.connect_ex((HOST, port)) == 0:
            raise DesignFailed(f"something else already listens on {HOST}:{port}")


@contextmanager
def serve(design: Design, port: int, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run the design's server for the duration of the block, then stop it."""
    ensure_port_free(port)
    with log_path.open("wb") as log:
        # Own session: Ctrl-C in the terminal reaches only this script, which
        # then stops the server in order (SIGTERM, then SIGKILL) below.
        process = subprocess.Popen(
            [arg.replace(PORT, str(port)) for arg in design.argv],
            cwd=BASE_DIR,
            env={**os.environ, **design.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until_listening(process, port, log_path)
            yield process
        finally:
            stop(process)


def wait_until_listening(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DesignFailed(f"server exited with {process.returncode}; see {log_path}")
        with socket.socket() as probe:
            listening = probe.connect_ex((HOST, port)) == 0
        if listening:
            # A server that lost the port to another process exits soon after.
            time.sleep(0.3)
            if process.poll() is not None:
                raise DesignFailed(f"server exited with {process.returncode}; see {log_path}")
            return
        time.sleep(0.1)
    raise DesignFailed(f"server did not listen within {READY_TIMEOUT_SECONDS:.0f} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server and its children (gunicorn's worker) by their process group,
    which is the one this script created for it."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass
