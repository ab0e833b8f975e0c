"""The demo's sample workload: support tickets to classify, documents to summarise.

Pure: :func:`build_workload` turns the data set shipped in ``connector/data/`` into N
requests spread over the three providers, with a few realtime, near-deadline and
deliberately invalid ones, so a demo run shows every path of the connector.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

from connector.client import make_request

OPENAI_CHAT = ("openai", "gpt-4o-mini", "/v1/chat/completions")
OPENAI_EMBEDDINGS = ("openai", "text-embedding-3-small", "/v1/embeddings")
ANTHROPIC = ("anthropic", "claude-3-5-haiku-latest", "/v1/messages")
GEMINI = ("gemini", "gemini-2.5-flash", "generateContent")

NEAR_DEADLINE_S = 8.0

Kind = Literal["batch", "realtime", "deadline", "invalid_endpoint", "invalid_body"]


@dataclass(frozen=True)
class WorkItem:
    lane: Literal["deferred", "realtime"]
    kind: Kind
    request: dict[str, Any]


@lru_cache(maxsize=1)
def load_dataset() -> dict[str, Any]:
    text = resources.files("connector").joinpath("data/demo_workload.json").read_text(encoding="utf-8")
    return json.loads(text)


def _prompt(task: str, index: int, data: dict[str, Any]) -> tuple[str, str]:
    """(system instruction, user text) for the index-th item of ``task``."""
    if task == "classify":
        ticket = data["tickets"][index % len(data["tickets"])]
        system = (
            "Classify the customer support ticket into exactly one category: "
            + ", ".join(data["categories"])
            + ". Answer with the category only."
        )
        return system, ticket
    doc = data["documents"][index % len(data["documents"])]
    return "Summarise the document in two sentences for a busy manager.", f"{doc['title']}\n\n{doc['text']}"


def _body(target: tuple[str, str, str], system: str, text: str, max_tokens: int) -> dict[str, Any]:
    provider, model, endpoint = target
    if endpoint == "/v1/embeddings":
        return {"model": model, "input": text}
    if provider == "openai":
        return {
            "model": model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}],
            "max_tokens": max_tokens,
        }
    if provider == "anthropic":
        return {
            "model": model,
            "max_tokens": max_tokens,
            "system": system,
            "messages": [{"role": "user", "content": text}],
        }
    return {
        "contents": [{"role": "user", "parts": [{"text": text}]}],
        "systemInstruction": {"parts": [{"text": system}]},
        "generationConfig": {"maxOutputTokens": max_tokens},
    }


def _kind(i: int, n: int) -> Kind:
    # About 1% invalid (at least 2 when n allows), 5% realtime, 5% near deadline.
    invalid_every = max(50, n // max(2, n // 100)) if n >= 50 else 0
    if invalid_every and i % invalid_every == invalid_every - 1:
        return "invalid_endpoint" if (i // invalid_every) % 2 == 0 else "invalid_body"
    if i % 20 == 7:
        return "realtime"
    if i % 20 == 13:
        return "deadline"
    return "batch"


def _target(i: int) -> tuple[str, str, str]:
    provider = i % 3
    if provider == 0:
        return OPENAI_EMBEDDINGS if (i // 3) % 6 == 5 else OPENAI_CHAT
    return ANTHROPIC if provider == 1 else GEMINI


def build_workload(n: int, run_id: str, now_ms: int) -> list[WorkItem]:
    """``n`` demo requests with ids ``demo-<run_id>-<i>``, created at ``now_ms``."""
    data = load_dataset()
    items: list[WorkItem] = []
    for i in range(n):
        kind = _kind(i, n)
        target = _target(i)
        task = "summarise" if (i // 3) % 3 == 2 else "classify"
        system, text = _prompt(task, i, data)
        body: dict[str, Any] | str = _body(target, system, text, 120 if task == "summarise" else 10)
        provider, model, endpoint = target
        metadata = {"task": task, "source": "demo", "item": str(i)}
        if kind == "invalid_endpoint":
            endpoint = "/v1/unknown"
        elif kind == "invalid_body":
            body = '{"messages": [unterminated'
        deadline = now_ms + int(NEAR_DEADLINE_S * 1000) if kind == "deadline" else None
        request = make_request(
            f"demo-{run_id}-{i:05d}",
            provider,
            model,
            endpoint,
            body,
            metadata=metadata,
            deadline_ms=deadline,
            validate=kind not in ("invalid_endpoint", "invalid_body"),
        )
        request["created_at"] = now_ms
        items.append(WorkItem("realtime" if kind == "realtime" else "deferred", kind, request))
    return items
