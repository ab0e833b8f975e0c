"""What the real APIs refuse, and in which words (pure; no I/O).

Each check returns the provider's own message, or None when the request passes. The route
modules decide *where* a refusal lands, as the real API does: the whole call (HTTP 4xx), the
batch's validation (OpenAI ``errors.data``), or one request's result line.

Sources, per check:
- Unknown model. OpenAI: 404 ``model_not_found`` "The model `X` does not exist or you do not
  have access to it." on synchronous calls, and the same as the line's 404 response inside a
  batch (a real error file quoted in openai/openai-python#3071). Anthropic: 404
  ``not_found_error`` "model: X" (anthropics/anthropic-sdk-typescript#690); in a batch the
  request errors with that error, since batch params are validated asynchronously (Anthropic
  batch-processing guide). Gemini: 404 NOT_FOUND "models/X is not found for API version V, or
  is not supported for METHOD. Call ListModels to see the list of available models and their
  supported methods." (widely quoted API answer), on the model's URL, so for batches the
  whole create is refused.
- Anthropic params without ``model``, ``messages`` or ``max_tokens``: 400
  ``invalid_request_error`` "<field>: Field required" (the API's validation wording); more
  than four ``cache_control`` breakpoints: "A maximum of 4 blocks with cache_control may be
  provided. Found N." (prompt-caching guide: at most four breakpoints).
- Gemini ``contents``: a wrong JSON type is a proto parse error, 400 INVALID_ARGUMENT
  "Invalid value at '<path>' (type.googleapis.com/...Content), <value>"; missing contents or
  parts fail the request checks "* GenerateContentRequest.contents: contents is not
  specified".
- OpenAI ``service_tier``: the values the SDK types allow; ``flex`` on a model without Flex
  processing is 400 ``invalid_request_error`` "Unsupported service_tier: flex" (the API's
  answer quoted in openai/codex#15099). The answer names the tier actually used: ``default``
  for ``auto`` or none, ``priority`` for ``fast`` (SDK docstring of ``service_tier``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

# The models the repository's tests, demo workload, prices and README use, plus the current
# families of each provider. ``EmulatorConfig.known_models`` replaces this list; a provider
# missing from it accepts any model.
DEFAULT_KNOWN_MODELS: dict[str, list[str]] = {
    "openai": [
        "gpt-4o",
        "gpt-4o-2024-08-06",
        "gpt-4o-mini",
        "gpt-4o-mini-2024-07-18",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "gpt-4-turbo",
        "gpt-3.5-turbo",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "o1",
        "o3",
        "o3-mini",
        "o4-mini",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "text-embedding-ada-002",
        "omni-moderation-latest",
    ],
    "anthropic": [
        "claude-3-5-haiku-latest",
        "claude-3-5-haiku-20241022",
        "claude-3-7-sonnet-latest",
        "claude-3-7-sonnet-20250219",
        "claude-haiku-4-5",
        "claude-haiku-4-5-20251001",
        "claude-sonnet-4-0",
        "claude-sonnet-4-20250514",
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
        "claude-opus-4-0",
        "claude-opus-4-20250514",
        "claude-opus-4-1",
        "claude-opus-4-1-20250805",
        "claude-opus-4-5",
        "claude-opus-4-5-20251101",
    ],
    "gemini": [
        "gemini-2.0-flash",
        "gemini-2.0-flash-lite",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
        "gemini-2.5-pro",
        "gemini-3-pro-preview",
        "gemini-embedding-001",
    ],
}

# OpenAI's Flex tier: the models its guide names (GPT-5, o3, o4-mini) and the GPT-5 family.
DEFAULT_FLEX_MODELS = ["gpt-5", "gpt-5-mini", "gpt-5-nano", "o3", "o4-mini"]
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority", "fast")
ANTHROPIC_REQUIRED = ("model", "messages", "max_tokens")
MAX_CACHE_BREAKPOINTS = 4
GEMINI_TYPES = "type.googleapis.com/google.ai.generativelanguage.v1beta."


def is_known(known_models: Mapping[str, Sequence[str]], provider: str, model: str) -> bool:
    """Whether ``provider`` serves ``model``; a provider without a list serves any model."""
    models = known_models.get(provider)
    return models is None or model.removeprefix("models/") in models


def openai_unknown_model(model: str) -> str:
    return f"The model `{model}` does not exist or you do not have access to it."


def anthropic_unknown_model(model: str) -> str:
    return f"model: {model}"


def gemini_unknown_model(model: str, version: str, method: str) -> str:
    return (
        f"models/{model.removeprefix('models/')} is not found for API version {version}, or is "
        f"not supported for {method}. Call ListModels to see the list of available models and "
        "their supported methods."
    )


def service_tier_problem(tier: Any, model: str, flex_models: Sequence[str]) -> str | None:
    """Why OpenAI refuses ``service_tier`` for ``model``, or None."""
    if tier is None:
        return None
    if tier not in SERVICE_TIERS:
        allowed = ", ".join(f"'{t}'" for t in SERVICE_TIERS)
        return f"Invalid value: '{tier}'. Supported values are: {allowed}."
    if tier == "flex" and model not in flex_models:
        return "Unsupported service_tier: flex"
    return None


def served_tier(tier: str | None) -> str:
    """The ``service_tier`` an OpenAI answer reports for the one requested."""
    return {"flex": "flex", "scale": "scale", "priority": "priority", "fast": "priority"}.get(
        tier or "auto", "default"
    )


def anthropic_params_problem(params: Mapping[str, Any]) -> str | None:
    """Why Messages API ``params`` are invalid (the API's wording), or None."""
    for name in ANTHROPIC_REQUIRED:
        if name not in params:
            return f"{name}: Field required"
    if not isinstance(params["model"], str):
        return "model: Input should be a valid string"
    if not isinstance(params["messages"], list):
        return "messages: Input should be a valid list"
    max_tokens = params["max_tokens"]
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        return "max_tokens: Input should be a valid integer"
    if max_tokens < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    markers = _cache_markers(params)
    if markers > MAX_CACHE_BREAKPOINTS:
        return (
            f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {markers}."
        )
    return None


def _cache_markers(params: Mapping[str, Any]) -> int:
    """How many ``cache_control`` breakpoints the params set (the top-level one included)."""
    blocks: list[Any] = list(params.get("tools") or [])
    if isinstance(params.get("system"), list):
        blocks += params["system"]
    for message in params.get("messages") or []:
        if isinstance(message, dict) and isinstance(message.get("content"), list):
            blocks += message["content"]
    marked = sum(1 for b in blocks if isinstance(b, dict) and "cache_control" in b)
    return marked + (1 if params.get("cache_control") else 0)


def gemini_request_problem(
    request: Any, path: str = "", owner: str = "GenerateContentRequest"
) -> str | None:
    """Why a GenerateContentRequest is invalid (Gemini's wording), or None.

    Arguments:
        request: The request JSON.
        path: Where the request sits in the call, for example
            ``batch.input_config.requests.requests[0].request.``.
        owner: The message type the checks name, e.g. ``BatchGenerateContentRequest``.
    """
    if request is None:  # proto JSON: null is the empty message
        request = {}
    if not isinstance(request, dict):
        return _invalid_value(path.rstrip("."), "GenerateContentRequest", request)
    contents = request.get("contents")
    if contents is None or contents == []:
        return f"* {owner}.{path}contents: contents is not specified\n"
    if not isinstance(contents, list):
        return _invalid_value(f"{path}contents", "Content", contents)
    for i, content in enumerate(contents):
        where = f"{path}contents[{i}]"
        if not isinstance(content, dict):
            return _invalid_value(where, "Content", content)
        parts = content.get("parts")
        if parts is not None and not isinstance(parts, list):
            return _invalid_value(f"{where}.parts", "Part", parts)
        if not parts:
            return f"* {owner}.{where}.parts: contents.parts must not be empty.\n"
        for j, part in enumerate(parts):
            if not isinstance(part, dict):
                return _invalid_value(f"{where}.parts[{j}]", "Part", part)
    return None


def _invalid_value(where: str, type_name: str, value: Any) -> str:
    shown = json.dumps(value) if not isinstance(value, str) else value
    return f"Invalid value at '{where}' ({GEMINI_TYPES}{type_name}), {shown}"
