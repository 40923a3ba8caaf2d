"""docs/configuration.md's settings table is the one operators tune from: it
must name every variable the code reads and give the defaults the settings
have. A default changed in one place only (it happened to
HOTPATH_BATCH_INFLIGHT, HOTPATH_POOL_MIN) misleads whoever tunes from the
table, and a variable missing from it is one nobody knows to set."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
CONFIGURATION = BASE_DIR / "docs" / "configuration.md"

# A row of the table: | `NAME` | default | meaning |
ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]+)` \| ([^|]+) \|", re.MULTILINE)
# A default written as code (`2.0`, `closed`), as opposed to prose ("unset").
CODE = re.compile(r"^`([^`]*)`$")
# `NAME=` in .env.example, set or commented out.
ENV_EXAMPLE_LINE = re.compile(r"^#?\s*([A-Z][A-Z0-9_]+)=", re.MULTILINE)
# env.int("NAME", ...), env("NAME"), os.environ.get("NAME"), "NAME" in os.environ
READ_IN_CODE = re.compile(
    r"""(?:env(?:\.\w+)?\(\s*|os\.environ\.get\(\s*|os\.getenv\(\s*)"([A-Z][A-Z0-9_]+)"|"""
    r""""([A-Z][A-Z0-9_]+)" in os\.environ"""
)


def documented() -> dict[str, str]:
    """Each variable of docs/configuration.md with its default column."""
    return {name: default.strip() for name, default in ROW.findall(CONFIGURATION.read_text())}


def read_by_code() -> set[str]:
    names: set[str] = set()
    for path in (BASE_DIR / "config" / "settings.py", BASE_DIR / "manage.py"):
        for a, b in READ_IN_CODE.findall(path.read_text()):
            names.add(a or b)
    return names


def in_env_example() -> set[str]:
    return set(ENV_EXAMPLE_LINE.findall((BASE_DIR / ".env.example").read_text()))


def settings_values(names: list[str], hidden: set[str]) -> dict[str, Any]:
    """The settings as a fresh process with none of `hidden` set loads them."""
    env = {k: v for k, v in os.environ.items() if k not in hidden}
    # A URL that is never connected to: importing the settings must not start
    # the embedded server.
    env.update(DATABASE_URL="postgresql://unused@127.0.0.1:9/unused")
    script = (
        "import json, os, sys; os.environ['DJANGO_SETTINGS_MODULE'] = 'config.settings'; "
        "from django.conf import settings; "
        "print(json.dumps({n: getattr(settings, n, None) for n in sys.argv[1:]}, default=str))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, *names],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def as_written(value: Any) -> Any:
    """A setting's value in the form the table writes it, to compare."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


def parse_written(default: str) -> Any:
    try:
        return float(default)
    except ValueError:
        return default


def test_every_variable_of_env_example_and_the_settings_is_in_the_table():
    table = documented()
    assert len(table) >= 20  # the table's rows were found
    missing = (in_env_example() | read_by_code()) - set(table)
    assert not missing, f"not in docs/configuration.md: {sorted(missing)}"


def test_the_table_names_no_variable_the_code_does_not_read():
    unknown = set(documented()) - in_env_example() - read_by_code()
    assert not unknown, f"docs/configuration.md names unknown variables: {sorted(unknown)}"


def test_defaults_in_the_table_are_the_settings_defaults():
    table = documented()
    written = {n: CODE.match(d).group(1) for n, d in table.items() if CODE.match(d)}
    actual = settings_values(sorted(written), hidden=set(table))
    # Variables that are not Django settings (LOG_LEVEL feeds LOGGING) are not
    # compared here; every other default written as code is.
    compared = {n: d for n, d in written.items() if actual[n] is not None}
    assert len(compared) >= 20
    for name in ("EMBEDDED_PGDATA", "DEMO_ADMIN_PASSWORD_FILE"):
        # Paths: the table gives them relative to the checkout.
        if name in compared:
            actual[name] = os.path.relpath(actual[name], BASE_DIR)
    assert {n: as_written(actual[n]) for n in compared} == {
        n: parse_written(d) for n, d in compared.items()
    }
