"""``ecoretrofit registry serve [--host H] [--port P] [--memory]``.

Serves until SIGTERM or SIGINT, then stops cleanly (exit 0). Schemas live in the Kafka
topic ``ECO_TOPIC_SCHEMAS`` (default ``_schemas``), or only in memory with --memory.
"""

from __future__ import annotations

import argparse
import signal
import threading

from ecoretrofit.errors import CommandError
from infra.localstack.registry.server import RegistryServer
from infra.localstack.registry.store import StoreError, open_log


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    serve = sub.add_parser("serve", help="serve the Confluent-compatible REST API until SIGTERM/SIGINT")
    serve.add_argument("--host", help="address to bind (default: ECO_BIND_HOST)")
    serve.add_argument("--port", type=int, help="port to bind (default: ECO_PORT_BASE + 81)")
    serve.add_argument(
        "--memory", action="store_true", help="keep schemas in memory only (lost on exit; for tests and demos)"
    )
    serve.add_argument(
        "--topic", help="Kafka topic holding the schemas (default: ECO_TOPIC_SCHEMAS)"
    )


def run(args: argparse.Namespace, settings) -> int:
    host = args.host or settings.bind_host
    port = args.port if args.port is not None else settings.port("registry")

    try:
        schema_log = open_log(settings, memory=args.memory, topic=args.topic)
    except StoreError as exc:
        raise CommandError(f"schema store unavailable: {exc}") from None
    try:
        server = RegistryServer(
            schema_log, host=host, port=port,
            credentials=(settings.schema_registry_user, settings.schema_registry_password),
        )
    except OSError as exc:
        schema_log.close()
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    except StoreError as exc:
        schema_log.close()
        raise CommandError(f"cannot load schemas: {exc}") from None

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        print(
            f"registry: serving {server.url} ({server.service.state.schema_count()} schemas, "
            f"{schema_log.describe()})",
            flush=True,
        )
        # Event.wait in slices: a signal handler runs between them even on old Pythons.
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("registry: stopped", flush=True)
    return 0
