"""The LiteLLM proxy's own virtualenv, `.venv-litellm/`, for the adapter's tests.

LiteLLM's proxy brings about 760 MB of dependencies that must never mix with
Tollgate's, so it gets a virtualenv of its own, made the way manage.py makes
`.venv`: on first use, from a pinned file (`tests/requirements-litellm.txt`,
installed with `--require-hashes`), redone only when that file changes. The
Tollgate client (`integrations/python`) and the LiteLLM adapter
(`integrations/litellm`) are then installed into it from this checkout, again
whenever their sources change, so the proxy runs the code under test.

`litellm_python()` raises `LiteLLMUnavailable` when the environment cannot be
made (no network on a first run, say); the tests turn that into a skip on a
laptop and a failure when `CI` is set.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import venv
from collections.abc import Iterator
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
VENV_DIR = BASE_DIR / ".venv-litellm"
REQUIREMENTS = BASE_DIR / "tests" / "requirements-litellm.txt"
# Installed into the venv from this checkout, in this order (the adapter needs the client).
PACKAGES = (BASE_DIR / "integrations" / "python", BASE_DIR / "integrations" / "litellm")
# The digest of the requirements file that was installed, and of the packages' sources.
REQUIREMENTS_STAMP = ".tollgate-requirements.sha256"
PACKAGES_STAMP = ".tollgate-packages.sha256"
# Build output and caches inside the package folders are not their sources.
IGNORED_PARTS = {"__pycache__", "build", "dist", ".mypy_cache", ".pytest_cache", ".ruff_cache"}


class LiteLLMUnavailable(RuntimeError):
    """The LiteLLM virtualenv could not be made; the message says why."""


def litellm_python() -> Path:
    """The python of `.venv-litellm`, made or brought up to date first.

    Safe to call from several processes at once: they take turns on a lock
    file inside the venv folder, and the first does the work.
    """
    VENV_DIR.mkdir(exist_ok=True)
    with (VENV_DIR / ".tollgate-install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _sync()
    return _python()


def _python() -> Path:
    return VENV_DIR / "bin" / "python"


def _sync() -> None:
    python = _python()
    if not python.exists():
        venv.create(VENV_DIR, with_pip=True)
    requirements = _digest_files([REQUIREMENTS])
    if _stamp(REQUIREMENTS_STAMP) != requirements:
        # No stamps while installing: an interrupted install is redone next time.
        _clear_stamps()
        _pip(
            "install",
            "--require-hashes",
            "--only-binary=:all:",
            "-r",
            str(REQUIREMENTS),
            what=f"the LiteLLM proxy's dependencies from {REQUIREMENTS.name}",
        )
        (VENV_DIR / REQUIREMENTS_STAMP).write_text(requirements + "\n")
    # A branch made before the packages existed has neither; each is installed once it is there.
    present = [package for package in PACKAGES if package.is_dir()]
    packages = _digest_files(path for package in present for path in _source_files(package))
    if present and _stamp(PACKAGES_STAMP) != packages:
        (VENV_DIR / PACKAGES_STAMP).unlink(missing_ok=True)
        # The build backend (hatchling) comes from the hashed file above, so
        # nothing is fetched: no index, no build isolation, no dependencies.
        _pip(
            "install",
            "--no-index",
            "--no-deps",
            "--no-build-isolation",
            "--force-reinstall",
            *(str(package) for package in present),
            what="the Tollgate client and LiteLLM adapter from this checkout",
        )
        (VENV_DIR / PACKAGES_STAMP).write_text(packages + "\n")


def _pip(*args: str, what: str) -> None:
    print(f"Installing {what} into {VENV_DIR} ...", flush=True)
    result = subprocess.run(
        [str(_python()), "-m", "pip", *args, "--quiet", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        env={**os.environ, "PIP_NO_INPUT": "1"},
    )
    if result.returncode != 0:
        raise LiteLLMUnavailable(
            f"pip could not install {what} into {VENV_DIR} (exit {result.returncode}):\n"
            + (result.stderr or result.stdout)[-4000:]
        )


def _stamp(name: str) -> str:
    path = VENV_DIR / name
    return path.read_text().strip() if path.exists() else ""


def _clear_stamps() -> None:
    for name in (REQUIREMENTS_STAMP, PACKAGES_STAMP):
        (VENV_DIR / name).unlink(missing_ok=True)


def _source_files(package: Path) -> Iterator[Path]:
    for path in sorted(package.rglob("*")):
        relative = path.relative_to(package).parts
        if path.is_file() and not IGNORED_PARTS.intersection(relative) and path.suffix != ".pyc":
            yield path


def _digest_files(paths: Iterator[Path] | list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(BASE_DIR)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()
