"""The assistant's MCP server against the real local stack: every tool through the
SDK's in-process client, read-only SQL refused by ClickHouse, capped results, the stdio
server as a subprocess, and the HTTP transport's bearer token."""

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from assistant.mcp_server import build_server, http_app
from assistant.tools import AssistantTools, Caps, ToolError
from sinks.warehouse import connect
from twin.auth import Tokens
from twin.city import build_city
from twin.service import create_app
from twin.warehouse_history import WarehouseHistory
from twin_seed import SEEDED_HOMES, seed_once

HOME = "H000001"


@pytest.fixture(scope="module")
def tools(stack_settings):
    seed_once(stack_settings)
    city = build_city(SEEDED_HOMES, stack_settings.regions, stack_settings.seed)
    tokens = Tokens.for_data_dir(stack_settings.data_dir)
    history = WarehouseHistory(stack_settings, lambda h: city.store.get(h).region)
    app = create_app(city.store, tokens, history, city.building_of)
    with TestClient(app, base_url="http://twin", headers={"Authorization": f"Bearer {tokens.read}"}) as twin:
        yield AssistantTools(connect(stack_settings), twin, database=stack_settings.clickhouse_database,
                             caps=Caps(max_rows=50, max_seconds=10, max_bytes=20_000), days=2.0)


def _payload(result):
    assert not result.isError, result.content
    if result.structuredContent is not None:
        return result.structuredContent.get("result", result.structuredContent)
    return json.loads(result.content[0].text)


def test_every_tool_through_the_sdk_client(tools):
    from mcp.shared.memory import create_connected_server_and_client_session

    server = build_server(tools, lambda: "# Topic contracts\n")
    calls = {
        "sql": {"query": "SELECT count() AS n FROM telemetry"},
        "list_tables": {},
        "describe_table": {"table": "telemetry"},
        "named_queries": {},
        "run_named_query": {"name": "hourly_energy", "params": {"home": HOME}},
        "home_profile": {"home_id": HOME},
        "energy_baseline": {"home_id": HOME},
        "decompose": {"home_id": HOME, "metric": "power_w", "period_hours": 12},
        "anomalies_and_alerts": {"home_id": HOME},
        "maintenance": {"home_id": HOME},
        "what_if": {"home_id": HOME, "scenario": {"setpoint_c": 19.0, "horizon_days": 3}},
        "retrofit_savings": {"home_id": HOME, "horizon_days": 3},
        "explain_home": {"home_id": HOME},
    }

    async def go():
        async with create_connected_server_and_client_session(server) as client:
            listed = {t.name for t in (await client.list_tools()).tools}
            assert listed == set(calls)
            out = {name: _payload(await client.call_tool(name, args)) for name, args in calls.items()}
            bad = await client.call_tool("home_profile", {"home_id": "H999999"})
            assert bad.isError and "unknown home" in bad.content[0].text
            res = await client.list_resources()
            assert "contracts://topics" in {str(r.uri) for r in res.resources}
            topics = await client.read_resource("contracts://topics")
            schema = await client.read_resource("schema://telemetry_reading")
            prompt = await client.get_prompt("explain_inefficiency", {"home_id": HOME})
            return out, topics, schema, prompt

    out, topics, schema, prompt = asyncio.run(go())
    assert out["sql"]["rows"][0][0] > 0
    assert "telemetry" in {t["name"] for t in out["list_tables"]["tables"]}
    comments = {c["name"]: c["comment"] for c in out["describe_table"]["columns"]}
    assert "watts" in comments["power_w"] and comments["kafka_offset"]  # from the Avro docs
    assert "hourly_energy" in {q["name"] for q in out["named_queries"]["queries"]}
    assert out["run_named_query"]["rows"]
    assert out["home_profile"]["home_id"] == HOME
    assert out["energy_baseline"]["kwh"] > 0 and out["energy_baseline"]["peers"] >= 1
    assert len(out["decompose"]["daily_pattern_by_hour"]) == 24 and out["decompose"]["hours"] >= 24
    assert set(out["maintenance"]) == {"work_orders", "predictions"}
    assert out["what_if"]["scenario"]["kwh"] < out["what_if"]["baseline"]["kwh"]
    assert set(out["retrofit_savings"]["candidates"]) >= {"insulation_upgrade", "new_heat_pump"}
    assert out["explain_home"]["home_id"] == HOME and "findings" in out["explain_home"]
    assert "Topic contracts" in topics.contents[0].text
    assert json.loads(schema.contents[0].text)["name"]
    assert HOME in prompt.messages[0].content.text


@pytest.mark.parametrize("statement", [
    "INSERT INTO telemetry (home_id) VALUES ('X')",
    "CREATE TABLE scratch (a Int8) ENGINE = Memory",
    "DROP TABLE telemetry",
    "ALTER TABLE telemetry DELETE WHERE 1",
])
def test_writes_and_ddl_are_refused_by_clickhouse(tools, statement):
    before = tools.sql("SELECT count() FROM telemetry")["rows"][0][0]
    with pytest.raises(Exception) as e:
        tools.sql(statement)
    assert "readonly" in str(e.value).lower()
    assert tools.sql("SELECT count() FROM telemetry")["rows"][0][0] == before


def test_over_large_results_are_cut_with_a_note(tools):
    r = tools.sql("SELECT number FROM system.numbers LIMIT 100000")
    assert r["truncated"] and r["row_count"] == 50 and "row cap" in r["note"]
    r = tools.sql("SELECT repeat('x', 2000) FROM numbers(40)")
    assert r["truncated"] and 0 < r["row_count"] < 40 and "size cap" in r["note"]
    assert len(json.dumps(r["rows"])) <= 20_000
    ok = tools.sql("SELECT number FROM numbers(10)")
    assert not ok["truncated"] and ok["note"] is None and ok["row_count"] == 10


def test_unknown_home_and_named_query_are_clear_errors(tools):
    with pytest.raises(ToolError, match="unknown home"):
        tools.home_profile("H999999")
    with pytest.raises(ToolError, match="no named query"):
        tools.run_named_query("drop_everything")


def test_stdio_server_as_a_subprocess(stack_settings):
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    exe = str(Path(sys.executable).parent / "ecoretrofit")
    params = StdioServerParameters(command=exe, args=["assistant"], env={**os.environ, **stack_settings.env()})

    async def go():
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as client:
                await client.initialize()
                names = {t.name for t in (await client.list_tools()).tools}
                r = await client.call_tool("sql", {"query": "SELECT 41 + 1 AS answer"})
                return names, r

    names, r = asyncio.run(go())
    assert {"sql", "explain_home", "what_if"} <= names
    assert _payload(r)["rows"] == [[42]]


def test_http_transport_needs_the_bearer_token(tools):
    server = build_server(tools, lambda: "")
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "test", "version": "1"}}}
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    with TestClient(http_app(server, "s3cret-token"), base_url="http://127.0.0.1:8000") as c:
        assert c.post("/mcp", json=init, headers=headers).status_code == 401
        assert c.post("/mcp", json=init, headers={**headers, "Authorization": "Bearer wrong"}).status_code == 401
        ok = c.post("/mcp", json=init, headers={**headers, "Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200, ok.text
        assert "serverInfo" in ok.text


# ---------------------------------------------------------------- language-model path
class StandIn:
    """A scripted model on loopback speaking the OpenAI chat-completions and Anthropic
    Messages APIs: first it calls explain_home, then it answers quoting the tool's kWh
    and, when told to, a number no tool returned."""

    def __init__(self, invent: str | None):
        import http.server
        import threading

        self.invent, self.requests = invent, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, dict(self.headers), body))
                reply = outer.reply(self.path, body)
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def answer(self, tool_text: str) -> str:
        kwh = json.loads(tool_text)["baseline"]["kwh"]
        extra = f" Fixing it would save {self.invent} kWh a week." if self.invent else ""
        return f"Home {HOME} used {kwh} kWh in the window.{extra}"

    def reply(self, path: str, body: dict) -> dict:
        if path == "/chat/completions":
            tool_msgs = [m for m in body["messages"] if m["role"] == "tool"]
            if not tool_msgs:
                msg = {"role": "assistant", "content": None, "tool_calls": [{
                    "id": "call_1", "type": "function",
                    "function": {"name": "explain_home", "arguments": json.dumps({"home_id": HOME})}}]}
            else:
                msg = {"role": "assistant", "content": self.answer(tool_msgs[-1]["content"])}
            return {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": msg,
                                                                         "finish_reason": "stop"}]}
        results = [b for m in body["messages"] if m["role"] == "user" and isinstance(m["content"], list)
                   for b in m["content"] if b.get("type") == "tool_result"]
        if not results:
            return {"id": "m1", "type": "message", "role": "assistant", "stop_reason": "tool_use",
                    "content": [{"type": "tool_use", "id": "tu_1", "name": "explain_home", "input": {"home_id": HOME}}]}
        return {"id": "m2", "type": "message", "role": "assistant", "stop_reason": "end_turn",
                "content": [{"type": "text", "text": self.answer(results[-1]["content"])}]}


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("invent", [None, "987.65"])
def test_a_model_drives_the_tools_and_invented_numbers_are_flagged(tools, stack_settings, provider, invent):
    import dataclasses

    from assistant.explain_cli import explain_via_model

    model = StandIn(invent)
    try:
        settings = dataclasses.replace(stack_settings, llm_provider=provider, llm_url=model.url,
                                       llm_model="scripted", llm_api_key="test-key")
        t = explain_via_model(tools, settings, HOME)
    finally:
        model.close()
    assert [c["name"] for c in t["tool_calls"]] == ["explain_home"]
    assert "kWh in the window" in t["answer"]
    assert t["unsupported_numbers"] == ([invent] if invent else [])
    path, headers, first = model.requests[0]
    assert path == ("/chat/completions" if provider == "openai" else "/v1/messages")
    names = {t["function"]["name"] if provider == "openai" else t["name"] for t in first["tools"]}
    assert {"sql", "explain_home", "what_if"} <= names
    key = headers.get("Authorization") if provider == "openai" else headers.get("x-api-key")
    assert key in ("Bearer test-key", "test-key")
