"""The demo's sample workload: support tickets to classify, documents to summarise.

Pure: the data set shipped in ``connector/data/`` becomes requests of two workloads
(metadata ``workload``); :func:`demo_workload` mixes them for the demo.

- ``mixed`` (:func:`build_workload`): spread over the three providers, with a few realtime,
  near-deadline and deliberately invalid ones, so a demo run shows every path of the
  connector;
- ``support_policy`` (:func:`policy_workload`, :data:`POLICY_SHARE` of the demo): tickets
  classified under a long shared system prompt, the support policy in
  ``connector/data/support_policy.yaml`` (about 2,400 tokens), so the prompt caches stack
  with the batch discount; one in :data:`FLEX_EVERY` is a realtime request that opts into
  OpenAI's Flex tier.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

import yaml

from connector.client import make_request
from connector.costs.flex import FLEX
from connector.model import ENDPOINTS

OPENAI_CHAT = ("openai", "gpt-4o-mini", "/v1/chat/completions")
OPENAI_EMBEDDINGS = ("openai", "text-embedding-3-small", "/v1/embeddings")
ANTHROPIC = ("anthropic", "claude-3-5-haiku-latest", "/v1/messages")
GEMINI = ("gemini", "gemini-2.5-flash", "generateContent")
# A named provider (BATCHBRIDGE_PROVIDERS): OpenAI's batch API served by another vendor.
GROQ = ("groq", "llama-3.1-8b-instant", "/v1/chat/completions")
DEMO_ENDPOINTS = {**ENDPOINTS, "groq": frozenset({"/v1/chat/completions"})}

POLICY_TARGETS = (
    ("anthropic", "claude-3-5-haiku-latest", "/v1/messages"),
    ("openai", "gpt-5-mini", "/v1/chat/completions"),
    ("gemini", "gemini-2.5-flash", "generateContent"),
)
FLEX_TARGET = ("openai", "gpt-5-mini", "/v1/chat/completions")
MIXED = "mixed"
SUPPORT_POLICY = "support_policy"
POLICY_SHARE = 0.4  # of the demo's requests
FLEX_EVERY = 20  # one support_policy request in this many is realtime at the Flex tier

NEAR_DEADLINE_S = 8.0

Kind = Literal[
    "batch", "realtime", "deadline", "invalid_endpoint", "invalid_body", "policy", "policy_flex"
]


@dataclass(frozen=True)
class WorkItem:
    lane: Literal["deferred", "realtime"]
    kind: Kind
    request: dict[str, Any]


@lru_cache(maxsize=1)
def load_dataset() -> dict[str, Any]:
    text = (
        resources.files("connector").joinpath("data/demo_workload.json").read_text(encoding="utf-8")
    )
    return json.loads(text)


@lru_cache(maxsize=1)
def support_policy() -> str:
    """The support policy as one system prompt."""
    text = (
        resources.files("connector")
        .joinpath("data/support_policy.yaml")
        .read_text(encoding="utf-8")
    )
    policy = yaml.safe_load(text)
    sections = "\n\n".join(f"{s['title']}\n{s['text']}" for s in policy["sections"])
    return f"{policy['title']}\n\n{policy['instruction']}\n\n{sections}"


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
    return (
        "Summarise the document in two sentences for a busy manager.",
        f"{doc['title']}\n\n{doc['text']}",
    )


def _body(target: tuple[str, str, str], system: str, text: str, max_tokens: int) -> dict[str, Any]:
    provider, model, endpoint = target
    if endpoint == "/v1/embeddings":
        return {"model": model, "input": text}
    if provider in ("openai", "groq"):
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
    provider = i % 4
    if provider == 0:
        return OPENAI_EMBEDDINGS if (i // 4) % 6 == 5 else OPENAI_CHAT
    return (ANTHROPIC, GEMINI, GROQ)[provider - 1]


def demo_workload(n: int, run_id: str, now_ms: int) -> list[WorkItem]:
    """The demo's ``n`` requests: the mixed workload, then :data:`POLICY_SHARE` of them
    under the shared support policy."""
    policy = int(n * POLICY_SHARE)
    return build_workload(n - policy, run_id, now_ms) + policy_workload(
        policy, run_id, now_ms, first=n - policy
    )


def policy_workload(n: int, run_id: str, now_ms: int, *, first: int = 0) -> list[WorkItem]:
    """``n`` tickets classified under the support policy, ids from ``demo-<run_id>-<first>``."""
    data = load_dataset()
    items: list[WorkItem] = []
    for j in range(n):
        i = first + j
        kind: Kind = "policy_flex" if j % FLEX_EVERY == FLEX_EVERY - 1 else "policy"
        provider, model, endpoint = FLEX_TARGET if kind == "policy_flex" else POLICY_TARGETS[j % 3]
        ticket = data["tickets"][j % len(data["tickets"])]
        metadata = {
            "task": "classify",
            "source": "demo",
            "item": str(i),
            "workload": SUPPORT_POLICY,
        }
        body = _body((provider, model, endpoint), support_policy(), ticket, 20)
        if model.startswith("gpt-5"):  # reasoning models take no max_tokens
            body["max_completion_tokens"] = body.pop("max_tokens")
        tier = FLEX if kind == "policy_flex" else None
        request = make_request(
            f"demo-{run_id}-{i:05d}",
            provider,
            model,
            endpoint,
            body,
            metadata=metadata,
            service_tier=tier,
        )
        request["created_at"] = now_ms
        items.append(WorkItem("realtime" if kind == "policy_flex" else "deferred", kind, request))
    return items


def build_workload(n: int, run_id: str, now_ms: int) -> list[WorkItem]:
    """``n`` requests of the mixed workload with ids ``demo-<run_id>-<i>``, created at ``now_ms``."""
    data = load_dataset()
    items: list[WorkItem] = []
    for i in range(n):
        kind = _kind(i, n)
        target = _target(i)
        task = "summarise" if (i // 3) % 3 == 2 else "classify"
        system, text = _prompt(task, i, data)
        body: dict[str, Any] | str = _body(target, system, text, 120 if task == "summarise" else 10)
        provider, model, endpoint = target
        metadata = {"task": task, "source": "demo", "item": str(i), "workload": MIXED}
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
            endpoints=DEMO_ENDPOINTS,
        )
        request["created_at"] = now_ms
        items.append(WorkItem("realtime" if kind == "realtime" else "deferred", kind, request))
    return items
