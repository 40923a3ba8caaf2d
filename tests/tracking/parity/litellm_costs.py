"""Each parity case's cost as LiteLLM computes it, from the same price map.

Runs in LiteLLM's own virtual environment (tests/litellm_env.py), never in
Tollgate's: `python litellm_costs.py corpus.json prices.json` prints
`{"case name": "cost in USD", ...}` (repr of LiteLLM's float).

Usage objects go through LiteLLM's own provider transformations (Anthropic,
Gemini, Bedrock Converse, xAI) into its `Usage`, then through
`litellm.cost_per_token` (the batch calculator for batch requests) and, for
paid web searches, `StandardBuiltInToolCostTracking.get_cost_for_built_in_tools`,
which is what `completion_cost` adds for them.

Searches the usage object does not count are given as the response and
request LiteLLM reads them from: a case's `web_search_calls` become that many
`web_search_call` items of a Responses output (OpenAI Responses), a
`url_citation` annotation of a Chat Completion (OpenAI Chat: LiteLLM bills one
search per answer that cites), or as many distinct
`groundingMetadata.webSearchQueries` of the Gemini response; its
`web_search_context_size` is the request's `web_search_options`.
"""

from __future__ import annotations

import json
import os
import sys

# The price map is the one passed in; never fetch LiteLLM's from the network.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

import litellm
from litellm.litellm_core_utils.llm_cost_calc.tool_call_cost_tracking import (
    StandardBuiltInToolCostTracking,
)
from litellm.types.utils import Usage


def _usage(case: dict) -> Usage:
    usage = dict(case["usage"])
    shape = case["shape"]
    if shape == "anthropic":
        from litellm.llms.anthropic.chat.transformation import AnthropicConfig

        return AnthropicConfig().calculate_usage(usage_object=usage, reasoning_content=None)
    if shape == "gemini":
        from litellm.llms.vertex_ai.gemini.vertex_and_google_ai_studio_gemini import (
            VertexGeminiConfig,
        )

        response: dict = {"usageMetadata": usage}
        grounding = []
        if case.get("web_search_calls"):
            queries = [f"query {n}" for n in range(case["web_search_calls"])]
            grounding = [{"webSearchQueries": queries}]
            response["candidates"] = [{"groundingMetadata": grounding[0]}]
        calculated = VertexGeminiConfig._calculate_usage(completion_response=response)
        VertexGeminiConfig.set_grounding_usage_counters(calculated, grounding)
        return calculated
    if shape == "bedrock":
        from litellm.llms.bedrock.chat.converse_transformation import AmazonConverseConfig

        return AmazonConverseConfig().transform_usage(usage)
    if shape == "xai":
        from litellm.llms.xai.chat.transformation import XAIChatConfig

        XAIChatConfig.fold_reasoning_tokens_into_completion(usage)
        return Usage(**usage)
    if shape == "openai_realtime":
        return Usage(
            prompt_tokens=usage["input_tokens"],
            completion_tokens=usage["output_tokens"],
            total_tokens=usage["total_tokens"],
            prompt_tokens_details=usage.get("input_token_details"),
            completion_tokens_details=usage.get("output_token_details"),
        )
    if shape == "openai_responses":
        return Usage(
            prompt_tokens=usage["input_tokens"],
            completion_tokens=usage["output_tokens"],
            total_tokens=usage["total_tokens"],
            prompt_tokens_details=usage.get("input_tokens_details"),
            completion_tokens_details=usage.get("output_tokens_details"),
        )
    return Usage(**usage)


def _response(case: dict) -> object:
    """The response whose output shows OpenAI's searches (None otherwise)."""
    calls = case.get("web_search_calls")
    if not calls or case["shape"] not in ("openai", "openai_responses"):
        return None
    if case["shape"] == "openai_responses":
        from litellm.types.llms.openai import ResponsesAPIResponse

        return ResponsesAPIResponse(
            id="resp_1",
            created_at=0,
            model=case["model"],
            object="response",
            status="completed",
            output=[
                {"type": "web_search_call", "id": f"ws_{n}", "status": "completed"}
                for n in range(calls)
            ],
            parallel_tool_calls=True,
            tool_choice="auto",
            tools=[],
        )
    assert calls == 1, "a Chat Completion shows that it searched, not how often"
    from litellm.types.utils import ModelResponse

    return ModelResponse(
        model=case["model"],
        choices=[
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {
                    "role": "assistant",
                    "content": "Found.",
                    "annotations": [
                        {
                            "type": "url_citation",
                            "url_citation": {
                                "url": "https://example.com",
                                "title": "Example",
                                "start_index": 0,
                                "end_index": 6,
                            },
                        }
                    ],
                },
            }
        ],
    )


def cost(case: dict) -> float:
    usage = _usage(case)
    provider = case["provider"]
    tier = case.get("service_tier") or (
        case["usage"].get("service_tier") if case["shape"] == "anthropic" else None
    )
    batch = case.get("batch") or tier == "batch"
    prompt, completion = litellm.cost_per_token(
        model=case["model"],
        custom_llm_provider=provider,
        usage_object=usage,
        service_tier=None if batch or tier in ("default", "standard") else tier,
        call_type="retrieve_batch" if batch else "completion",
    )
    size = case.get("web_search_context_size")
    tools = StandardBuiltInToolCostTracking.get_cost_for_built_in_tools(
        model=case["model"],
        response_object=_response(case),
        usage=usage,
        custom_llm_provider=provider,
        standard_built_in_tools_params={
            "web_search_options": {"search_context_size": size} if size else None
        },
    )
    return prompt + completion + tools


def main() -> None:
    # A lookup LiteLLM retries under another provider prints its provider list
    # to stdout, which carries the answer.
    litellm.suppress_debug_info = True
    corpus_path, prices_path = sys.argv[1:3]
    with open(prices_path) as file:
        litellm.register_model(json.load(file))
    with open(corpus_path) as file:
        corpus = json.load(file)
    json.dump({case["name"]: repr(cost(case)) for case in corpus}, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
