"""``ecoretrofit explain HOME``: why a home uses more energy than it should.

Without a model (``ECO_LLM_PROVIDER`` unset, or ``--no-model``): the deterministic analysis (``assistant.analysis``) of the evidence the
assistant's tools gather (warehouse + twin service), printed as ranked findings with
the numbers they rest on and how to check each one. ``--json`` prints the analysis.

With a model (``ECO_LLM_PROVIDER=openai|anthropic``, ``ECO_LLM_URL``, ``ECO_LLM_MODEL``,
``ECO_LLM_API_KEY``): the model drives the assistant's MCP tools and writes the text;
numbers of its answer that no tool returned are flagged, and the command exits 3.
"""

from __future__ import annotations

import argparse
import json

from ecoretrofit.errors import CommandError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("home_id", metavar="HOME", help="home id, e.g. H000042")
    parser.add_argument("--json", action="store_true", help="print the analysis as JSON")
    parser.add_argument("--twin-url", default=None, help="the twin service (default: its local port)")
    parser.add_argument("--no-model", action="store_true", help="the deterministic analysis even with a model set")


def render(analysis: dict) -> str:
    b = analysis["baseline"]
    lines = [f"{analysis['home_id']}: {b['kwh']} kWh over {b['days']} days, {b['hdd']} heating degree-days: "
             f"{b['kwh_per_hdd_per_100m2']} kWh per degree-day per 100 m2, percentile {b['percentile']} of "
             f"{b['peers']} homes in its region (median {b['peer_median']})"]
    if not analysis["findings"]:
        lines.append("no cause of inefficiency found")
    for i, f in enumerate(analysis["findings"], 1):
        lines.append(f"{i}. {f['cause']}: {f['title']} (about {f['excess_kwh_per_day']} kWh/day)")
        lines.append("   " + ", ".join(f"{k}={v}" for k, v in f["numbers"].items()))
        for c in f["check"]:
            lines.append(f"   check: {c}")
    return "\n".join(lines)


def run(args: argparse.Namespace, settings) -> int:
    from assistant.tools import ToolError, from_settings

    tools = from_settings(settings, args.twin_url)
    if settings.llm_provider and not args.no_model:
        return _with_model(tools, settings, args)
    try:
        analysis = tools.explain(args.home_id)
    except ToolError as e:
        raise CommandError(str(e)) from None
    print(json.dumps(analysis, indent=2) if args.json else render(analysis))
    return 0


def render_model(t: dict) -> str:
    lines = [t["answer"].strip(), "", "tools called: " + ", ".join(
        f"{c['name']}({', '.join(f'{k}={v}' for k, v in c['arguments'].items())})" for c in t["tool_calls"])]
    if t["unsupported_numbers"]:
        lines.append("FLAGGED: numbers in this answer that no tool returned: " + ", ".join(t["unsupported_numbers"]))
    else:
        lines.append("every number above comes from a tool result")
    return "\n".join(lines)


def explain_via_model(tools, settings, home_id: str) -> dict:
    """The model-written explanation (a ``Transcript`` as a dict)."""
    import asyncio

    from mcp.shared.memory import create_connected_server_and_client_session

    from assistant.llm import chat_model, explain_with_model
    from assistant.mcp_server import build_server
    from ecoretrofit.topics import render_markdown

    model = chat_model(settings.llm_provider, settings.llm_url, settings.llm_model, settings.llm_api_key)
    server = build_server(tools, lambda: render_markdown(settings))

    async def go():
        async with create_connected_server_and_client_session(server) as session:
            return await explain_with_model(session, model, home_id)

    return asyncio.run(go()).as_dict()


def _with_model(tools, settings, args) -> int:
    from assistant.llm import ChatError

    try:
        t = explain_via_model(tools, settings, args.home_id)
    except ChatError as e:
        raise CommandError(str(e)) from None
    print(json.dumps(t, indent=2) if args.json else render_model(t))
    return 3 if t["unsupported_numbers"] else 0
