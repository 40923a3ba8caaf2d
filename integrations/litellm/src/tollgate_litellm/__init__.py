"""Tollgate budgets for the LiteLLM proxy.

`TollgateLogger` is a LiteLLM `CustomLogger`: it holds each call's estimate
before the upstream is called, settles the hold with LiteLLM's usage, and
releases it when the call fails or its client leaves. The proxy's config names
`tollgate_litellm.proxy.handler`, an instance set up from the environment
(settings.py); who is charged is set by attribution.py's sources.
"""

from tollgate_litellm.attribution import Attribution, Caller, attribute
from tollgate_litellm.settings import Settings, SettingsError

__all__ = ["Attribution", "Caller", "Settings", "SettingsError", "TollgateLogger", "attribute"]


def __getattr__(name: str) -> object:
    # The logger imports LiteLLM (slow, and only in the proxy's environment);
    # the settings and attribution rules stay importable without it.
    if name == "TollgateLogger":
        from tollgate_litellm.logger import TollgateLogger

        return TollgateLogger
    raise AttributeError(name)
