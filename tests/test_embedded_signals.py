"""SIGTERM ends a process that uses the embedded PostgreSQL through its
atexit hook, which stops the server; a second SIGTERM (its process group
signalled again, as `pkill` or a supervisor may) must not break into that
hook with a traceback."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.conftest import BASE_DIR

CHILD = """
import atexit, sys, time
from config import embedded
embedded._exit_on_sigterm()
atexit.register(lambda: (time.sleep(1.0), print("hook done", flush=True)))
print("ready", flush=True)
time.sleep(60)
"""


def test_a_second_sigterm_does_not_interrupt_the_exit_hook():
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        cwd=BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # inside the hook's sleep
        child.send_signal(signal.SIGTERM)
        stdout, stderr = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    assert child.returncode == 128 + signal.SIGTERM
    assert "hook done" in stdout
    assert "Traceback" not in stderr, stderr
