"""The client is fully typed: mypy --strict passes on it (its config is in
integrations/python/pyproject.toml), so callers' type checkers can trust it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CLIENT_DIR = Path(__file__).resolve().parents[2] / "integrations" / "python"


def test_the_client_passes_mypy_strict():
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental"],
        cwd=CLIENT_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Success: no issues found" in checked.stdout


def test_the_client_ships_its_type_information():
    assert (CLIENT_DIR / "src" / "tollgate_client" / "py.typed").is_file()
