"""What the Tollgate adapter adds to a LiteLLM proxy request.

    .venv/bin/python -m loadtests.litellm_adapter [--requests 300] [--rounds 3]
        [--concurrency 1,8] [--upstream-delay-ms 0]

Starts, in one run: the fake OpenAI upstream (loadtests/harness/fake_openai.py),
a Tollgate server (uvicorn, one worker) on the embedded PostgreSQL with the
bench org of loadtests/harness/seed.py, and two LiteLLM proxies (1.108.7, from
.venv-litellm) in front of the same upstream: one plain, one with
`tollgate_litellm.proxy.handler`. Each round sends `--requests` chat
completions (max_tokens 20, non-streamed) through each proxy in turn at each
concurrency (closed loop: that many requests in flight), after a warm-up, and
records each latency at the client. The rounds alternate the proxies so that
drift of a shared machine falls on both. Reports p50/p99/mean per proxy and
the difference in docs/benchmarks/litellm-adapter.md, and checks that each
adapter request was recorded in Tollgate (one event each, its hold settled).
Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
from dataclasses import dataclass, field
from decimal import Decimal

import httpx

from loadtests.harness.litellm_proxy import (
    MASTER_KEY,
    MODEL,
    start_fake_upstream,
    start_proxy,
    write_config,
)
from loadtests.harness.paths import BASE_DIR, RESULTS_DIR
from loadtests.harness.seed import ORG_SLUG, django_setup, seed
from loadtests.harness.servers import free_port, serve, tollgate_design
from loadtests.reports.markdown import write_report

REPORT_PATH = BASE_DIR / "docs" / "benchmarks" / "litellm-adapter.md"
WARMUP = 30


@dataclass
class Sample:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]


async def drive(url: str, requests: int, concurrency: int, sample: Sample) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "How much does this cost?"}],
        "max_tokens": 20,
    }
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    queue = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as http:

        async def worker() -> None:
            for _ in queue:
                started = time.perf_counter()
                try:
                    response = await http.post("/v1/chat/completions", json=body)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    sample.latencies_ms.append((time.perf_counter() - started) * 1000)
                else:
                    sample.errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        sample.seconds += time.perf_counter() - began


def ensure_price() -> None:
    from tracking.models import Price

    Price.objects.get_or_create(
        provider="openai",
        model=MODEL,
        defaults={
            "effective_from": "2000-01-01T00:00:00Z",
            "input_per_token": Decimal("0.000001"),
            "output_per_token": Decimal("0.00001"),
        },
    )


def recorded() -> tuple[int, int]:
    """(events of the bench org for the fake's model, its holds still active)."""
    from budgets.models import Reservation
    from tracking.models import RequestEvent

    events = RequestEvent.objects.filter(org__slug=ORG_SLUG, model__endswith=MODEL).count()
    active = Reservation.objects.filter(org__slug=ORG_SLUG, status="active").count()
    return events, active


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="per proxy, round, concurrency")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--upstream-delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    from tests.litellm_env import litellm_python

    python = litellm_python()
    django_setup()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    key = seed(key_name="loadtests.litellm")
    ensure_price()
    logs = RESULTS_DIR / "litellm-adapter"
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with serve(tollgate_design(port), port, logs / "tollgate.log"):
        tollgate_url = f"http://127.0.0.1:{port}"
        upstream = start_fake_upstream(logs, delay_ms=args.upstream_delay_ms)
        proxies = {}
        try:
            for adapter in (False, True):
                config = write_config(logs, upstream.url, adapter=adapter)
                proxies["adapter" if adapter else "plain"] = start_proxy(
                    python,
                    config,
                    logs,
                    TOLLGATE_URL=tollgate_url,
                    TOLLGATE_API_KEY=key,
                    TOLLGATE_TIMEOUT_MS="5000",
                )
            events_before, _ = recorded()
            samples = {(name, c): Sample() for name in proxies for c in levels}
            for proxy in proxies.values():
                asyncio.run(drive(proxy.url, WARMUP, 4, Sample()))
            for round_number in range(args.rounds):
                order = list(proxies.items())
                if round_number % 2:
                    order.reverse()
                for concurrency in levels:
                    for name, proxy in order:
                        asyncio.run(
                            drive(proxy.url, args.requests, concurrency, samples[name, concurrency])
                        )
                print(f"round {round_number + 1}/{args.rounds} done", flush=True)
            time.sleep(3)  # success events are recorded after the answer
            events_after, active = recorded()
        finally:
            for proxy in proxies.values():
                proxy.stop()
            upstream.stop()

    adapter_requests = WARMUP + sum(len(samples["adapter", c].latencies_ms) for c in levels)
    lines = report(args, levels, samples, events_after - events_before, adapter_requests, active)
    write_report(REPORT_PATH, lines)


def report(
    args: argparse.Namespace,
    levels: list[int],
    samples: dict[tuple[str, int], Sample],
    events: int,
    adapter_requests: int,
    active: int,
) -> list[str]:
    lines = [
        "# What the LiteLLM adapter adds to a proxy request",
        "",
        "`.venv/bin/python -m loadtests.litellm_adapter "
        f"--requests {args.requests} --rounds {args.rounds} --concurrency "
        f"{args.concurrency} --upstream-delay-ms {args.upstream_delay_ms:g}`",
        "",
        "Two LiteLLM 1.108.7 proxies (one uvicorn worker each) in front of the same "
        "fake OpenAI upstream, one plain and one with `tollgate_litellm.proxy.handler` "
        "(a hold before the call, an event settling it after), against one Tollgate "
        "server (uvicorn, one worker) on the embedded PostgreSQL, all on this machine "
        "in one run, the rounds alternating the proxies. Latency is measured at the "
        "client, per request, in ms; closed loop at each concurrency.",
        "",
        "| concurrency | proxy | requests | errors | p50 | p99 | mean | req/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in levels:
        for name in ("plain", "adapter"):
            s = samples[name, c]
            lat = s.latencies_ms
            lines.append(
                f"| {c} | {name} | {len(lat)} | {s.errors} | {percentile(lat, 50):.1f} | "
                f"{percentile(lat, 99):.1f} | {statistics.fmean(lat):.1f} | "
                f"{len(lat) / s.seconds:.0f} |"
            )
    lines += ["", "Added by the adapter (adapter minus plain):", ""]
    lines += ["| concurrency | p50 | p99 | mean |", "|---|---|---|---|"]
    for c in levels:
        plain, adapter = samples["plain", c].latencies_ms, samples["adapter", c].latencies_ms
        lines.append(
            f"| {c} | {percentile(adapter, 50) - percentile(plain, 50):+.1f} ms | "
            f"{percentile(adapter, 99) - percentile(plain, 99):+.1f} ms | "
            f"{statistics.fmean(adapter) - statistics.fmean(plain):+.1f} ms |"
        )
    lines += [
        "",
        f"Tollgate recorded {events} events for the {adapter_requests} requests through the "
        f"adapter (warm-up included); holds left active at the end: {active}.",
        "",
        "Every process shares the machine's 2 cores (the client, the fake, two proxies, "
        "Tollgate, PostgreSQL): under concurrency, the adapter's extra work (its two "
        "Tollgate calls per request, LiteLLM's token count of the messages, and the "
        "Tollgate server and PostgreSQL answering them) competes for the same CPU as "
        "the proxy, so the difference there is an upper bound for a proxy whose "
        "Tollgate runs elsewhere. Check the load average below: other work on a "
        "shared machine inflates both columns.",
        "",
    ]
    return lines


if __name__ == "__main__":
    main()
