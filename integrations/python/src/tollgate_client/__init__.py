"""A client of Tollgate, LLM spend governance for AI gateways.

    from tollgate_client import Tollgate

    tollgate = Tollgate("http://127.0.0.1:8000", api_key)
    with tollgate.hold(model="gpt-4o", team="search", estimate={"input_tokens": 900,
                                                                "max_output_tokens": 500}) as hold:
        response = openai_client.chat.completions.create(...)
        hold.settle(response)

`AsyncTollgate` is the same with `async`; `tollgate_client.openai.wrap` and
`tollgate_client.anthropic.wrap` do it for every call of an SDK client.
"""

from tollgate_client._core import VERSION as __version__
from tollgate_client.aio import AsyncHold, AsyncTollgate
from tollgate_client.client import Hold, Tollgate
from tollgate_client.errors import (
    BudgetExceeded,
    InvalidRequest,
    RequestTooExpensive,
    TollgateError,
    Unavailable,
)
from tollgate_client.types import (
    Budget,
    BudgetWarning,
    Decision,
    Estimate,
    Event,
    EventResult,
    Extension,
    FailurePolicy,
    FlushResult,
    Release,
    Reservation,
    Status,
)

__all__ = [
    "AsyncHold",
    "AsyncTollgate",
    "Budget",
    "BudgetExceeded",
    "BudgetWarning",
    "Decision",
    "Estimate",
    "Event",
    "EventResult",
    "Extension",
    "FailurePolicy",
    "FlushResult",
    "Hold",
    "InvalidRequest",
    "Release",
    "RequestTooExpensive",
    "Reservation",
    "Status",
    "Tollgate",
    "TollgateError",
    "Unavailable",
    "__version__",
]
