"""Pages where an organization's people change it: budgets (org admins and
team leads), and API keys, the webhook and members (org admins).

A budget change or deletion and a key's revocation go through a
confirmation page (the form's values posted again with `confirmed=1`);
every change goes through budgets/services.py (dashboard/services.py for
members), which
validates, makes the change and records it in the audit log with the
signed-in login as the actor, in one transaction. Who may change what is
dashboard/access.py's `powers_for`; a refusal is a 403 page.
"""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from budgets.admin import constraint_words
from budgets.audit import Actor, budget_address, budget_values
from budgets.models import ApiKey, AuditEntry, Budget, Organization
from budgets.services import (
    api_key_create,
    api_key_revoke,
    budget_create,
    budget_delete,
    budget_update,
    organization_update,
)
from config.hotpath.errors import ApiError
from config.hotpath.inputs import usd_for_people
from dashboard import access
from dashboard.forms import (
    BudgetForm,
    BudgetLimitsForm,
    KeyCreateForm,
    MemberAddForm,
    MemberRoleForm,
    WebhookForm,
)
from dashboard.models import Membership
from dashboard.services import membership_add, membership_update

READ_ONLY = "This login may only read this organization's dashboard."
NOT_YOUR_TEAM = "A team lead may only change the budgets of the teams they lead."


def org_and_powers(request: HttpRequest) -> tuple[Organization, access.Powers]:
    """The page's org, chosen as for the dashboard (`org=`; staff without it
    land where the dashboard lands them), and the login's powers in it."""
    requested = request.GET.get("org") or None
    if request.user.is_staff and requested is None:
        requested = access.landing_org(request.user)
    try:
        org = access.organization_for(request.user, requested)
    except ApiError as exc:
        if exc.status == 404:
            raise Http404(exc.message) from None
        raise PermissionDenied(exc.message) from None
    return org, access.powers_for(request.user, org)


def dashboard_url(org: Organization) -> str:
    return "/?" + urlencode({"org": org.slug})


def budget_url(action: str, budget: Budget) -> str:
    query = {
        "org": budget.org.slug,
        "scope": budget.scope,
        "subject": budget.subject_id,
        "period": budget.period,
    }
    if budget.model_filter:
        query["model"] = budget.model_filter
    return f"/dashboard/budgets/{action}?{urlencode(query)}"


def _budget_at(request: HttpRequest, org: Organization) -> Budget:
    """The budget the query names by its address (scope, subject, period, and
    its model filter: none when absent)."""
    scope, subject, period, model = (
        request.GET.get(k, "") for k in ("scope", "subject", "period", "model")
    )
    subject_of = {
        "org": Q(team=None, user=None, key=None) & Q(org__slug=subject),
        "team": Q(team__slug=subject),
        "user": Q(user__external_id=subject),
        "key": Q(key__lookup_id=subject),
        "tag": Q(tag=subject),
    }
    if scope not in subject_of:
        raise Http404("No such budget.")
    budget = (
        Budget.objects.select_related("org", "team", "user", "key")
        .filter(subject_of[scope], org=org, scope=scope, period=period, model_filter=model)
        .first()
    )
    if budget is None:
        raise Http404(f"No {period} budget for {scope} '{subject}' in {org.slug}.")
    return budget


def _editable_budget(request: HttpRequest) -> tuple[Organization, Budget]:
    """The org and the budget the query names, if this login may change it
    (PermissionDenied otherwise)."""
    org, powers = org_and_powers(request)
    if not powers.edits_budgets:
        raise PermissionDenied(READ_ONLY)
    budget = _budget_at(request, org)
    if not powers.may_edit_budget(budget.scope, budget.team_id):
        raise PermissionDenied(NOT_YOUR_TEAM)
    return org, budget


def _values_for_people(values: dict) -> list[tuple[str, str]]:
    return [
        ("Limit", usd_for_people(Decimal(values["limit_usd"]))),
        ("Soft limit", f"{values['soft_limit_pct']}%"),
        ("Enforced", "yes" if values["enforce"] else "no (monitor only)"),
    ]


def _history(org: Organization, budget: Budget) -> list[AuditEntry]:
    return list(
        AuditEntry.objects.filter(
            org=org, object_type="budget", object_id=budget_address(budget)
        ).order_by("-id")[:10]
    )


def _save(request: HttpRequest, form, save) -> bool:
    """Run a service's save; its refusal (a rule, or a row changed meanwhile)
    goes onto the form in words. True if saved."""
    try:
        save()
    except ValidationError as exc:
        form._update_errors(exc)
        return False
    except IntegrityError as exc:
        form.add_error(None, constraint_words(Budget, exc))
        return False
    return True


@login_required
@require_http_methods(["GET", "POST"])
def budget_new(request: HttpRequest) -> HttpResponse:
    org, powers = org_and_powers(request)
    if not powers.edits_budgets:
        raise PermissionDenied(READ_ONLY)
    form = BudgetForm(
        request.POST if request.method == "POST" else None,
        instance=Budget(org=org),
        powers=powers,
    )
    context = {"org": org, "form": form, "title": "New budget", "cancel": dashboard_url(org)}
    if request.method == "POST" and form.is_valid() and "back" not in request.POST:
        budget = form.instance
        if request.POST.get("confirmed") != "1":
            new = budget_values(budget)
            rows = [("Budget", budget_address(budget)), *_values_for_people(new)]
            return render(
                request,
                "dashboard/budget_confirm.html",
                {**context, "rows": rows, "verb": "Create"},
            )
        if _save(request, form, lambda: budget_create(budget, actor=Actor.of_request(request))):
            messages.success(request, f"Budget {budget_address(budget)} created.")
            return redirect(budget_url("edit", budget))
    status = 422 if request.method == "POST" and form.errors else 200
    return render(request, "dashboard/budget_form.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def budget_edit(request: HttpRequest) -> HttpResponse:
    org, budget = _editable_budget(request)
    old = budget_values(budget)
    form = BudgetLimitsForm(request.POST if request.method == "POST" else None, instance=budget)
    context = {
        "org": org,
        "form": form,
        "budget": budget,
        "address": budget_address(budget),
        "title": f"Budget {budget_address(budget)}",
        "cancel": dashboard_url(org),
        "delete_url": budget_url("delete", budget),
        "history": _history(org, budget),
    }
    if request.method == "POST" and form.is_valid() and "back" not in request.POST:
        if request.POST.get("confirmed") != "1":
            new = budget_values(budget)
            rows = [
                (label, before, after)
                for (label, before), (_, after) in zip(
                    _values_for_people(old), _values_for_people(new), strict=True
                )
            ]
            return render(
                request,
                "dashboard/budget_confirm.html",
                {**context, "changes": rows, "unchanged": old == new, "verb": "Save"},
            )
        if _save(request, form, lambda: budget_update(budget, actor=Actor.of_request(request))):
            messages.success(request, f"Budget {budget_address(budget)} saved.")
            return redirect(budget_url("edit", budget))
    status = 422 if request.method == "POST" and form.errors else 200
    return render(request, "dashboard/budget_form.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def budget_remove(request: HttpRequest) -> HttpResponse:
    org, budget = _editable_budget(request)
    if request.method == "POST" and request.POST.get("confirmed") == "1":
        budget_delete(budget, actor=Actor.of_request(request))
        messages.success(request, f"Budget {budget_address(budget)} deleted.")
        return redirect(dashboard_url(org))
    return render(
        request,
        "dashboard/budget_delete.html",
        {
            "org": org,
            "budget": budget,
            "address": budget_address(budget),
            "rows": _values_for_people(budget_values(budget)),
            "cancel": budget_url("edit", budget),
        },
    )


# --- The organization: API keys, webhook, members (org admins) -------------------


def _org_admin(request: HttpRequest) -> Organization:
    org, powers = org_and_powers(request)
    if not powers.is_org_admin:
        raise PermissionDenied("Only an org admin manages API keys, the webhook and members.")
    return org


def settings_url(org: Organization) -> str:
    return "/dashboard/org?" + urlencode({"org": org.slug})


def _settings_page(
    request: HttpRequest, org: Organization, status: int = 200, **forms_and_more
) -> HttpResponse:
    bound = forms_and_more.pop("member_forms", {})  # a member's form sent back with errors
    members = list(
        Membership.objects.filter(org=org)
        .select_related("user")
        .prefetch_related("teams")
        .order_by("user__username")
    )
    context = {
        "org": org,
        "keys": ApiKey.objects.filter(org=org).select_related("team").order_by("-created_at"),
        "key_form": KeyCreateForm(org=org),
        "webhook_form": WebhookForm(initial={"webhook_url": org.webhook_url}),
        "member_form": MemberAddForm(),
        "members": [
            (
                m,
                bound.get(m.pk)
                or MemberRoleForm(
                    org=org,
                    initial={"role": m.role, "teams": list(m.teams.all())},
                    auto_id=f"id_member{m.pk}_%s",
                ),
            )
            for m in members
        ],
        "dashboard": dashboard_url(org),
        **forms_and_more,
    }
    response = render(request, "dashboard/org_settings.html", context, status=status)
    response["Cache-Control"] = "no-store"  # a new key's secret is on it once
    return response


@login_required
@require_http_methods(["GET"])
def org_settings(request: HttpRequest) -> HttpResponse:
    return _settings_page(request, _org_admin(request))


@login_required
@require_http_methods(["POST"])
def key_create(request: HttpRequest) -> HttpResponse:
    org = _org_admin(request)
    form = KeyCreateForm(request.POST, org=org)
    if not form.is_valid():
        return _settings_page(request, org, 422, key_form=form)
    team = form.cleaned_data["team"]
    key, secret = api_key_create(
        org=org,
        team_slug=team.slug if team else None,
        is_admin=form.cleaned_data["is_admin"],
        name=form.cleaned_data["name"],
        actor=Actor.of_request(request),
    )
    return _settings_page(request, org, 201, new_key=key, new_secret=secret)


@login_required
@require_http_methods(["GET", "POST"])
def key_revoke(request: HttpRequest) -> HttpResponse:
    org = _org_admin(request)
    key = (
        ApiKey.objects.filter(org=org, lookup_id=request.GET.get("key", ""))
        .select_related("team")
        .first()
    )
    if key is None:
        raise Http404("No such API key in this organization.")
    if request.method == "POST" and request.POST.get("confirmed") == "1":
        if api_key_revoke(key=key, actor=Actor.of_request(request)):
            messages.success(request, f"Key {key.lookup_id} revoked.")
        return redirect(settings_url(org))
    return render(
        request,
        "dashboard/key_revoke.html",
        {"org": org, "key": key, "cancel": settings_url(org)},
    )


@login_required
@require_http_methods(["POST"])
def webhook_set(request: HttpRequest) -> HttpResponse:
    org = _org_admin(request)
    form = WebhookForm(request.POST)
    if form.is_valid():
        try:
            organization_update(
                org_id=org.pk,
                changes={"webhook_url": form.cleaned_data["webhook_url"]},
                actor=Actor.of_request(request),
            )
        except ValidationError as exc:
            for message in exc.message_dict.get("webhook_url", exc.messages):
                form.add_error("webhook_url", message)
    if form.errors:
        return _settings_page(request, org, 422, webhook_form=form)
    messages.success(request, "Webhook saved.")
    return redirect(settings_url(org))


@login_required
@require_http_methods(["POST"])
def member_add(request: HttpRequest) -> HttpResponse:
    org = _org_admin(request)
    form = MemberAddForm(request.POST)
    if form.is_valid():
        try:
            membership_add(
                org=org,
                username=form.cleaned_data["username"],
                role=form.cleaned_data["role"],
                actor=Actor.of_request(request),
            )
        except ValidationError as exc:
            for message in exc.message_dict.get("username", exc.messages):
                form.add_error("username", message)
    if form.errors:
        return _settings_page(request, org, 422, member_form=form)
    messages.success(request, f"{form.cleaned_data['username']} added.")
    return redirect(settings_url(org))


@login_required
@require_http_methods(["POST"])
def member_update(request: HttpRequest) -> HttpResponse:
    org = _org_admin(request)
    membership = (
        Membership.objects.filter(org=org, user__username=request.GET.get("user", ""))
        .select_related("user")
        .first()
    )
    if membership is None:
        raise Http404("No such member of this organization.")
    if membership.user_id == request.user.pk:
        # An org admin who demoted themselves could not undo it.
        raise PermissionDenied("Your own role is changed by another org admin (or staff).")
    form = MemberRoleForm(request.POST, org=org, auto_id=f"id_member{membership.pk}_%s")
    if form.is_valid():
        try:
            membership_update(
                membership=membership,
                role=form.cleaned_data["role"],
                teams=form.cleaned_data["teams"],
                actor=Actor.of_request(request),
            )
        except ValidationError as exc:
            form.add_error(None, exc)
    if form.errors:
        return _settings_page(request, org, 422, member_forms={membership.pk: form})
    messages.success(
        request, f"{membership.user.get_username()} is now {form.cleaned_data['role']}."
    )
    return redirect(settings_url(org))
