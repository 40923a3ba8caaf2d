"""Organizations, teams, end users, budgets, their per-period windows,
reservations and API keys.

The hot path never goes through these models: it runs the SQL functions in
`budgets/sql/` over the async pool (see `config/hotpath/db.py`). The models own the
schema, the constraints, admin and management commands.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
import zoneinfo
from decimal import Decimal

from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import connection, models
from django.db.models import Q
from django.db.models.functions import Lower
from django.utils import timezone

from budgets import labels, webhooks
from config.hotpath.inputs import usd_for_people

MONEY = {"max_digits": 20, "decimal_places": 10}
# As tracking's prices: a per-token rate (budgets may not import tracking).
PER_TOKEN = {"max_digits": 20, "decimal_places": 14}
ZERO = Decimal("0")


def validate_time_zone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    # OSError: a name too long for a file name.
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValidationError(f"Unknown time zone: {value}") from exc
    # PostgreSQL computes the periods, and it knows fewer names than the
    # system's zoneinfo directory ("localtime", "posixrules", "right/UTC" load
    # in Python): such a zone would make every hot-path request of the org fail.
    with connection.cursor() as cursor:
        cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = %s)", [value])
        if not cursor.fetchone()[0]:
            raise ValidationError(f"Unknown time zone: {value}")


# A model allow-list entry: an exact model name or a family pattern, a prefix
# ending in "*" ("claude-opus-*"), stored lower-cased; matched against the
# name a request sends, lower-cased (tollgate_model_refusal, 50_holds.sql).
# Empty list: every model is allowed.
MAX_ALLOWED_MODELS = 100


def validate_allowed_models(value: list[str]) -> None:
    """Entries as normalize_allowed_models leaves them."""
    if len(value) > MAX_ALLOWED_MODELS:
        raise ValidationError(f"At most {MAX_ALLOWED_MODELS} models.")
    for entry in value:
        if not labels.is_model_pattern(entry):
            raise ValidationError(f"{entry!r} is not {labels.MODEL_PATTERN_RULE}.")


def normalize_allowed_models(value: list[str]) -> list[str]:
    """Lower-cased, trimmed, duplicates dropped, sorted: one spelling per list."""
    return sorted({labels.normalize_model_pattern(entry) for entry in value})


# Tag names an org reports on (GET /v1/usage?group_by=tag:NAME, the dashboard's
# tag breakdown, the chargeback report): aggregate_usage keeps exact rollups
# per value of each (tracking.TagRollup, docs/architecture.md "Tag rollups").
# Each name multiplies the tag rollups' rows, hence the cap. No comma (group_by
# lists are comma-separated), no "=" (the dashboard's tag=NAME=VALUE filter).
MAX_REPORT_TAGS = 10
_REPORT_TAG = re.compile(r"[A-Za-z0-9_.:/@+-]{1,64}")


def validate_report_tags(value: list[str]) -> None:
    if len(value) > MAX_REPORT_TAGS:
        raise ValidationError(f"At most {MAX_REPORT_TAGS} tag names.")
    for name in value:
        if not _REPORT_TAG.fullmatch(name):
            raise ValidationError(
                f"{name!r} is not a reportable tag name: 1 to 64 letters, digits or _ . : / @ + -."
            )


def allowed_models_field() -> ArrayField:
    return ArrayField(
        models.CharField(max_length=129),
        default=list,
        db_default=models.Value([], output_field=ArrayField(models.CharField(max_length=129))),
        blank=True,
        help_text="Models this may use: exact names or family patterns like 'claude-opus-*' "
        "(empty: every model). Other models get 403 model_not_allowed.",
    )


class Organization(models.Model):
    class FailMode(models.TextChoices):
        DEFAULT = "", "Use the server default (BUDGET_FAIL_MODE)"
        OPEN = "open", "Open: allow, marked degraded"
        CLOSED = "closed", "Closed: deny with 503"

    class UnpricedPolicy(models.TextChoices):
        FALLBACK = "fallback", "Fallback: charge the hold, or a conservative per-token rate"
        DENY = "deny", "Deny: checks and holds of a model with no price get 422"
        ZERO = "zero", "Zero: usage with no price costs nothing until repriced"

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200, blank=True)
    # Checked in clean(), not as a field validator: a validator is named in
    # the migrations, which then import this module.
    time_zone = models.CharField(max_length=64, default="UTC")
    strict = models.BooleanField(
        default=False, help_text="Reject unknown teams and users (404) instead of registering them."
    )
    fail_mode = models.CharField(max_length=6, choices=FailMode.choices, blank=True, default="")
    # Where it may point is checked in clean() (budgets/webhooks.py).
    webhook_url = models.URLField(
        blank=True, help_text="Budget alerts are POSTed here as JSON (with a Slack-style 'text')."
    )
    max_request_usd = models.DecimalField(
        **MONEY,
        null=True,
        blank=True,
        validators=[MinValueValidator(ZERO)],
        help_text="A check or hold whose estimate is larger gets 402 request_too_expensive (empty: no cap).",
    )
    # db_default too: the SQL functions and tests insert rows without naming it.
    alerts_count_holds = models.BooleanField(
        default=False,
        db_default=False,
        help_text="Judge alert thresholds on spend plus open holds (default: settled spend only).",
    )
    # What usage of a model with no known price costs (budgets/sql/functions/
    # 20_pricing.sql, tollgate_fallback_cost); read by the SQL at each call.
    unpriced_policy = models.CharField(
        max_length=8, choices=UnpricedPolicy.choices, default=UnpricedPolicy.FALLBACK
    )
    fallback_input_per_token = models.DecimalField(
        **PER_TOKEN,
        null=True,
        blank=True,
        validators=[MinValueValidator(ZERO)],
        help_text="Fallback rate of input (and cache) tokens of an unpriced model "
        "(empty: the catalog's highest).",
    )
    fallback_output_per_token = models.DecimalField(
        **PER_TOKEN,
        null=True,
        blank=True,
        validators=[MinValueValidator(ZERO)],
        help_text="Fallback rate of output (and reasoning) tokens of an unpriced model "
        "(empty: the catalog's highest).",
    )
    allowed_models = allowed_models_field()
    report_tags = ArrayField(
        models.CharField(max_length=64),
        default=list,
        db_default=models.Value([], output_field=ArrayField(models.CharField(max_length=64))),
        blank=True,
        help_text="Tag names reported on: usage can be grouped by their values, exactly "
        f"(at most {MAX_REPORT_TAGS}; each adds rollup rows). A new name is built from the "
        "raw events still kept on aggregate_usage's next pass.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.CheckConstraint(
                condition=Q(unpriced_policy__in=["fallback", "deny", "zero"]),
                name="org_unpriced_policy_valid",
                violation_error_message="The unpriced policy must be fallback, deny or zero.",
            ),
            models.CheckConstraint(
                condition=(
                    Q(fallback_input_per_token__isnull=True) | Q(fallback_input_per_token__gte=0)
                )
                & (Q(fallback_output_per_token__isnull=True) | Q(fallback_output_per_token__gte=0)),
                name="org_fallback_rates_non_negative",
                violation_error_message="Fallback prices must be zero or more.",
            ),
        ]

    def __str__(self) -> str:
        return self.slug

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        _clean_allowed_models(self, errors)
        _clean_report_tags(self, errors)
        try:
            validate_time_zone(self.time_zone)
        except ValidationError as exc:
            errors["time_zone"] = exc.messages
        if self.webhook_url and self._webhook_url_changed():
            try:
                webhooks.check_url(self.webhook_url)
            except webhooks.TargetRefused as exc:
                errors["webhook_url"] = [str(exc)]
        if errors:
            raise ValidationError(errors)

    def _webhook_url_changed(self) -> bool:
        """A URL already saved is checked again at each delivery; checking it
        only when it changes keeps a DNS hiccup from blocking every other edit."""
        if self.pk is None:
            return True
        saved = Organization.objects.filter(pk=self.pk).values_list("webhook_url", flat=True)
        return list(saved) != [self.webhook_url]


def _clean_report_tags(org: Organization, errors: dict[str, list[str]]) -> None:
    value = org.report_tags
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        errors["report_tags"] = ["A list of tag names."]
        return
    # Exact names (tags are matched as sent), duplicates dropped, sorted.
    org.report_tags = sorted({name.strip() for name in value})
    try:
        validate_report_tags(org.report_tags)
    except ValidationError as exc:
        errors["report_tags"] = exc.messages


def _clean_allowed_models(obj: models.Model, errors: dict[str, list[str]]) -> None:
    value = obj.allowed_models
    if not isinstance(value, list) or not all(isinstance(entry, str) for entry in value):
        errors["allowed_models"] = ["A list of model names or patterns."]
        return
    normalized = normalize_allowed_models(value)
    try:
        validate_allowed_models(normalized)
    except ValidationError as exc:
        errors["allowed_models"] = exc.messages
    else:
        obj.allowed_models = normalized


class Team(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="teams")
    # The gateway's own identifier for the team.
    slug = models.CharField(max_length=128)
    name = models.CharField(max_length=200, blank=True)
    max_request_usd = models.DecimalField(
        **MONEY,
        null=True,
        blank=True,
        validators=[MinValueValidator(ZERO)],
        help_text="The largest estimate one request of this team may hold (empty: no cap).",
    )
    allowed_models = allowed_models_field()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["org", "slug"]
        constraints = [
            models.UniqueConstraint(
                fields=["org", "slug"],
                name="team_unique_slug",
                violation_error_message="This organization already has a team with this slug.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.org.slug}/{self.slug}"

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        _clean_allowed_models(self, errors)
        if errors:
            raise ValidationError(errors)


class EndUser(models.Model):
    """A user of the gateway (not a Django login): the caller's `user` id."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="end_users")
    external_id = models.CharField(max_length=128)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["org", "external_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["org", "external_id"],
                name="enduser_unique_external_id",
                violation_error_message="This organization already has a user with this id.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.org.slug}/{self.external_id}"


class Budget(models.Model):
    class Scope(models.TextChoices):
        ORG = "org"
        TEAM = "team"
        USER = "user"
        KEY = "key"
        TAG = "tag"

    class Period(models.TextChoices):
        DAY = "day"
        WEEK = "week"
        MONTH = "month"
        TOTAL = "total"

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="budgets")
    scope = models.CharField(max_length=4, choices=Scope.choices)
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE)
    user = models.ForeignKey(EndUser, null=True, blank=True, on_delete=models.CASCADE)
    # A budget on one API key (scope "key"): every hold and event made with it.
    key = models.ForeignKey("ApiKey", null=True, blank=True, on_delete=models.CASCADE)
    # A tag budget's subject (scope "tag"): "name=value", '' for the other scopes.
    tag = models.CharField(
        max_length=labels.MAX_TAG_PAIR_LENGTH,
        blank=True,
        default="",
        db_default="",
        help_text="Scope tag only: name=value (e.g. customer=acme).",
    )
    # Counts and holds only the spend of matching models ('' = all models):
    # an exact name or a family pattern, matched as allow-lists match.
    model_filter = models.CharField(
        max_length=labels.MAX_MODEL_PATTERN_LENGTH,
        blank=True,
        default="",
        db_default="",
        help_text="Count only these models: an exact name or a family pattern like "
        "'claude-opus-*' (empty: every model).",
    )
    period = models.CharField(max_length=5, choices=Period.choices)
    limit_usd = models.DecimalField(**MONEY)
    soft_limit_pct = models.PositiveSmallIntegerField(default=80)
    enforce = models.BooleanField(default=True, help_text="Deny at the limit; off = monitor only.")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["org", "scope", "period"]
        constraints = [
            models.CheckConstraint(
                condition=Q(limit_usd__gte=0),
                name="budget_limit_non_negative",
                violation_error_message="The limit must be zero or more.",
            ),
            models.CheckConstraint(
                condition=Q(soft_limit_pct__gte=0, soft_limit_pct__lte=100),
                name="budget_soft_limit_pct_range",
                violation_error_message="The soft limit is a percentage from 0 to 100.",
            ),
            models.CheckConstraint(
                condition=(
                    Q(scope="org", team__isnull=True, user__isnull=True, key__isnull=True, tag="")
                    | Q(
                        scope="team",
                        team__isnull=False,
                        user__isnull=True,
                        key__isnull=True,
                        tag="",
                    )
                    | Q(
                        scope="user",
                        team__isnull=True,
                        user__isnull=False,
                        key__isnull=True,
                        tag="",
                    )
                    | Q(
                        scope="key", team__isnull=True, user__isnull=True, key__isnull=False, tag=""
                    )
                    | (
                        Q(scope="tag", team__isnull=True, user__isnull=True, key__isnull=True)
                        & ~Q(tag="")
                    )
                ),
                name="budget_scope_matches_subject",
                violation_error_message=(
                    "An org budget has no team, user, key or tag; a team budget a team only, "
                    "a user budget a user only, a key budget a key only, a tag budget a tag only."
                ),
            ),
            models.CheckConstraint(
                condition=Q(model_filter=Lower("model_filter")),
                name="budget_model_filter_lower_case",
                violation_error_message="A model filter is stored lower-cased.",
            ),
            # One budget per subject, model filter and period; NULLS NOT DISTINCT
            # so that two org-scope budgets (team and user NULL) also collide.
            # The hot path's upsert names these columns in ON CONFLICT.
            models.UniqueConstraint(
                fields=["org", "scope", "team", "user", "key", "tag", "model_filter", "period"],
                name="budget_unique_scope_period",
                violation_error_message="This subject already has a budget for this period.",
                nulls_distinct=False,
            ),
        ]
        indexes = [
            # Used by tollgate_applicable: an org's tag budgets that match a
            # request's tags, without reading the org's other tag budgets
            # (one per customer is thousands).
            models.Index(fields=["org", "tag"], condition=Q(scope="tag"), name="budget_org_tag"),
        ]

    def __str__(self) -> str:
        model = f" [{self.model_filter}]" if self.model_filter else ""
        return (
            f"{self.org.slug} {self.scope}:{self.subject_id}{model} {self.period} "
            f"{usd_for_people(self.limit_usd)}"
        )

    @property
    def subject_id(self) -> str:
        if self.scope == self.Scope.TEAM and self.team_id:
            return self.team.slug
        if self.scope == self.Scope.USER and self.user_id:
            return self.user.external_id
        if self.scope == self.Scope.KEY and self.key_id:
            return self.key.lookup_id
        if self.scope == self.Scope.TAG:
            return self.tag
        return self.org.slug

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        self.model_filter = labels.normalize_model_pattern(self.model_filter or "")
        if self.model_filter and not labels.is_model_pattern(self.model_filter):
            errors["model_filter"] = [f"Not {labels.MODEL_PATTERN_RULE}."]
        if self.scope == self.Scope.TAG:
            if labels.split_tag(self.tag or "") is None:
                errors["tag"] = [f"A tag budget's tag is name=value. {labels.TAG_RULE}"]
        elif self.tag:
            errors["tag"] = ["Only a tag budget has a tag."]
        if errors:
            raise ValidationError(errors)
        subjects = {"team": self.team_id, "user": self.user_id, "key": self.key_id}
        if self.scope in (self.Scope.ORG, self.Scope.TAG) and any(subjects.values()):
            raise ValidationError(f"An {self.scope} budget has no team, user or key.")
        if self.scope in subjects and (
            not subjects[self.scope] or any(v for name, v in subjects.items() if name != self.scope)
        ):
            raise ValidationError(
                f"A {self.scope} budget needs a {self.scope} (and no other subject)."
            )
        for related in (self.team, self.user, self.key):
            if related is not None and self.org_id and related.org_id != self.org_id:
                raise ValidationError(
                    "Team, user and key must belong to the budget's organization."
                )

    def current_window(self) -> BudgetWindow | None:
        """The window of the period that contains now (None before its first use)."""
        if not hasattr(self, "_current_window"):
            now = timezone.now()
            self._current_window = self.windows.filter(
                period_start__lte=now, period_end__gt=now
            ).first()
        return self._current_window


class BudgetWindow(models.Model):
    """Spend counters of one budget for one period (e.g. one local day).

    `period_start` is -infinity for the `total` period. Windows are created by
    the hot path on first use of a period.
    """

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="windows")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    spent = models.DecimalField(**MONEY, default=ZERO)
    reserved = models.DecimalField(**MONEY, default=ZERO)
    # Whether the window's used amount was at or over each threshold when
    # alerts last judged it (tollgate_raise_alerts, under this row's lock): an
    # alert fires when one turns true, and one turns false again when the used
    # amount falls back below (a release, a reset, a reprice), so each
    # crossing fires once. The hot path creates windows in SQL: db_default.
    soft_alerted = models.BooleanField(default=False, db_default=False)
    hard_alerted = models.BooleanField(default=False, db_default=False)
    # Whether the worker's forecast has raised this window's "projected to
    # exceed" alert: once per window, never re-armed (tollgate_raise_projected_alerts).
    projected_alerted = models.BooleanField(default=False, db_default=False)

    class Meta:
        ordering = ["budget", "-period_start"]
        constraints = [
            models.UniqueConstraint(
                fields=["budget", "period_start"],
                name="window_unique_period",
                violation_error_message="This budget already has a window for this period.",
            ),
            models.CheckConstraint(
                condition=Q(spent__gte=0),
                name="window_spent_non_negative",
                violation_error_message="A window's spend cannot be negative.",
            ),
            models.CheckConstraint(
                condition=Q(reserved__gte=0),
                name="window_reserved_non_negative",
                violation_error_message="A window's held amount cannot be negative.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.budget} from {self.period_start}"


class Reservation(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        RELEASED = "released"
        SETTLED = "settled"
        EXPIRED = "expired"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="reservations")
    # No indexes on team and user: every hold inserts a row, and no hot-path
    # query looks reservations up by them (only admin, when one is deleted).
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL, db_index=False)
    user = models.ForeignKey(
        EndUser, null=True, blank=True, on_delete=models.SET_NULL, db_index=False
    )
    # The API key that took the hold: a key budget created mid-period counts it.
    key = models.ForeignKey(
        "ApiKey", null=True, blank=True, on_delete=models.SET_NULL, db_index=False
    )
    amount = models.DecimalField(**MONEY)
    # What events have settled into this hold so far: partial settlements
    # ("final": false) leave it active, holding what is left of its amount
    # (tollgate_hold_left). NULL: closed before settled amounts were kept.
    settled = models.DecimalField(**MONEY, null=True, blank=True, db_default=ZERO)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.ACTIVE)
    # The windows this hold was added to; release/settle/expiry take it back
    # from exactly these, even after the period rolled over.
    window_ids = ArrayField(models.BigIntegerField(), default=list)
    model = models.CharField(max_length=128, blank=True)
    # The request's tags ({"name": "value"}), null when it sent none: which
    # tag budgets it holds on, and what the dashboard groups holds by.
    tags = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(amount__gte=0),
                name="reservation_amount_non_negative",
                violation_error_message="A hold's amount cannot be negative.",
            ),
            models.CheckConstraint(
                condition=Q(settled__gte=0),
                name="reservation_settled_non_negative",
                violation_error_message="A hold's settled amount cannot be negative.",
            ),
        ]
        indexes = [
            # Used by tollgate_expire_reservations (the sweeper): active holds by expiry.
            models.Index(
                fields=["expires_at"],
                condition=Q(status="active"),
                name="reservation_active_expiry",
            ),
            # Used by run_worker's pruning: closed holds by when they closed.
            # A hold is inserted active, so holds never enter it; a close is an
            # update that already rewrites the row's index entries (status is
            # in the index above), and adds one here, at the right edge.
            models.Index(
                fields=["closed_at"],
                condition=~Q(status="active"),
                name="reservation_closed",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} {usd_for_people(self.amount)} {self.status}"


KEY_PREFIX = "tg_"


def hash_key_secret(secret: str) -> str:
    """Keys carry 256 bits of randomness, so a plain SHA-256 is enough (no
    password stretching needed) and lets the hot path hash them cheaply."""
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKey(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="api_keys")
    team = models.ForeignKey(
        Team,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        help_text="Limit the key to one team.",
    )
    name = models.CharField(max_length=200, blank=True)
    # Public part of the key, used to find the row; the secret is only stored hashed.
    lookup_id = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    is_admin = models.BooleanField(default=False, help_text="May manage budgets through the API.")
    max_request_usd = models.DecimalField(
        **MONEY,
        null=True,
        blank=True,
        validators=[MinValueValidator(ZERO)],
        help_text="The largest estimate one request with this key may hold (empty: no cap).",
    )
    allowed_models = allowed_models_field()
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["org", "-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{KEY_PREFIX}{self.lookup_id}_… ({self.name or self.org.slug})"

    @classmethod
    def generate(cls, **fields) -> tuple[ApiKey, str]:
        """Create (unsaved) a key and return it with the full secret, shown once."""
        lookup_id = secrets.token_hex(6)
        secret = f"{KEY_PREFIX}{lookup_id}_{secrets.token_urlsafe(32)}"
        return cls(lookup_id=lookup_id, key_hash=hash_key_secret(secret), **fields), secret

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        _clean_allowed_models(self, errors)
        if errors:
            raise ValidationError(errors)

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(self.key_hash, hash_key_secret(secret))

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


def parse_key(secret: str) -> str | None:
    """Return the lookup id of a well-formed key, else None."""
    if not secret.startswith(KEY_PREFIX) or len(secret) > 200:
        return None
    lookup_id, sep, rest = secret[len(KEY_PREFIX) :].partition("_")
    if not sep or len(lookup_id) != 12 or not rest:
        return None
    return lookup_id


class Alert(models.Model):
    """A budget window crossed its soft limit or hit its hard limit, or an
    organization sent a model that has no price.

    Recorded by the hot path in the transaction that caused it: a budget
    alert once per crossing (the window's `soft_alerted` / `hard_alerted`: a
    window that falls back below and crosses again gets another), an
    unpriced-model alert once per organization and model name ever (the
    unique index `alert_unpriced_model_once`), by the recording of the first
    event of that model that no price entry resolves. Delivered to the org's
    webhook by `manage.py deliver_alerts` from this row (an outbox). Shown on
    the dashboard until acknowledged.
    """

    class Kind(models.TextChoices):
        SOFT = "soft", "Soft limit reached"
        HARD = "hard", "Hard limit reached"
        PROJECTED = "projected", "Projected to exceed"
        UNPRICED_MODEL = "unpriced_model", "Model with no price"

    class Delivery(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed", "Failed (gave up)"
        SKIPPED = "skipped", "Skipped (no webhook)"

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="alerts")
    # A budget alert's budget and window; null for an unpriced model.
    budget = models.ForeignKey(
        Budget, null=True, blank=True, on_delete=models.CASCADE, related_name="alerts"
    )
    window = models.ForeignKey(
        BudgetWindow, null=True, blank=True, on_delete=models.CASCADE, related_name="alerts"
    )
    kind = models.CharField(max_length=14, choices=Kind.choices)
    # The name as sent, of an unpriced-model alert ("" for a budget alert).
    model = models.CharField(max_length=128, blank=True, default="", db_default="")
    limit_usd = models.DecimalField(**MONEY, null=True, blank=True)
    used_usd = models.DecimalField(
        **MONEY,
        help_text="What counted when it crossed: spent, plus reserved if the org counts holds; "
        "for an unpriced model, what its first requests were charged.",
    )
    # A projected alert's forecast when it fired: the window's spend at its
    # end, and when it runs out at that rate (null: not before the end).
    projected_usd = models.DecimalField(**MONEY, null=True, blank=True)
    runs_out_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    delivery_status = models.CharField(
        max_length=9, choices=Delivery.choices, default=Delivery.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(
                        kind__in=["soft", "hard", "projected"],
                        budget__isnull=False,
                        window__isnull=False,
                        limit_usd__isnull=False,
                        model="",
                    )
                    | (
                        Q(
                            kind="unpriced_model",
                            budget__isnull=True,
                            window__isnull=True,
                            limit_usd__isnull=True,
                        )
                        & ~Q(model="")
                    )
                ),
                name="alert_kind_matches_subject",
            ),
            # Once per org and model name: the recording of events inserts
            # with ON CONFLICT on this index, which also makes concurrent
            # first uses of one name raise one alert across processes.
            models.UniqueConstraint(
                fields=["org", "model"],
                condition=Q(kind="unpriced_model"),
                name="alert_unpriced_model_once",
            ),
        ]
        indexes = [
            # Used by deliver_alerts: due deliveries.
            models.Index(
                fields=["next_attempt_at"], condition=Q(delivery_status="pending"), name="alert_due"
            ),
            # Used by the dashboard summary: an org's open alerts.
            models.Index(
                fields=["org", "-created_at"],
                condition=Q(acknowledged_at__isnull=True),
                name="alert_open",
            ),
        ]

    def __str__(self) -> str:
        if self.kind == self.Kind.UNPRICED_MODEL:
            return f"{self.get_kind_display()}: {self.org.slug} {self.model}"
        return f"{self.get_kind_display()}: {self.budget}"


class BudgetForecast(models.Model):
    """The spend profile a budget is forecast with, computed by the worker
    from the hourly rollups (tollgate_forecast_refresh, once an hour per org)
    and applied to the live window by every read (tollgate_forecast; see
    docs/forecasts.md).

    `hourly_usd[i]` is the expected spend of the hour at hour-of-week i of the
    org's zone (0 = Monday 00:00); `cumulative_usd[i]` the sum of the first i,
    so that any stretch of hours costs two array reads.
    """

    class Basis(models.TextChoices):
        HOUR_OF_WEEK = "hour_of_week", "Hour-of-week profile of the trailing weeks"
        RECENT_RATE = "recent_rate", "Flat rate of the recent hours"

    budget = models.OneToOneField(
        Budget, primary_key=True, on_delete=models.CASCADE, related_name="forecast"
    )
    # The profile covers the complete hours before this one.
    as_of = models.DateTimeField()
    basis = models.CharField(max_length=12, choices=Basis.choices)
    weeks = models.PositiveSmallIntegerField()
    history_hours = models.PositiveIntegerField()
    hourly_usd = ArrayField(models.DecimalField(**MONEY), size=168)
    cumulative_usd = ArrayField(models.DecimalField(**MONEY), size=169)

    def __str__(self) -> str:
        return f"{self.budget} forecast as of {self.as_of}"


class AlertDeliveryAttempt(models.Model):
    """One try to deliver an alert to its webhook."""

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="delivery_attempts")
    attempted_at = models.DateTimeField(default=timezone.now)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-attempted_at"]

    def __str__(self) -> str:
        return f"{self.alert_id} @ {self.attempted_at:%Y-%m-%d %H:%M:%S} {self.status_code or self.error}"


class AuditEntry(models.Model):
    """One change to a budget, an API key, an organization's settings or the
    price catalog: who, when, what, the values before and after.

    Written in the transaction of the change it records (by the SQL function
    for API changes, by `budgets.audit.audit_record` for the sync side), so a
    change that rolls back leaves no entry. Append-only: the database refuses
    UPDATE and DELETE of this table (a trigger, migration 0002).
    """

    class ActorKind(models.TextChoices):
        KEY = "key", "API key"
        USER = "user", "Login"
        COMMAND = "command", "Management command"
        SYSTEM = "system", "System"

    # Null for changes of no one organization (the price catalog). No foreign
    # keys to what it records: the record outlives the key, the budget or the
    # login it names, and a cascade could otherwise delete history.
    org = models.ForeignKey(
        Organization,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,  # audit_org_newest leads with org
    )
    at = models.DateTimeField(default=timezone.now)
    actor_kind = models.CharField(max_length=7, choices=ActorKind.choices)
    actor_key_id = models.BigIntegerField(null=True, blank=True)
    actor_user_id = models.BigIntegerField(null=True, blank=True)
    # The login's username, the key's lookup id and name, or the command's
    # name, as they were at the time.
    actor_label = models.CharField(max_length=200, blank=True)
    # What changed: object_type "budget", "organization", "team", "api_key"
    # or "prices", and object_id its name in the API ("team/search/day" for a
    # budget, the slug for an organization or a team, the key's id).
    object_type = models.CharField(max_length=32)
    object_id = models.CharField(max_length=400)
    action = models.CharField(max_length=32)
    old = models.JSONField(null=True, blank=True)
    new = models.JSONField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    client_addr = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "audit entries"
        indexes = [
            # Used by GET /v1/audit: an org's entries, newest first (keyset on id).
            models.Index(fields=["org", "-id"], name="audit_org_newest"),
            # Used by GET /v1/audit?object=… and a budget's history.
            models.Index(
                fields=["org", "object_type", "object_id", "-id"], name="audit_org_object"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.object_type}:{self.object_id} {self.action}"
