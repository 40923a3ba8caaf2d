#!/usr/bin/env python3
"""Django's command-line utility for Tollgate.

Run with any Python 3.11+: on first use it creates `.venv/` beside this file,
installs pinned dependencies into it, and re-runs itself there. `manage.py
test` installs the dev set (`requirements-dev.lock`: the runtime set plus the
test, lint and load-test tools); every other command installs the runtime set
(`requirements.lock`), so a production install gets no dev tools. A venv that
holds the current dev set already has the runtime set, so it is kept as it is.
Later runs reinstall only when the needed lock file changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
VENV_DIR = BASE_DIR / ".venv"
RUNTIME_LOCK = BASE_DIR / "requirements.lock"
DEV_LOCK = BASE_DIR / "requirements-dev.lock"
# Commands that need the dev tools (pytest and the packages the tests import).
DEV_COMMANDS = {"test"}
# "<lock file name> <sha256 of it>": which set is installed, and from which version.
STAMP_FILE = VENV_DIR / ".tollgate-lock.sha256"


def _venv_python() -> Path:
    return VENV_DIR / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _digest(lock: Path) -> str:
    return hashlib.sha256(lock.read_bytes()).hexdigest() if lock.exists() else "missing"


def _stamp_for(lock: Path) -> str:
    return f"{lock.name} {_digest(lock)}"


def _pins(lock: Path) -> set[str]:
    """The `name==version` lines of a lock file (comments dropped)."""
    lines = lock.read_text().splitlines() if lock.exists() else []
    return {line.strip() for line in lines if "==" in line and not line.lstrip().startswith("#")}


def _installed_stamp() -> str:
    return STAMP_FILE.read_text().strip() if STAMP_FILE.exists() else ""


def _ensure_environment() -> None:
    """Create and sync the project virtualenv, then re-exec inside it."""
    if os.environ.get("TOLLGATE_NO_BOOTSTRAP"):
        return
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    lock = DEV_LOCK if command in DEV_COMMANDS else RUNTIME_LOCK
    stamp = _installed_stamp()
    # A venv holding the current dev set has the runtime set too (every runtime
    # pin is a dev pin): keep it rather than reinstall the smaller set over it.
    satisfied = stamp == _stamp_for(lock) or (
        lock is RUNTIME_LOCK
        and stamp == _stamp_for(DEV_LOCK)
        and _pins(RUNTIME_LOCK) <= _pins(DEV_LOCK)
    )
    in_project_venv = Path(sys.prefix).resolve() == VENV_DIR.resolve()
    if in_project_venv and satisfied:
        return
    if sys.version_info < (3, 11):  # noqa: UP036 - manage.py may be started by any python3
        sys.exit("Tollgate needs Python 3.11 or newer.")
    python = _venv_python()
    if not python.exists():
        print(f"Creating {VENV_DIR} ...", flush=True)
        venv.create(VENV_DIR, with_pip=True)
    if not satisfied:
        kind = "dev (runtime + test tools)" if lock is DEV_LOCK else "runtime"
        print(f"Installing the {kind} dependencies from {lock.name} ...", flush=True)
        # No stamp while installing: an interrupted install is redone next time.
        STAMP_FILE.unlink(missing_ok=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                str(lock),
            ],
            check=True,
        )
        STAMP_FILE.write_text(_stamp_for(lock) + "\n")
    if not in_project_venv:
        os.execv(str(python), [str(python), str(BASE_DIR / "manage.py"), *sys.argv[1:]])


def main() -> None:
    _ensure_environment()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
