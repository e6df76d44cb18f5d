"""``ecoretrofit assistant``: the MCP server over the warehouse and the twins.

``ecoretrofit assistant`` speaks MCP on stdin/stdout (for a client that starts it);
``--http`` serves streamable HTTP on 127.0.0.1:(ECO_PORT_BASE + 181)/mcp, every
request with ``Authorization: Bearer <the twin's read token>``
(``ecoretrofit twin --print-token``).
"""

from __future__ import annotations

import argparse

from ecoretrofit.errors import CommandError
from ecoretrofit.processes import port_free


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--http", action="store_true", help="streamable HTTP instead of stdio")
    parser.add_argument("--port", type=int, default=None, help="HTTP port (default: ECO_PORT_BASE + 181)")
    parser.add_argument("--twin-url", default=None, help="the twin service (default: its local port)")


def run(args: argparse.Namespace, settings) -> int:
    from assistant.mcp_server import build_server, http_app
    from assistant.tools import from_settings
    from ecoretrofit.topics import render_markdown

    tools = from_settings(settings, args.twin_url)
    server = build_server(tools, lambda: render_markdown(settings))
    if not args.http:
        server.run("stdio")
        return 0
    import uvicorn

    from twin.auth import Tokens

    port = args.port or settings.port("assistant")
    if not port_free(settings.bind_host, port):
        raise CommandError(f"port {port} on {settings.bind_host} is already in use")
    token = Tokens.for_data_dir(settings.data_dir).read
    print(f"assistant: MCP on http://{settings.bind_host}:{port}/mcp (bearer: the twin's read token)", flush=True)
    uvicorn.Server(uvicorn.Config(http_app(server, token), host=settings.bind_host, port=port,
                                  log_level="warning", access_log=False)).run()
    return 0
