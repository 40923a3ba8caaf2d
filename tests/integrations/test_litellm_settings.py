"""The LiteLLM adapter's rules that need no proxy: its settings, who a call is
charged to, and LiteLLM's usage as Tollgate's buckets (the proxy itself:
test_litellm_proxy.py)."""

from __future__ import annotations

import pytest
from tollgate_litellm.attribution import Caller, attribute
from tollgate_litellm.settings import Settings, SettingsError
from tollgate_litellm.usage import normalized

REQUIRED = {"TOLLGATE_URL": "http://127.0.0.1:8000", "TOLLGATE_API_KEY": "tg_x"}

CALLER = Caller(
    key_alias="prod-key",
    team_alias="search",
    team_id="team-uuid",
    user_id="u-1",
    end_user="alice",
    metadata={"project": "atlas", "count": 3},
    tags=["team:research", "feature: faq ", "bare"],
)


def test_settings_come_from_the_environment_with_documented_defaults():
    settings = Settings.from_env(REQUIRED)
    assert (settings.on_unavailable, settings.refusal_status, settings.timeout_ms) == (
        "refuse",
        402,
        1000,
    )
    assert settings.team_from == ("team_alias", "team_id")
    assert (settings.hold_ttl_seconds, settings.flush_seconds) == (600, 5.0)
    custom = Settings.from_env(
        {
            **REQUIRED,
            "TOLLGATE_REFUSAL_STATUS": "429",
            "TOLLGATE_ON_UNAVAILABLE": "allow",
            "TOLLGATE_TEAM_FROM": "tag:team, key_alias",
            "TOLLGATE_FLUSH_SECONDS": "0.5",
        }
    )
    assert (custom.refusal_status, custom.on_unavailable) == (429, "allow")
    assert custom.flush_seconds == 0.5
    assert custom.team_from == ("tag:team", "key_alias")


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({}, "TOLLGATE_URL"),
        ({**REQUIRED, "TOLLGATE_ON_UNAVAILABLE": "maybe"}, "TOLLGATE_ON_UNAVAILABLE"),
        ({**REQUIRED, "TOLLGATE_REFUSAL_STATUS": "200"}, "TOLLGATE_REFUSAL_STATUS"),
        ({**REQUIRED, "TOLLGATE_TIMEOUT_MS": "fast"}, "TOLLGATE_TIMEOUT_MS"),
        ({**REQUIRED, "TOLLGATE_TEAM_FROM": "team_name"}, "TOLLGATE_TEAM_FROM"),
        ({**REQUIRED, "TOLLGATE_USER_FROM": "request_tags"}, "TOLLGATE_USER_FROM"),
        ({**REQUIRED, "TOLLGATE_HOLD_TTL_SECONDS": "7200"}, "TOLLGATE_HOLD_TTL_SECONDS"),
        ({**REQUIRED, "TOLLGATE_FLUSH_SECONDS": "0"}, "TOLLGATE_FLUSH_SECONDS"),
        ({**REQUIRED, "TOLLGATE_FLUSH_SECONDS": "nan"}, "TOLLGATE_FLUSH_SECONDS"),
        ({**REQUIRED, "TOLLGATE_FLUSH_SECONDS": "soon"}, "TOLLGATE_FLUSH_SECONDS"),
    ],
)
def test_a_bad_setting_is_refused_naming_its_variable(environ, named):
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(environ)


def test_team_and_user_come_from_the_first_source_with_a_value():
    who = attribute(
        CALLER,
        team_from=("metadata:missing", "tag:team", "team_alias"),
        user_from=("end_user",),
        tags_from=(),
    )
    assert (who.team, who.user, who.tags) == ("research", "alice", {})
    assert attribute(CALLER, team_from=("key_alias",), user_from=(), tags_from=()).team == (
        "prod-key"
    )
    assert attribute(Caller(), team_from=("team_alias",), user_from=(), tags_from=()).team is None
    # A number in the caller's metadata is a name like any other.
    assert attribute(CALLER, team_from=("metadata:count",), user_from=(), tags_from=()).team == "3"


def test_tags_map_request_tags_and_named_sources():
    who = attribute(
        CALLER, team_from=(), user_from=(), tags_from=("request_tags", "key_alias", "team_id")
    )
    assert who.tags == {
        "team": "research",
        "feature": "faq",
        "bare": "",
        "key_alias": "prod-key",
        "team_id": "team-uuid",
    }


def test_names_are_cut_and_tags_capped_to_tollgates_bounds():
    caller = Caller(team_alias="t" * 300, tags=[f"tag{i}:v" for i in range(30)])
    who = attribute(caller, team_from=("team_alias",), user_from=(), tags_from=("request_tags",))
    assert who.team == "t" * 128
    assert len(who.tags) == 20


def test_litellms_usage_becomes_disjoint_buckets():
    # LiteLLM's prompt_tokens hold the cache reads and writes; its usage also
    # carries Anthropic's cache keys, by which Tollgate would misread it.
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 300,
        "prompt_tokens_details": {"cached_tokens": 600},
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 600,
        "completion_tokens_details": {"reasoning_tokens": 50},
    }
    assert normalized(usage) == {
        "input_tokens": 300,
        "cache_read_tokens": 600,
        "cache_write_tokens": 100,
        "output_tokens": 250,
        "reasoning_tokens": 50,
    }
    assert normalized({"prompt_tokens": 12, "completion_tokens": 20})["input_tokens"] == 12
    with pytest.raises(ValueError, match="no usage"):
        normalized(None)


def test_request_tags_split_at_equals_too_and_names_with_equals_are_dropped():
    caller = Caller(tags=["env=prod", "a=b:c", "feature:x=y"])
    who = attribute(caller, team_from=(), user_from=(), tags_from=("request_tags",))
    # "a=b" as a name would make a tag budget's name=value ambiguous: Tollgate refuses it.
    assert who.tags == {"env": "prod", "feature": "x=y"}
