"""The REST → SDK conversion for inline Gemini requests must not change the request."""

from __future__ import annotations

import json

from google.genai import _api_client, _common, batches, types
from pydantic.alias_generators import to_camel

from connector.providers.base import BatchState
from connector.providers.gemini_batch import job_status, model_name, sdk_request

BODY = {
    "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
    "generationConfig": {
        "temperature": 0.2,
        "maxOutputTokens": 64,
        "responseMimeType": "application/json",
        "thinkingConfig": {"thinkingBudget": 0},
    },
    "systemInstruction": {"parts": [{"text": "be brief"}]},
    "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
}


def camel(value: object) -> object:
    """Proto JSON accepts both spellings; the SDK sends nested config objects snake_case."""
    if isinstance(value, dict):
        return {to_camel(key): camel(item) for key, item in value.items()}
    if isinstance(value, list):
        return [camel(item) for item in value]
    return value


def test_inline_request_reaches_the_wire_unchanged() -> None:
    converted = sdk_request(BODY)
    assert converted is not None
    contents, config = converted
    request = types.InlinedRequest(contents=contents, config=config, metadata={"key": "k"})
    # The SDK's own serialiser, as batches.create uses it.
    wire = batches._InlinedRequest_to_mldev(_api_client.BaseApiClient(api_key="x"), request)
    wire = json.loads(json.dumps(_common.convert_to_dict(wire), default=str))
    assert camel(wire) == {"request": BODY, "metadata": {"key": "k"}}


def test_fields_the_sdk_cannot_carry_are_refused() -> None:
    assert sdk_request({**BODY, "someFutureField": 1}) is None
    assert sdk_request({"generationConfig": {}}) is None
    assert sdk_request({**BODY, "generationConfig": {"noSuchOption": 1}}) is None


def test_model_name() -> None:
    assert model_name("gemini-2.5-flash") == "models/gemini-2.5-flash"
    assert model_name("models/gemini-2.5-flash") == "models/gemini-2.5-flash"


def test_job_status_flags_a_quota_failure_and_only_that() -> None:
    def failed(code: int, message: str) -> types.BatchJob:
        return types.BatchJob(
            state=types.JobState.JOB_STATE_FAILED,
            error=types.JobError(code=code, message=message),
        )

    quota = job_status(failed(8, "RESOURCE_EXHAUSTED: batch quota"), 3)
    assert quota.state is BatchState.FAILED and quota.quota_exceeded
    assert (quota.error_code, quota.total) == ("8", 3)
    assert not job_status(failed(3, "INVALID_ARGUMENT: bad"), 3).quota_exceeded
    running = types.BatchJob(
        state=types.JobState.JOB_STATE_RUNNING, error=types.JobError(code=8, message="x")
    )
    assert not job_status(running, 3).quota_exceeded
