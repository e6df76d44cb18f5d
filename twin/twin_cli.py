"""``ecoretrofit twin``: the digital-twin service (API, dashboard) on 127.0.0.1, its
state kept live from the topics, its history from the warehouse. Until SIGTERM/Ctrl-C.

Tokens: ``$ECO_DATA_DIR/twin-tokens.env`` (generated on first use; ``--print-token``
prints the read token and exits)."""

from __future__ import annotations

import argparse
import logging

from ecoretrofit.errors import CommandError
from ecoretrofit.processes import port_free

log = logging.getLogger("eco.twin")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=None, help="default: ECO_PORT_BASE + the twin offset")
    parser.add_argument("--print-token", action="store_true", help="print the read token and the URL, then exit")
    parser.add_argument("--no-live", action="store_true", help="do not consume the topics (attributes only)")


def run(args: argparse.Namespace, settings) -> int:
    from twin.auth import Tokens

    port = args.port or settings.port("twin")
    tokens = Tokens.for_data_dir(settings.data_dir)
    url = f"http://{settings.bind_host}:{port}/"
    if args.print_token:
        print(f"{url}#token={tokens.read}")
        return 0
    if not port_free(settings.bind_host, port):
        raise CommandError(f"port {port} on {settings.bind_host} is already in use")

    import uvicorn

    from twin.city import build_city
    from twin.live import LiveFeed
    from twin.service import create_app
    from twin.warehouse_history import WarehouseHistory

    city = build_city(settings.homes, settings.regions, settings.seed)
    history = WarehouseHistory(settings, lambda h: city.store.get(h).region)
    feed = None if args.no_live else LiveFeed(settings, city.store).start()
    app = create_app(city.store, tokens, history, city.building_of, feed=feed)
    print(f"twin: {len(city.store.twins)} homes on {url} (token in {tokens.path(settings.data_dir)})", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.bind_host, port=port, log_level="warning",
                                           access_log=False))
    try:
        server.run()  # handles SIGINT/SIGTERM itself
    finally:
        if feed is not None:
            feed.stop()
    return 0
