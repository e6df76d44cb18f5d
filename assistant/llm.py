"""A language model drives the assistant's MCP tools and writes the explanation; every
number in its answer is checked against the tool results.

Two wire formats, both plain HTTP (httpx): an OpenAI-compatible chat-completions
endpoint (``POST {url}/chat/completions`` with ``tools``), and Anthropic's Messages API
(``POST {url}/v1/messages``). The model sees the MCP server's tools (names, descriptions,
input schemas as the server lists them) and every call goes through an MCP client
session, so the model uses exactly what an MCP client would.

``unsupported_numbers(answer, results)`` is pure: the numbers of the answer that appear
in no tool result (to the answer's own precision, or within 0.5%).

>>> unsupported_numbers("Uses 812.3 kWh, 94th percentile, setpoint 24.31 C, 77 W extra.",
...                     [{"kwh": 812.34, "percentile": 94.0, "f": {"setpoint_c": 24.305}}])
['77']
>>> unsupported_numbers("1. H000042 in 2024-01-05: nothing.", [{}])
[]
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import httpx

SYSTEM = (
    "You explain why a home uses more energy than it should, using only the tools. Call explain_home first, "
    "check its top findings with the other tools, then answer in a few short paragraphs: ranked causes, the "
    "numbers each rests on, and how to check them. Every number you write must come from a tool result."
)
MAX_STEPS = 8

# a number not glued to letters/underscores (ids like H000042), not a date part
_NUMBER = re.compile(r"(?<![\w.\-])-?\d+(?:\.\d+)?(?![\d_]|\.\d)")
_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?Z?\b")
_LIST_MARK = re.compile(r"^\s*\d+[.)]\s", re.M)


def _numbers_in(value: Any, out: list[float]) -> None:
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, (int, float)):
        if math.isfinite(value):
            out.append(float(value))
    elif isinstance(value, str):
        for m in _NUMBER.finditer(_DATE.sub(" ", value)):
            out.append(float(m.group()))
    elif isinstance(value, dict):
        for v in value.values():
            _numbers_in(v, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _numbers_in(v, out)


def unsupported_numbers(answer: str, results: list[Any]) -> list[str]:
    known: list[float] = []
    for r in results:
        _numbers_in(r, known)
    text = _LIST_MARK.sub(" ", _DATE.sub(" ", answer))
    flagged = []
    for m in _NUMBER.finditer(text):
        s = m.group()
        x = float(s)
        decimals = len(s.split(".")[1]) if "." in s else 0
        ok = any(round(k, decimals) == x or abs(k - x) <= 0.005 * max(abs(k), 1e-9) for k in known)
        # a percentage of a known fraction (0.42 -> 42%) is the same number
        ok = ok or any(round(100 * k, decimals) == x for k in known if abs(k) <= 1.0)
        if not ok and s not in flagged:
            flagged.append(s)
    return flagged


@dataclass
class Transcript:
    answer: str = ""
    tool_calls: list[dict] = field(default_factory=list)  # name, arguments, result
    unsupported: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"answer": self.answer, "tool_calls": self.tool_calls, "unsupported_numbers": self.unsupported}


class ChatError(RuntimeError):
    pass


class _OpenAI:
    def __init__(self, http: httpx.Client, model: str):
        self.http, self.model = http, model

    def start(self, user: str) -> list:
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]

    def step(self, messages: list, tools: list) -> tuple[str, list[tuple[str, str, dict]]]:
        body = {"model": self.model, "messages": messages,
                "tools": [{"type": "function", "function": {"name": t.name, "description": t.description or "",
                                                            "parameters": t.inputSchema}} for t in tools]}
        r = self.http.post("/chat/completions", json=body)
        if r.status_code != 200:
            raise ChatError(f"model endpoint answered {r.status_code}: {r.text[:300]}")
        msg = r.json()["choices"][0]["message"]
        messages.append({k: v for k, v in msg.items() if k in ("role", "content", "tool_calls")})
        calls = [(c["id"], c["function"]["name"], json.loads(c["function"].get("arguments") or "{}"))
                 for c in msg.get("tool_calls") or []]
        return msg.get("content") or "", calls

    def tool_results(self, messages: list, results: list[tuple[str, str]]) -> None:
        for call_id, content in results:
            messages.append({"role": "tool", "tool_call_id": call_id, "content": content})


class _Anthropic:
    def __init__(self, http: httpx.Client, model: str):
        self.http, self.model = http, model

    def start(self, user: str) -> list:
        return [{"role": "user", "content": user}]

    def step(self, messages: list, tools: list) -> tuple[str, list[tuple[str, str, dict]]]:
        body = {"model": self.model, "max_tokens": 2048, "system": SYSTEM, "messages": messages,
                "tools": [{"name": t.name, "description": t.description or "", "input_schema": t.inputSchema}
                          for t in tools]}
        r = self.http.post("/v1/messages", json=body)
        if r.status_code != 200:
            raise ChatError(f"model endpoint answered {r.status_code}: {r.text[:300]}")
        blocks = r.json()["content"]
        messages.append({"role": "assistant", "content": blocks})
        text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        calls = [(b["id"], b["name"], b.get("input") or {}) for b in blocks if b.get("type") == "tool_use"]
        return text, calls

    def tool_results(self, messages: list, results: list[tuple[str, str]]) -> None:
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call_id, "content": content} for call_id, content in results]})


def chat_model(provider: str, url: str, model: str, api_key: str, timeout: float = 120.0):
    """The client of one provider; the key goes in the provider's own header."""
    if not url:
        raise ChatError("ECO_LLM_URL is not set")
    if provider == "openai":
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return _OpenAI(httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout), model)
    if provider == "anthropic":
        headers = {"x-api-key": api_key, "anthropic-version": "2023-06-01"}
        return _Anthropic(httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout), model)
    raise ChatError(f"ECO_LLM_PROVIDER must be 'openai' or 'anthropic' (got {provider!r})")


async def explain_with_model(session, model, home_id: str, max_steps: int = MAX_STEPS) -> Transcript:
    """Let ``model`` drive the tools of the MCP ``session`` until it answers."""
    tools = (await session.list_tools()).tools
    messages = model.start(f"Explain why home {home_id} is inefficient.")
    out = Transcript()
    results: list[Any] = []
    for _ in range(max_steps):
        text, calls = model.step(messages, tools)
        if not calls:
            out.answer = text
            break
        replies = []
        for call_id, name, args in calls:
            r = await session.call_tool(name, args)
            content = "\n".join(getattr(c, "text", "") for c in r.content)
            try:
                value = json.loads(content)
            except ValueError:
                value = content
            if r.structuredContent is not None:
                value = r.structuredContent.get("result", r.structuredContent)
            results.append(value)
            out.tool_calls.append({"name": name, "arguments": args, "error": bool(r.isError)})
            replies.append((call_id, content))
        model.tool_results(messages, replies)
    else:
        raise ChatError(f"no answer after {max_steps} model steps")
    out.unsupported = unsupported_numbers(out.answer, results)
    return out
