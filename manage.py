#!/usr/bin/env python3
"""Django's command-line utility for Tollgate.

Run with any Python 3.11+: on first use it creates `.venv/` beside this file,
installs the pinned dependencies from `requirements.lock` into it, and re-runs
itself there. Later runs reinstall only when the lock file changes.
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
LOCK_FILE = BASE_DIR / "requirements.lock"
STAMP_FILE = VENV_DIR / ".tollgate-lock.sha256"


def _venv_python() -> Path:
    return VENV_DIR / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _ensure_environment() -> None:
    """Create and sync the project virtualenv, then re-exec inside it."""
    if os.environ.get("TOLLGATE_NO_BOOTSTRAP"):
        return
    lock_digest = hashlib.sha256(LOCK_FILE.read_bytes()).hexdigest()
    in_project_venv = Path(sys.prefix).resolve() == VENV_DIR.resolve()
    stamp = STAMP_FILE.read_text().strip() if STAMP_FILE.exists() else ""
    if in_project_venv and stamp == lock_digest:
        return
    if sys.version_info < (3, 11):  # noqa: UP036 - manage.py may be started by any python3
        sys.exit("Tollgate needs Python 3.11 or newer.")
    python = _venv_python()
    if not python.exists():
        print(f"Creating {VENV_DIR} ...", flush=True)
        venv.create(VENV_DIR, with_pip=True)
    if stamp != lock_digest:
        print("Installing pinned dependencies from requirements.lock ...", flush=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                str(LOCK_FILE),
            ],
            check=True,
        )
        STAMP_FILE.write_text(lock_digest + "\n")
    if not in_project_venv:
        os.execv(str(python), [str(python), str(BASE_DIR / "manage.py"), *sys.argv[1:]])


def main() -> None:
    _ensure_environment()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
