"""Imports flow one way, config <- budgets <- tracking <- dashboard <- loadtests,
with no cycles: the import-linter contracts in pyproject.toml, run here so
that a change cannot quietly break them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept():
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
            "--no-cache",
            "--config",
            str(ROOT / "pyproject.toml"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 kept, 0 broken" in done.stdout, done.stdout


def test_a_broken_layer_is_caught(tmp_path):
    """The contracts can fail: an extra module of config that imports an app."""
    config = (ROOT / "pyproject.toml").read_text()
    rogue = ROOT / "config" / "_rogue_import_for_test.py"
    rogue.write_text("import dashboard.live  # noqa: F401\n")
    try:
        (tmp_path / "pyproject.toml").write_text(config)
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "from importlinter.cli import lint_imports_command; lint_imports_command()",
                "--no-cache",
                "--config",
                str(tmp_path / "pyproject.toml"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        rogue.unlink()
    assert done.returncode != 0
    assert "config is not allowed to import dashboard" in done.stdout, done.stdout
