"""The assistant's MCP server (the official ``mcp`` SDK): the warehouse and the twins
for a language model, read only.

- Tools: ``sql`` (read-only, capped), ``list_tables``, ``describe_table``,
  ``named_queries``, ``run_named_query``, ``home_profile``, ``energy_baseline``,
  ``decompose``, ``anomalies_and_alerts``, ``maintenance``, ``what_if``,
  ``retrofit_savings``, ``explain_home`` (the deterministic analysis).
- Resources: ``contracts://topics`` (every topic's contract) and
  ``schema://{name}`` (each Avro schema).
- Prompt: ``explain_inefficiency(home_id)``.

Transports: stdio (``ecoretrofit assistant serve``), or streamable HTTP
(``--http``) on 127.0.0.1 by default, every request with ``Authorization: Bearer``
the twin's read token (both are read only; ``ecoretrofit twin --print-token``).
"""

from __future__ import annotations

import hmac
import json
from typing import Any, Callable

from mcp.server.fastmcp import FastMCP

import schemas
from assistant.tools import AssistantTools, ToolError

INSTRUCTIONS = (
    "EcoRetrofit Streams: telemetry of simulated homes in ClickHouse and a digital twin per home. "
    "To explain why a home is inefficient, call explain_home first, then check its findings with "
    "energy_baseline, decompose, home_profile and sql; quote only numbers the tools returned."
)


def build_server(tools: AssistantTools, topics_text: Callable[[], str], **kw) -> FastMCP:
    """An MCP server over ``tools``; ``topics_text()`` gives the topic contracts."""
    mcp = FastMCP("ecoretrofit", instructions=INSTRUCTIONS, **kw)

    def call(fn, *a, **k) -> Any:
        try:
            return fn(*a, **k)
        except ToolError as e:
            raise ValueError(str(e)) from None

    @mcp.tool()
    def sql(query: str) -> dict:
        """Run one read-only SQL query on the warehouse (ClickHouse refuses writes and DDL).
        Results are capped in rows, bytes and seconds; a cut result says so in `note`."""
        return call(tools.sql, query)

    @mcp.tool()
    def list_tables() -> dict:
        """Tables of the warehouse database with engine, comment and row count."""
        return call(tools.list_tables)

    @mcp.tool()
    def describe_table(table: str) -> dict:
        """Columns of one table: name, type, comment, default."""
        return call(tools.describe_table, table)

    @mcp.tool()
    def named_queries() -> dict:
        """The project's named queries and their parameters."""
        return call(tools.named_queries)

    @mcp.tool()
    def run_named_query(name: str, params: dict[str, str] | None = None) -> dict:
        """Run a named query (see named_queries) with parameters."""
        return call(tools.run_named_query, name, params)

    @mcp.tool()
    def home_profile(home_id: str) -> dict:
        """The home's digital twin: register entry (building, U-value, floor area), bill of
        materials, compliance, live state, open alerts and work orders."""
        return call(tools.home_profile, home_id)

    @mcp.tool()
    def energy_baseline(home_id: str) -> dict:
        """Energy and heating degree-days over the last week, kWh per degree-day per 100 m2,
        and the home's percentile among its region's homes."""
        return call(tools.energy_baseline, home_id)

    @mcp.tool()
    def decompose(home_id: str, metric: str = "power_w", period_hours: int = 24) -> dict:
        """Trend, daily pattern and residual of a home's hourly series (seriesDecomposeSTL),
        and its weekly pattern from the hourly roll-up."""
        return call(tools.decompose, home_id, metric, period_hours)

    @mcp.tool()
    def anomalies_and_alerts(home_id: str) -> dict:
        """The home's recent anomaly events and its alerts."""
        return call(tools.anomalies_and_alerts, home_id)

    @mcp.tool()
    def maintenance(home_id: str) -> dict:
        """The home's work orders (history) and remaining-life predictions."""
        return call(tools.maintenance, home_id)

    @mcp.tool()
    def what_if(home_id: str, scenario: dict[str, float]) -> dict:
        """Run the twin's what-if model: fields u_value_w_m2k, cop, setpoint_c,
        night_setback_c, pv_kwp, pump_w, horizon_days, price_eur_kwh, ..."""
        return call(tools.what_if, home_id, scenario)

    @mcp.tool()
    def retrofit_savings(home_id: str, horizon_days: int = 30) -> dict:
        """What-if savings of the usual candidate retrofits (insulation, heat pump,
        thermostat, PV), each simulated by the twin."""
        return call(tools.retrofit_savings, home_id, horizon_days)

    @mcp.tool()
    def explain_home(home_id: str) -> dict:
        """Deterministic analysis of why the home uses more energy than it should: ranked
        findings, the numbers each rests on, and how to check them."""
        return call(tools.explain, home_id)

    @mcp.resource("contracts://topics", mime_type="text/markdown")
    def topic_contracts() -> str:
        """Every Kafka topic's contract: key, schema, partitions, retention, guarantees."""
        return topics_text()

    @mcp.resource("schema://{name}", mime_type="application/json")
    def schema(name: str) -> str:
        """An Avro schema by name (telemetry_reading, anomaly_event, alert_event, work_order)."""
        if name not in schemas.available():
            raise ValueError(f"no schema {name!r} (known: {', '.join(schemas.available())})")
        return json.dumps(schemas.schema_dict(name), indent=2)

    @mcp.prompt()
    def explain_inefficiency(home_id: str) -> str:
        """Explain why a home is inefficient, from the tools' evidence."""
        return (f"Explain why home {home_id} uses more energy than it should. Call explain_home('{home_id}') "
                "first; check the top findings with energy_baseline, decompose and home_profile; estimate "
                "savings with retrofit_savings. Rank the causes, give for each the numbers it rests on and how to "
                "check them (the tool call or SQL). Quote only numbers that a tool returned.")

    return mcp


class BearerAuth:
    """ASGI middleware: every HTTP request needs ``Authorization: Bearer <token>``."""

    def __init__(self, app, token: str):
        if not token:
            raise ValueError("an HTTP MCP server needs a token")
        self.app, self._token = app, token.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            ok = given.startswith(b"Bearer ") and hmac.compare_digest(given[7:].strip(), self._token)
            if not ok:
                body = json.dumps({"error": "missing or invalid bearer token"}).encode()
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def http_app(server: FastMCP, token: str):
    """The streamable-HTTP ASGI app behind bearer authentication."""
    return BearerAuth(server.streamable_http_app(), token)
