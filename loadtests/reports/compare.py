"""The report of loadtests.compare: markdown tables and summaries of the
closed-loop and fixed-rate runs, and the latency plots (matplotlib)."""

from __future__ import annotations

import argparse
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from loadtests.harness.cpu import NOISY_OTHER_CPU_PCT, CpuShares
from loadtests.harness.seed import HOLD_USD, ORG_DAY_LIMIT, ORG_SLUG, TEAMS, USERS_PER_TEAM
from loadtests.harness.servers import HOST
from loadtests.reports.markdown import cpu_cells, machine
from loadtests.wrk.run import PATH, WRK_THREADS, WRK_TIMEOUT

if TYPE_CHECKING:
    from loadtests.compare import RateResult, Result, Run


# One colour per design, the same in every plot.
COLOURS = {"floor": "C0", "sync": "C1", "async": "C2", "tollgate": "C3"}


def fmt_ms(value: float, timeout: float) -> str:
    """A latency; infinite ones fell on a timeout, a lost connection or a non-2xx."""
    return "failed" if math.isinf(value) else f"{value:,.2f}"


def closed_table(results: list[Result]) -> str:
    floor = next((r.rps for r in results if r.design.key == "floor"), 0.0)
    sync = next((r.rps for r in results if r.design.key == "sync"), 0.0)
    slow = any(r.variant == "slow" for r in results)
    lines = [
        "| design | served by | RPS | p50 ms | p90 ms | p95 ms | p99 ms | non-2xx "
        "| socket errors | CPU server / Postgres / other | vs floor | vs sync "
        f"|{' DB round trips per request |' if slow else ''}",
        f"|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|{'---:|' if slow else ''}",
    ]
    for r in results:
        if r.failure:
            lines.append(f"| {r.design.name} | {r.design.server} | FAILED{' |' * (10 + slow)}")
            continue
        trips = ""
        if slow:
            trips = f" {r.round_trips:.2f} |" if r.round_trips is not None else " n/a |"
        lines.append(
            f"| {r.design.name}{'' if r.clean and not r.noisy else ' ⚠'} | {r.design.server} "
            f"| {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p90_ms:.2f} | {r.p95_ms:.2f} | {r.p99_ms:.2f} "
            f"| {r.non_2xx} | {r.socket_errors} | {cpu_cells(r.cpu)} "
            f"| {_ratio(r.rps, floor)} | {_ratio(r.rps, sync)} |{trips}"
        )
    return "\n".join(lines)


def pivot_table(results: list[RateResult], timeout: float) -> str:
    """p99 (p50) per design and offered rate: the headline of the fixed-rate runs."""
    rates = sorted({r.rate for r in results})
    names = list(dict.fromkeys(r.design.name for r in results))
    by = {(r.design.name, r.rate): r for r in results}
    lines = [
        "| design | " + " | ".join(f"{rate:,.0f} RPS" for rate in rates) + " |",
        "|---|" + "---:|" * len(rates),
    ]
    for name in names:
        cells = []
        for rate in rates:
            r = by.get((name, rate))
            if r is None:
                cells.append("")
            elif r.failure:
                cells.append("FAILED")
            else:
                flag = "" if r.clean and not r.noisy else " ⚠"
                cells.append(
                    f"{fmt_ms(r.ms('p99_ms'), timeout)} ({fmt_ms(r.ms('p50_ms'), timeout)}){flag}"
                )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rate_table(results: list[RateResult], timeout: float) -> str:
    lines = [
        "| design | offered RPS | 2xx/s | p50 ms | p95 ms | p99 ms | max ms "
        "| non-2xx / timeouts / conn. errors | peak conns | generator CPU, send lag p99 ms "
        "| CPU server / Postgres / other |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r.failure:
            lines.append(f"| {r.design.name} | {r.rate:,.0f} | FAILED: {r.failure[:80]}{' |' * 9}")
            continue
        d = r.data
        errors = d["errors"]
        non_2xx = d["answered"] - d["ok"]
        flag = "" if r.clean and not r.noisy else " ⚠"
        lines.append(
            f"| {r.design.name}{flag} | {r.rate:,.0f} | {d['ok'] / d['duration_s']:,.0f} "
            f"| {fmt_ms(r.ms('p50_ms'), timeout)} | {fmt_ms(r.ms('p95_ms'), timeout)} "
            f"| {fmt_ms(r.ms('p99_ms'), timeout)} | {fmt_ms(r.ms('max_ms'), timeout)} "
            f"| {non_2xx} / {errors['timeout']} / {errors['connect'] + errors['read']} "
            f"| {d['peak_connections']} "
            f"| {d['generator_cpu_pct']:.0f}%, {fmt_ms(r.ms('send_lag_p99_ms'), timeout)} "
            f"| {cpu_cells(r.cpu)} |"
        )
    return "\n".join(lines)


def _ratio(value: float, base: float) -> str:
    # Three significant digits: the sync design is a few thousandths of the floor.
    return f"{value / base:.3g}x" if base else "n/a"


def closed_summary(results: list[Result], connections: int) -> list[str]:
    by_key = {r.design.key: r for r in results if not r.failure}
    lines = []
    tollgate, sync, floor = by_key.get("tollgate"), by_key.get("sync"), by_key.get("floor")
    if tollgate and sync and sync.rps:
        ratio = tollgate.rps / sync.rps
        lines.append(
            f"- Tollgate / sync: **{ratio:.2f}x** the throughput "
            f"(target ≥ 8x: {'met' if ratio >= 8 else 'not met'}), "
            f"p99 {tollgate.p99_ms:.1f} ms vs {sync.p99_ms:.1f} ms."
        )
    if tollgate and by_key.get("async") and by_key["async"].rps:
        lines.append(
            f"- Tollgate / async: **{tollgate.rps / by_key['async'].rps:.2f}x** the throughput."
        )
    if tollgate and floor and floor.rps:
        ratio = tollgate.rps / floor.rps
        lines.append(
            f"- Tollgate / floor: **{ratio:.3f}x** (target ≥ 0.10x: {'met' if ratio >= 0.1 else 'not met'})."
        )
    for r in results:
        lines.extend(_run_warnings(r.design.name, r.failure, r.cpu if r.noisy else None))
        if not r.failure and not r.clean:
            lines.append(
                f"- ⚠ {r.design.name} answered non-2xx or lost connections: statuses "
                f"{r.statuses}, socket errors {r.socket_errors}; its RPS counts them."
            )
        if r.design.holds and not r.failure:
            lines.append(
                f"- {r.design.name}: {r.answered_2xx:,} answers 2xx (smoke, warm-up and run); "
                f"the database holds {r.held_rows:,} reservations and {r.held_amounts:,} "
                f"x ${HOLD_USD} in the org window"
                f"{'' if r.holds_match(connections) else ' ⚠ MISMATCH'}."
            )
    if results and all(r.clean for r in results):
        lines.append("- Every response of every design was 2xx; no socket errors.")
    return lines


def rate_summary(results: list[RateResult], variant: str, timeout: float) -> list[str]:
    lines = []
    by = {(r.design.key, r.rate): r for r in results if not r.failure}
    if variant == "normal" and ("tollgate", 500) in by:
        p99 = by["tollgate", 500].ms("p99_ms")
        lines.append(
            f"- Tollgate p99 at 500 RPS: {_latency(p99)} "
            f"(target ≤ 10 ms: {'met' if p99 <= 10 else 'not met'})."
        )
    if variant == "slow":
        for rate in sorted({r.rate for r in results}):
            tollgate, sync = by.get(("tollgate", rate)), by.get(("sync", rate))
            if not (tollgate and sync):
                continue
            t99, s99 = tollgate.ms("p99_ms"), sync.ms("p99_ms")
            if math.isinf(t99):
                verdict = "not met: Tollgate failed more than 1% of requests"
            elif math.isinf(s99):
                verdict = "met: the sync view failed more than 1% of requests"
            else:
                verdict = f"{s99 / t99:.1f}x, {'met' if s99 >= 3 * t99 else 'not met'}"
            lines.append(
                f"- {rate:,.0f} RPS: Tollgate p99 {_latency(t99)} vs sync ORM "
                f"{_latency(s99)} (target ≥ 3x lower: {verdict})."
            )
    floor = [r for r in results if r.design.key == "floor" and not r.failure]
    if floor:
        top = max(floor, key=lambda r: r.rate)
        lines.append(
            f"- The generator itself (floor rows): at {top.rate:,.0f} RPS it used "
            f"{top.data['generator_cpu_pct']:.0f}% of a core, sent with a p99 lag of "
            f"{_latency(top.ms('send_lag_p99_ms'))} behind schedule, and the floor's "
            f"p99 including that lag was {_latency(top.ms('p99_ms'))}."
        )
    for r in results:
        lines.extend(
            _run_warnings(
                f"{r.design.name} at {r.rate:,.0f} RPS", r.failure, r.cpu if r.noisy else None
            )
        )
    return lines


def _latency(value: float) -> str:
    return "failed (more than 1% timed out or errored)" if math.isinf(value) else f"{value:,.1f} ms"


def _run_warnings(what: str, failure: str, noisy_cpu: CpuShares | None) -> list[str]:
    lines = []
    if failure:
        lines.append(f"- ⚠ {what} failed: {failure}")
    if noisy_cpu is not None:
        lines.append(
            f"- ⚠ during {what}, processes outside this benchmark used "
            f"{noisy_cpu.other:.0f}% of a core: the machine was not quiet; rerun to compare."
        )
    return lines


def plot(results: list[RateResult], path: Path, title: str, timeout: float) -> None:
    """p50 (dashed) and p99 (solid) against the offered rate, one colour per
    design, log y; a failed percentile (timeout or error) is drawn as x on the
    timeout line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=110)
    ceiling = timeout * 1000
    names = list(dict.fromkeys(r.design.name for r in results))
    keys = {r.design.name: r.design.key for r in results}
    for name in names:
        runs = sorted(
            (r for r in results if r.design.name == name and not r.failure), key=lambda r: r.rate
        )
        if not runs:
            continue
        colour = COLOURS[keys[name]]  # the same in both plots
        for pct, style in (("p99_ms", "-"), ("p50_ms", "--")):
            xs = [r.rate for r in runs]
            ys = [min(r.ms(pct), ceiling) for r in runs]
            ax.plot(xs, ys, style, color=colour, label=f"{name} {pct[:3]}")
            for r, y in zip(runs, ys, strict=True):
                censored = math.isinf(r.ms(pct))
                ax.plot(
                    r.rate,
                    y,
                    "x" if censored else "o",
                    color=colour,
                    markersize=7 if censored else 4,
                )
    ax.set_xticks(sorted({r.rate for r in results}))
    ax.axhline(ceiling, color="grey", linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set_ylim(top=ceiling * 3)
    ax.text(
        ax.get_xlim()[0],
        ceiling * 1.15,
        f" failed (timeout {timeout:g} s, or an error): a point drawn x on this line",
        color="grey",
        fontsize=8,
    )
    ax.set_xlabel("offered rate (requests per second, open loop)")
    ax.set_ylabel("latency from scheduled send (ms, log)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def report(
    run: Run,
    args: argparse.Namespace,
    started: datetime,
    plots: dict[str, str],
    *,
    warmup_rate: float,
    slow_warmup_rate: float,
) -> str:
    t = args.timeout
    text = [
        "# Reservation hot path vs. sync Django, async Django and a raw ASGI floor (issue 5 §2)",
        "",
        f"Generated by `.venv/bin/python -m loadtests.compare{''.join(' ' + a for a in args.argv)}` "
        f"on {started:%Y-%m-%d %H:%M} UTC ({(datetime.now(UTC) - started).total_seconds() / 60:.1f} min).",
        "",
    ]
    if run.all_noisy():
        text += [
            "> ⚠ Noisy: other processes used more than "
            f"{NOISY_OTHER_CPU_PCT:.0f}% of a core during some runs (rows marked ⚠). "
            "Read these numbers as a smoke run, not as results.",
            "",
        ]
    if run.closed:
        text += [
            f"## Max throughput: closed loop, {args.connections} connections",
            "",
            closed_table(run.closed),
            "",
            *closed_summary(run.closed, args.connections),
            "",
        ]
    if run.rates:
        text += [
            "## Fixed rates (open loop): p99 (p50) in ms",
            "",
            pivot_table(run.rates, t),
            "",
            *rate_summary(run.rates, "normal", t),
            "",
        ]
        if "normal" in plots:
            text += [f"![latency vs offered rate]({plots['normal']})", ""]
        text += ["Every run:", "", rate_table(run.rates, t), ""]
    if run.slow_closed or run.slow_rates:
        text += [
            f"## Slow database: +{args.slow_delay_ms:g} ms per database round trip",
            "",
            "Each design's database connections go through loadtests/harness/slowdb.py, "
            f"which delays every byte sent to PostgreSQL by {args.slow_delay_ms:g} ms; "
            "a request pays that once per round trip it makes.",
            "",
        ]
        if run.slow_closed:
            text += [
                f"### Closed loop, {args.connections} connections",
                "",
                closed_table(run.slow_closed),
                "",
                *closed_summary(run.slow_closed, args.connections),
                "",
            ]
        if run.slow_rates:
            text += [
                "### Fixed rates (open loop): p99 (p50) in ms",
                "",
                pivot_table(run.slow_rates, t),
                "",
                *rate_summary(run.slow_rates, "slow", t),
                "",
            ]
            if "slow" in plots:
                text += [f"![latency vs offered rate, slow database]({plots['slow']})", ""]
            text += ["Every run:", "", rate_table(run.slow_rates, t), ""]
    text += [
        "## How it was measured",
        "",
        f"- `POST {PATH}` with a ${HOLD_USD} hold, spread round-robin over "
        f"{TEAMS} teams x {USERS_PER_TEAM} users of org `{ORG_SLUG}` (all registered "
        "before the run). The org has one day budget of "
        f"${ORG_DAY_LIMIT:,} that is never reached, so every request takes the full "
        "hold path: check the org's window against its limit, add to `reserved`, insert a "
        "reservation. Every request of every design contends for that one row.",
        "- Each run (each design, mode and rate) starts a fresh server process with one "
        f"worker on {HOST}; before it, the org's reservations and windows are deleted and "
        "vacuumed; then one smoke request.",
        f"- Closed loop: {args.warmup} s of warm-up, then `wrk -t{WRK_THREADS} "
        f"-c{args.connections} -d{args.duration}s --timeout {WRK_TIMEOUT} --latency` (each "
        "connection sends its next request when the answer arrives). wrk is a C load "
        "generator: it takes little CPU from the server on this small box. A Lua "
        "`response()` counts every status code; RPS includes non-2xx answers, so a row "
        "marked ⚠ must not be read as a throughput.",
        f"- Fixed rates: `python -m loadtests.harness.openloop` sends request i at i / rate "
        f"for {args.rate_duration} s (after {args.warmup} s at ≤ {warmup_rate:g} RPS, "
        f"≤ {slow_warmup_rate:g} with the slow database) on as many keep-alive connections as "
        "it needs (up to 256), and measures each latency from the request's *scheduled* "
        "time, so a request that waited for a connection or in a server's queue is charged "
        "for it (no coordinated omission; wrk is closed-loop and wrk2 is not in Debian). A "
        f"request not answered {t:g} s after its scheduled time is a timeout. Timeouts, lost "
        "connections and non-2xx answers count as infinitely slow (a fast 429 or 503 is no "
        "decision): a percentile shown as `failed` fell on one. The generator is "
        "Python (asyncio, uvloop, httptools); its CPU and how late it sent (send lag, part of "
        "every latency it reports) are in the per-run tables, and the floor rows show what "
        "it can drive.",
        "- CPU: CPU time during the measured run as a share of one core, of the server's "
        "processes, of PostgreSQL (all backends) and of every other process on the "
        "machine (not the load generator, this script or the slow-database proxy). "
        f"`other` above {NOISY_OTHER_CPU_PCT:.0f}% means the machine was busy with "
        "something else and the row is flagged ⚠.",
        '- floor: `loadtests/baselines/floor.py` reads the body and returns `{"ok":true}`.',
        f"- sync: `loadtests/baselines/sync_views.py` under gunicorn gthread with {args.threads} "
        "threads (`--threads`): `transaction.atomic()`, the windows locked with "
        "`select_for_update()` in id order, checked, updated, a Reservation created. 8 "
        "threads by default: gunicorn advises 2-4 threads per core for I/O-bound work; 8 "
        "threads hold more database connections than the hot path's pool. Persistent "
        "connections (`CONN_MAX_AGE=None`), the production middleware, the same key cache "
        "and input validation.",
        "- async: `loadtests/baselines/async_views.py` (an `async def` view on the async "
        "ORM) under uvicorn, Django's psycopg pool of "
        f"{args.threads} connections. No `transaction.atomic()` in async code, so each "
        "window is held by one conditional UPDATE (`WHERE spent <= limit - amount - "
        "reserved`, row count checked) and given back if a later step fails; the module "
        "docstring says what that gives up against the sync view's transaction.",
        f"- Tollgate: `config.asgi:application`, `HOTPATH_POOL_MIN=HOTPATH_POOL_MAX="
        f"{args.pool_max}` (one SQL function call per request on the async pool; holds that "
        "arrive while others are in flight go together in one call).",
        f"- Slow database: loadtests/harness/slowdb.py listens on {HOST} and forwards to the embedded "
        "server's unix socket, delaying every byte towards PostgreSQL by "
        f"{args.slow_delay_ms:g} ms (answers come back at once), so every round trip "
        "(statement, BEGIN, COMMIT, a pool's health check) takes that much longer, like a "
        "database across a slow network. The designs get a `DATABASE_URL` pointing at it and "
        "are otherwise unchanged. It counts round trips (Query and Sync messages) for the "
        '"DB round trips per request" column (warm-up and run, including background '
        "queries such as Tollgate's reservation sweeper). Why not `pg_sleep(0.02)` per "
        "request: it would need a different code path in each design, and would charge a "
        "design making one round trip per request the same as one making eight, which is "
        "exactly the difference a slow database exposes.",
        "",
        "## Machine",
        "",
        *machine(),
        "",
    ]
    return "\n".join(text)


def plot_title(results: list[RateResult], variant: str, args: argparse.Namespace) -> str:
    noisy = " (⚠ noisy machine)" if any(r.noisy for r in results) else ""
    return (
        f"POST {PATH}, one worker per design{variant}{noisy}\n"
        f"p99 solid, p50 dashed; {args.rate_duration:g} s per rate, "
        f"{datetime.now(UTC):%Y-%m-%d}"
    )
