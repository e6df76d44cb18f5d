"""``ecoretrofit gateway serve``: the HTTPS device gateway (``POST /v1/telemetry``).

Binds ECO_BIND_HOST on port base + 443 (or ``--port``), TLS only, with the data
directory's own certificates unless ECO_GATEWAY_TLS_CERT/KEY name real ones.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    serve = sub.add_parser("serve", help="serve POST /v1/telemetry over HTTPS")
    serve.add_argument("--port", type=int, help="default: ECO_PORT_BASE + 443")


def run(args: argparse.Namespace, settings) -> int:
    if args.action == "serve":
        return serve(settings, args.port)
    return 2


def serve(settings, port: int | None = None) -> int:
    import uvicorn

    from gateway.http_app import build_app
    from gateway.kafka_out import AckedProducer
    from gateway.registry import DeviceRegistry, registry_path
    from gateway.tls import tls_files

    tls = tls_files(settings)
    producer = AckedProducer(settings)
    app = build_app(settings, DeviceRegistry(registry_path(settings)), producer)
    try:
        uvicorn.run(
            app, host=settings.bind_host, port=port or settings.port("gateway"),
            ssl_certfile=str(tls.cert), ssl_keyfile=str(tls.key),
            log_level="warning", access_log=False, server_header=False,
            timeout_keep_alive=30, timeout_graceful_shutdown=10,
        )
    finally:
        left = producer.close()
    return 0 if not left else 1
