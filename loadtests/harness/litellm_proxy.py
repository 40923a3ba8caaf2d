"""A real LiteLLM proxy in front of the fake upstream (fake_openai.py), with or
without the Tollgate adapter: what the adapter's test and benchmark start.

The proxy runs in its own virtualenv (`.venv-litellm`, tests/litellm_env.py),
offline (LiteLLM's bundled cost map), with no database: a long master key is
its only credential. Only 127.0.0.1 is ever bound.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

MASTER_KEY = "sk-tollgate-tests-" + "0123456789abcdef" * 3
MODEL = "tg-chat"
PROXY_UNSET = {"DATABASE_URL", "DIRECT_URL", "REDIS_URL", "REDIS_HOST"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Process:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def _wait_ready(process: Process, path: str, timeout: float) -> Process:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.process.poll() is not None:
            raise RuntimeError(f"{process.url} exited:\n{process.log()[-6000:]}")
        try:
            if httpx.get(process.url + path, timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.stop()
    raise RuntimeError(f"{process.url} did not start in {timeout:.0f} s:\n{process.log()[-6000:]}")


def start_fake_upstream(log_dir: Path, *, delay_ms: float = 0) -> Process:
    """The fake OpenAI-compatible upstream, in this (Tollgate's) venv."""
    port = free_port()
    log_path = log_dir / f"fake-openai-{port}.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loadtests.harness.fake_openai",
            "--port",
            str(port),
            "--delay-ms",
            str(delay_ms),
        ],
        cwd=Path(__file__).resolve().parent.parent.parent,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return _wait_ready(Process(f"http://127.0.0.1:{port}", process, log_path), "/_stats", 30)


def write_config(directory: Path, upstream_url: str, *, adapter: bool) -> Path:
    """A proxy config with one model, `tg-chat`, served by the fake upstream."""
    lines = [
        "model_list:",
        f"  - model_name: {MODEL}",
        "    litellm_params:",
        f"      model: openai/{MODEL}",
        f"      api_base: {upstream_url}/v1",
        "      api_key: fake-upstream-key",
    ]
    if adapter:
        lines += ["litellm_settings:", "  callbacks: tollgate_litellm.proxy.handler"]
    path = directory / ("config-tollgate.yaml" if adapter else "config-plain.yaml")
    path.write_text("\n".join(lines) + "\n")
    return path


def start_proxy(
    python: Path, config: Path, log_dir: Path, *, timeout: float = 120, **env: str
) -> Process:
    """`litellm --config CONFIG` run by `python` (.venv-litellm's), with `env` added."""
    port = free_port()
    log_path = log_dir / f"litellm-{port}.log"
    process = subprocess.Popen(
        [
            str(python),
            "-m",
            "litellm.proxy.proxy_cli",
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=config.parent,
        env={
            # Tollgate's DATABASE_URL would make the proxy use (and migrate) that database.
            **{k: v for k, v in os.environ.items() if k not in PROXY_UNSET},
            "LITELLM_MASTER_KEY": MASTER_KEY,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOG": "ERROR",
            "PYTHONUNBUFFERED": "1",
            **env,
        },
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return _wait_ready(
        Process(f"http://127.0.0.1:{port}", process, log_path), "/health/liveliness", timeout
    )
