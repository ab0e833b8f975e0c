"""Pure checks of what the real APIs refuse, in their words."""

from __future__ import annotations

from typing import Any

import pytest

from connector.emulator.validation import (
    DEFAULT_KNOWN_MODELS,
    anthropic_params_problem,
    gemini_request_problem,
    gemini_unknown_model,
    is_known,
)

VALID_ANTHROPIC = {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": []}


def test_every_model_the_repository_uses_is_known_by_default() -> None:
    used = {
        "openai": ["gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-4.1-mini", "text-embedding-3-small"],
        "anthropic": ["claude-3-5-haiku-latest", "claude-haiku-4-5", "claude-sonnet-4-5"],
        "gemini": ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash"],
    }
    for provider, models in used.items():
        assert set(models) <= set(DEFAULT_KNOWN_MODELS[provider])


def test_a_provider_without_a_list_serves_any_model() -> None:
    known = {"openai": ["gpt-4o"]}
    assert is_known(known, "openai", "gpt-4o") and not is_known(known, "openai", "gpt-4")
    assert is_known(known, "anthropic", "anything")
    assert is_known({"gemini": ["gemini-2.5-flash"]}, "gemini", "models/gemini-2.5-flash")
    assert not is_known({"gemini": []}, "gemini", "gemini-2.5-flash")


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"model": "m", "messages": []}, "max_tokens: Field required"),
        ({"model": "m", "max_tokens": 5}, "messages: Field required"),
        ({"messages": [], "max_tokens": 5}, "model: Field required"),
        ({**VALID_ANTHROPIC, "max_tokens": "5"}, "max_tokens: Input should be a valid integer"),
        ({**VALID_ANTHROPIC, "max_tokens": True}, "max_tokens: Input should be a valid integer"),
        (
            {**VALID_ANTHROPIC, "max_tokens": 0},
            "max_tokens: Input should be greater than or equal to 1",
        ),
        ({**VALID_ANTHROPIC, "messages": "hi"}, "messages: Input should be a valid list"),
        ({**VALID_ANTHROPIC, "model": 4}, "model: Input should be a valid string"),
        (VALID_ANTHROPIC, None),
    ],
)
def test_anthropic_params_problems(params: dict[str, Any], problem: str | None) -> None:
    assert anthropic_params_problem(params) == problem


CONTENT = "type.googleapis.com/google.ai.generativelanguage.v1beta.Content"
PART = "type.googleapis.com/google.ai.generativelanguage.v1beta.Part"


@pytest.mark.parametrize(
    ("request_", "problem"),
    [
        ({"contents": 5}, f"Invalid value at 'contents' ({CONTENT}), 5"),
        ({"contents": "hi"}, f"Invalid value at 'contents' ({CONTENT}), hi"),
        ({"contents": [7]}, f"Invalid value at 'contents[0]' ({CONTENT}), 7"),
        ({}, "* GenerateContentRequest.contents: contents is not specified\n"),
        (None, "* GenerateContentRequest.contents: contents is not specified\n"),
        ({"contents": []}, "* GenerateContentRequest.contents: contents is not specified\n"),
        (
            {"contents": [{"role": "user"}]},
            "* GenerateContentRequest.contents[0].parts: contents.parts must not be empty.\n",
        ),
        (
            {"contents": [{"parts": {"text": "x"}}]},
            f'Invalid value at \'contents[0].parts\' ({PART}), {{"text": "x"}}',
        ),
        ({"contents": [{"parts": [3]}]}, f"Invalid value at 'contents[0].parts[0]' ({PART}), 3"),
        ({"contents": [{"parts": [{"text": "x"}]}]}, None),
    ],
)
def test_gemini_request_problems(request_: Any, problem: str | None) -> None:
    assert gemini_request_problem(request_) == problem


def test_gemini_problems_name_where_the_request_sits_in_a_batch() -> None:
    where = "batch.input_config.requests.requests[2].request."
    assert gemini_request_problem({"contents": 5}, where, "BatchGenerateContentRequest") == (
        f"Invalid value at '{where}contents' ({CONTENT}), 5"
    )
    assert gemini_request_problem({}, where, "BatchGenerateContentRequest") == (
        f"* BatchGenerateContentRequest.{where}contents: contents is not specified\n"
    )


def test_gemini_unknown_model_message() -> None:
    assert gemini_unknown_model("models/gemini-9", "v1beta", "generateContent") == (
        "models/gemini-9 is not found for API version v1beta, or is not supported for "
        "generateContent. Call ListModels to see the list of available models and their "
        "supported methods."
    )
