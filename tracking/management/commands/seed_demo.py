from __future__ import annotations

import json
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from psycopg.types.json import Jsonb

from budgets.audit import Actor
from budgets.auth import ApiKeyInfo
from budgets.models import Budget, EndUser, Organization, Team
from budgets.services import budget_create, organization_create, organization_update
from config.hotpath.errors import ApiError
from tracking import api as ingest

TEAMS = ("search", "support", "research", "growth")
USERS = (
    "alice",
    "bob",
    "carol",
    "dave",
    "erin",
    "frank",
    "grace",
    "heidi",
    "ivan",
    "judy",
    "mallory",
    "niaj",
    "olivia",
    "peggy",
    "rupert",
    "sybil",
    "trent",
    "victor",
    "walter",
    "zoe",
)
# model, provider, usage shape, share of traffic
MODELS = [
    ("gpt-4o-mini", "openai", "openai_chat", 30),
    ("gpt-4o", "openai", "openai_chat", 12),
    ("gpt-5-mini", "openai", "openai_responses", 10),
    ("o4-mini", "openai", "openai_responses", 5),
    ("claude-sonnet-4-5", "anthropic", "anthropic", 15),
    ("claude-haiku-4-5", "anthropic", "anthropic", 10),
    ("gemini-2.5-flash", "google", "gemini", 13),
    ("gemini-2.5-pro", "google", "gemini", 5),
]
REASONING_MODELS = {"o4-mini", "gpt-5-mini", "gemini-2.5-pro"}
BATCH = 1000


def _usage(rng: random.Random, shape: str, model: str) -> dict[str, Any]:
    """Usage in the provider's own shape, with cached and reasoning tokens."""
    prompt = int(rng.lognormvariate(7.0, 0.9))  # ~1,100 tokens typical
    output = int(rng.lognormvariate(5.5, 0.8))  # ~250 tokens typical
    cached = int(prompt * rng.choice((0, 0, 0.3, 0.6, 0.9)))
    reasoning = int(output * rng.uniform(0.5, 3)) if model in REASONING_MODELS else 0
    if shape == "openai_chat":
        return {
            "prompt_tokens": prompt,
            "completion_tokens": output + reasoning,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }
    if shape == "openai_responses":
        return {
            "input_tokens": prompt,
            "output_tokens": output + reasoning,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": prompt + output + reasoning,
        }
    if shape == "anthropic":
        write = int((prompt - cached) * 0.2) if rng.random() < 0.1 else 0
        return {
            "input_tokens": prompt - cached - write,
            "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": write,
            "output_tokens": output,
        }
    return {
        "promptTokenCount": prompt,
        "cachedContentTokenCount": cached,
        "candidatesTokenCount": output,
        "thoughtsTokenCount": reasoning,
        "totalTokenCount": prompt + output + reasoning,
    }


def _hour_weights() -> list[float]:
    """Diurnal traffic: quiet at night (UTC), peak mid-afternoon, lighter weekends."""
    return [
        0.15,
        0.1,
        0.08,
        0.08,
        0.1,
        0.2,
        0.4,
        0.7,
        1.0,
        1.2,
        1.3,
        1.35,
        1.3,
        1.4,
        1.5,
        1.45,
        1.3,
        1.1,
        0.9,
        0.7,
        0.55,
        0.4,
        0.3,
        0.2,
    ]


class Command(BaseCommand):
    help = (
        "Create a demo organization (teams, users, budgets) and N days of realistic LLM "
        "traffic, recorded through the same validation and ingest function as POST /v1/events. "
        "Each run adds new events."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--org", default="demo")
        parser.add_argument("--days", type=int, default=7)
        parser.add_argument(
            "--hours", type=int, help="Spread the events over the last N hours instead of --days."
        )
        parser.add_argument("--events", type=int, default=5000)
        parser.add_argument("--seed", type=int, default=1)

    def handle(
        self, *args, org: str, days: int, hours: int | None, events: int, seed: int, **options
    ) -> None:
        if days < 1 or events < 0 or (hours is not None and hours < 1):
            raise CommandError("--days and --hours must be at least 1 and --events not negative.")
        span_hours = hours or days * 24
        # Budgets sized to the traffic (~$0.0036 an event): some near their soft
        # limit, one monitor-only, whatever --events and the span are.
        daily_events = Decimal(events) * 24 / span_hours
        organization = self.seed_org(org, scale=max(daily_events / 700, Decimal("0.01")))
        started = time.monotonic()
        recorded = self.seed_events(organization, hours=span_hours, count=events, seed=seed)
        elapsed = time.monotonic() - started
        span = f"{hours} hours" if hours else f"{days} days"
        self.stdout.write(
            f"Recorded {recorded:,} new events of {events:,} over {span} "
            f"in {elapsed:.1f} s ({events / max(elapsed, 1e-9):,.0f} events/s)."
        )

    @transaction.atomic
    def seed_org(self, slug: str, *, scale: Decimal = Decimal(1)) -> Organization:
        org = Organization.objects.filter(slug=slug).first()
        if org is not None:
            return org
        actor = Actor.command("seed_demo")
        org = organization_create(slug=slug, name="Demo Inc.", time_zone="UTC", actor=actor)
        teams = {t: Team.objects.create(org=org, slug=t, name=t.title()) for t in TEAMS}
        for uid in USERS:
            EndUser.objects.create(org=org, external_id=uid)

        def limit(usd: str) -> Decimal:
            return (Decimal(usd) * scale).quantize(Decimal("0.01"))

        budget_create(
            Budget(org=org, scope="org", period="month", limit_usd=limit("120")), actor=actor
        )
        for team, usd, period, enforce in (
            ("search", "1.50", "day", True),
            ("support", "1.00", "day", True),
            ("research", "5.00", "week", False),
            ("growth", "3.00", "month", True),
        ):
            budget_create(
                Budget(
                    org=org,
                    scope="team",
                    team=teams[team],
                    period=period,
                    limit_usd=limit(usd),
                    enforce=enforce,
                    soft_limit_pct=80,
                ),
                actor=actor,
            )
        alice = EndUser.objects.get(org=org, external_id="alice")
        budget_create(
            Budget(org=org, scope="user", user=alice, period="day", limit_usd=limit("0.20")),
            actor=actor,
        )
        # A feature's budget (its requests carry the tag) and one model family
        # of a team; usage and the dashboard can break spend down by feature.
        budget_create(
            Budget(
                org=org, scope="tag", tag="feature=agent", period="month", limit_usd=limit("30")
            ),
            actor=actor,
        )
        budget_create(
            Budget(
                org=org,
                scope="team",
                team=teams["research"],
                model_filter="claude-sonnet-*",
                period="week",
                limit_usd=limit("2.00"),
            ),
            actor=actor,
        )
        org = organization_update(org_id=org.pk, changes={"report_tags": ["feature"]}, actor=actor)
        self.stdout.write(
            f"Created organization '{slug}': {len(TEAMS)} teams, {len(USERS)} users, 8 budgets."
        )
        return org

    def seed_events(self, org: Organization, *, hours: int, count: int, seed: int) -> int:
        rng = random.Random(seed)
        run = uuid.uuid4().hex[:8]
        key = ApiKeyInfo(
            key_id=0,
            org_id=org.id,
            org_slug=org.slug,
            strict=False,
            fail_mode="",
            team_slug=None,
            is_admin=False,
            revoked=False,
        )
        now = datetime.now(UTC)
        start = now - timedelta(hours=hours)
        starts = [start + timedelta(hours=h) for h in range(hours)]
        weights = [_hour_weights()[h.hour] * (0.5 if h.weekday() >= 5 else 1.0) for h in starts]
        models = [m for m in MODELS]
        model_weights = [m[3] for m in MODELS]
        team_weights = [5, 3, 2, 1]
        recorded = done = 0
        while done < count:
            size = min(BATCH, count - done)
            batch_hours = rng.choices(starts, weights, k=size)
            raw = []
            for i, hour in enumerate(batch_hours):
                model, provider, shape, _ = rng.choices(models, model_weights)[0]
                at = min(hour + timedelta(seconds=rng.uniform(0, 3600)), now)
                raw.append(
                    {
                        "id": f"seed-{run}-{done + i}",
                        "team": rng.choices(TEAMS, team_weights)[0],
                        "user": rng.choice(USERS),
                        "model": model,
                        "provider": provider,
                        "usage": _usage(rng, shape, model),
                        "latency_ms": int(rng.lognormvariate(6.8, 0.5)),
                        "status": "error" if rng.random() < 0.02 else "ok",
                        "started_at": at.isoformat(),
                        "tags": {"feature": rng.choice(("chat", "summarize", "search", "agent"))},
                    }
                )
            try:
                events, _ = ingest.validate({"events": raw}, key)
            except ApiError as exc:  # a bug in the generator, not in the data
                raise CommandError(f"Generated an invalid event: {exc.message}") from exc
            recorded += self._record(org, events)
            done += size
            self._progress(done, count)
        return recorded

    def _record(self, org: Organization, events: list[dict[str, Any]]) -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT tollgate_record_events(%s, false, %s)",
                [org.id, Jsonb(events)],
            )
            result = json.loads(cursor.fetchone()[0])
        return sum(1 for r in result["results"] if not r["duplicate"])

    def _progress(self, done: int, total: int) -> None:
        width = 30
        filled = int(width * done / max(total, 1))
        line = f"[{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,} events"
        if sys.stdout.isatty() and self.stdout._out is sys.stdout:  # redraw in place
            self.stdout.write("\r" + line, ending="" if done < total else "\n")
            self.stdout.flush()
        elif done == total or done % (BATCH * 50) == 0:
            self.stdout.write(line)
