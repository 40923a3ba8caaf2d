"""The README's configuration table gives the defaults the settings have: a
default changed in one place only (it happened to HOTPATH_BATCH_INFLIGHT,
HOTPATH_POOL_MIN) misleads whoever tunes from the table."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]+)` \| `(-?[0-9.]+)` \|", re.MULTILINE)


def test_numeric_defaults_in_the_readme_are_the_settings():
    table = {name: value for name, value in ROW.findall((BASE_DIR / "README.md").read_text())}
    assert len(table) >= 10  # the table's rows were found
    env = {k: v for k, v in os.environ.items() if k not in table}
    # A URL that is never connected to: importing the settings must not start
    # the embedded server.
    env.update(DATABASE_URL="postgresql://unused@127.0.0.1:9/unused")
    script = (
        "import json, os, sys; os.environ['DJANGO_SETTINGS_MODULE'] = 'config.settings'; "
        "from django.conf import settings; "
        "print(json.dumps({n: getattr(settings, n, None) for n in sys.argv[1:]}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, *table],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    actual = json.loads(out.strip().splitlines()[-1])
    compared = {n: v for n, v in table.items() if actual[n] is not None}
    assert len(compared) >= 10
    assert {n: float(actual[n]) for n in compared} == {n: float(v) for n, v in compared.items()}
