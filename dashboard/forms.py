"""Forms of the dashboard's editing pages (dashboard/org_views.py). The rules
of a budget are the model's (Budget.clean and its constraints) and the
services' (budgets/services.py); these forms narrow the choices to what the
login may change and say what is wrong next to the field."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator

from budgets.admin import MoneyInput
from budgets.models import ApiKey, Budget, EndUser, Organization, Team
from dashboard.access import Powers
from dashboard.models import Membership

SUBJECT_FIELDS = ("team", "user", "key", "tag")


def _constraint_words(name: str) -> str:
    (constraint,) = (c for c in Budget._meta.constraints if c.name == name)
    return constraint.violation_error_message


class BudgetLimitsForm(forms.ModelForm):
    """What may change in a budget that exists: its subject and period are its
    address (as in PUT /v1/budgets/{scope}/{id}/{period}), the rest is here."""

    class Meta:
        model = Budget
        fields = ["limit_usd", "soft_limit_pct", "enforce"]
        widgets = {
            "limit_usd": MoneyInput(attrs={"step": "any", "min": "0", "inputmode": "decimal"})
        }
        labels = {
            "limit_usd": "Limit (USD)",
            "soft_limit_pct": "Soft limit (% of the limit)",
            "enforce": "Enforce (deny at the limit)",
        }
        help_texts = {
            "soft_limit_pct": "An alert is sent when spend reaches this share of the limit.",
            "enforce": "Off: monitor only; requests over the limit are let through.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The database's checks (Budget.Meta.constraints), said next to their
        # fields in the constraints' own words.
        self.fields["limit_usd"].validators.append(
            MinValueValidator(0, _constraint_words("budget_limit_non_negative"))
        )
        soft = self.fields["soft_limit_pct"]
        soft.widget.attrs.update(min=0, max=100)
        for validator in (MinValueValidator, MaxValueValidator):
            bound = 0 if validator is MinValueValidator else 100
            soft.validators.append(
                validator(bound, _constraint_words("budget_soft_limit_pct_range"))
            )

    def _post_clean(self) -> None:
        # The model judges a whole budget, so only once every field is valid:
        # otherwise its "needs a team" would repeat the field's own error.
        if not self.errors:
            super()._post_clean()

    def validate_unique(self) -> None:
        # The org is the page's, not a field of the form, so the form's own
        # check would leave out every constraint that names it.
        try:
            self.instance.validate_constraints()
        except ValidationError as exc:
            self._update_errors(exc)


class BudgetForm(BudgetLimitsForm):
    """A new budget of the page's org. A team lead may only pick one of their
    teams (scope team); an org admin any scope and subject of the org."""

    user = forms.CharField(
        label="User id",
        required=False,
        max_length=128,
        help_text="The end user's id, as the gateway sends it.",
    )

    class Meta(BudgetLimitsForm.Meta):
        fields = [
            "scope",
            "team",
            "user",
            "key",
            "tag",
            "model_filter",
            "period",
            *BudgetLimitsForm.Meta.fields,
        ]
        labels = {
            **BudgetLimitsForm.Meta.labels,
            "key": "API key",
            "tag": "Tag (name=value)",
            "model_filter": "Models (optional)",
        }
        help_texts = {
            "tag": "Requests carrying this tag, e.g. customer=acme.",
            "model_filter": (
                "Count and hold only this model, or a family ending in *, e.g. claude-opus-*. "
                "Empty: every model."
            ),
        }

    def __init__(self, *args: Any, powers: Powers, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        org: Organization = self.instance.org
        teams = Team.objects.filter(org=org).order_by("slug")
        if not powers.is_org_admin:
            teams = teams.filter(id__in=powers.team_ids)
            self.fields["scope"].choices = [("team", "Team")]
            del self.fields["user"], self.fields["key"], self.fields["tag"]
        else:
            keys = ApiKey.objects.filter(org=org, revoked_at__isnull=True).order_by("name")
            self.fields["key"].queryset = keys
            self.fields["key"].label_from_instance = lambda k: (
                f"{k.name or 'unnamed'} ({k.lookup_id})"
            )
            self.fields["scope"].choices = [(s.value, s.value.title()) for s in Budget.Scope]
        self.fields["team"].queryset = teams
        self.fields["team"].label_from_instance = lambda t: t.name or t.slug
        self.fields["scope"].initial = "team"

    def clean_user(self) -> EndUser | None:
        external_id = self.cleaned_data.get("user")
        if not external_id or self.data.get("scope") != "user":
            return None
        user = EndUser.objects.filter(org=self.instance.org, external_id=external_id).first()
        if user is None:
            raise ValidationError(
                f"No user '{external_id}' in this organization yet: a user appears with their "
                "first request (or set the budget with PUT /v1/budgets)."
            )
        return user

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        scope = cleaned.get("scope")
        # Only the chosen scope's subject counts; the others' inputs are left
        # over from switching the scope.
        for name in SUBJECT_FIELDS:
            if name != scope and name in self.fields:
                cleaned[name] = "" if name == "tag" else None
        if scope in SUBJECT_FIELDS and not cleaned.get(scope) and scope not in self.errors:
            what = {
                "team": "Pick the team",
                "user": "Type the id of the user",
                "key": "Pick the key",
                "tag": "Type the name=value of the tag",
            }
            self.add_error(scope, f"{what[scope]} this budget is for.")
        return cleaned


class KeyCreateForm(forms.Form):
    name = forms.CharField(max_length=200, required=False, help_text="Who or what uses it.")
    team = forms.ModelChoiceField(
        queryset=Team.objects.none(),
        required=False,
        empty_label="Any team",
        help_text="A key of one team records and checks that team only.",
    )
    is_admin = forms.BooleanField(
        required=False, label="Admin key (manages budgets through the API)"
    )

    def __init__(self, *args: Any, org: Organization, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = Team.objects.filter(org=org).order_by("slug")
        self.fields["team"].label_from_instance = lambda t: t.slug


class WebhookForm(forms.Form):
    webhook_url = forms.URLField(
        required=False,
        assume_scheme="https",
        label="Webhook URL",
        help_text="Budget alerts are POSTed here as JSON (Slack-compatible). Empty: no alerts sent.",
    )


class MemberAddForm(forms.Form):
    username = forms.CharField(max_length=150, help_text="A login staff created in Django admin.")
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.VIEWER)


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Membership.Role.choices)
    teams = forms.ModelMultipleChoiceField(
        queryset=Team.objects.none(), required=False, help_text="The teams a team lead leads."
    )

    def __init__(self, *args: Any, org: Organization, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["teams"].queryset = Team.objects.filter(org=org).order_by("slug")
        self.fields["teams"].label_from_instance = lambda t: t.slug
