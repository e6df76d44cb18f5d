"""``ecoretrofit gateway serve``: the HTTPS device gateway (``POST /v1/telemetry``);
``ecoretrofit gateway bridge``: the MQTT -> Kafka bridge (gateway/bridge.py).

Binds ECO_BIND_HOST on port base + 443 (or ``--port``), TLS only, with the data
directory's own certificates unless ECO_GATEWAY_TLS_CERT/KEY name real ones.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    serve = sub.add_parser("serve", help="serve POST /v1/telemetry over HTTPS")
    serve.add_argument("--port", type=int, help="default: the port of ECO_GATEWAY_URL (locally ECO_PORT_BASE + 443)")
    sub.add_parser("broker", help="write Mosquitto's config, password and ACL files, then run Mosquitto (containers)")
    bridge = sub.add_parser("bridge", help="MQTT -> Kafka bridge (shared subscription; run several to scale)")
    bridge.add_argument("--client-id", default=None,
                        help="stable per bridge instance: the broker keeps its session (and queue) by it "
                             "(default eco-bridge-<hostname>)")


def run(args: argparse.Namespace, settings) -> int:
    if args.action == "serve":
        return serve(settings, args.port)
    if args.action == "broker":
        return broker(settings)
    if args.action == "bridge":
        import socket

        return bridge(settings, args.client_id or f"eco-bridge-{socket.gethostname()}")
    return 2


def serve(settings, port: int | None = None) -> int:
    from urllib.parse import urlsplit

    import uvicorn

    from gateway.http_app import build_app
    from gateway.kafka_out import AckedProducer
    from gateway.registry import DeviceRegistry, registry_path
    from gateway.tls import tls_files

    from ecoretrofit import metrics

    tls = tls_files(settings)
    metrics.serve(metrics.port_for(settings, "gateway"), settings.bind_host)
    producer = AckedProducer(settings)
    app = build_app(settings, DeviceRegistry(registry_path(settings)), producer)
    try:
        uvicorn.run(
            app, host=settings.bind_host, port=port or urlsplit(settings.gateway_url).port or 443,
            ssl_certfile=str(tls.cert), ssl_keyfile=str(tls.key),
            log_level="warning", access_log=False, server_header=False,
            timeout_keep_alive=30, timeout_graceful_shutdown=10,
        )
    finally:
        left = producer.close()
    return 0 if not left else 1


def bridge(settings, client_id: str) -> int:
    import signal
    import threading

    from gateway.bridge import Bridge
    from gateway.kafka_out import AckedProducer

    import logging

    # connects, disconnects and subscriptions are worth a line in the log
    logging.getLogger("gateway.bridge").setLevel(logging.INFO)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    from ecoretrofit import metrics

    metrics.serve(metrics.port_for(settings, "bridge"), settings.bind_host)
    producer = AckedProducer(settings)
    try:
        Bridge(settings, producer, client_id).run(stop)
    finally:
        left = producer.close()
    return 0 if not left else 1


def broker(settings) -> int:
    """The local stack starts Mosquitto itself; a container runs this instead. After
    ``devices add|revoke`` in another container, send the broker SIGHUP to reload."""
    import os

    from ecoretrofit.errors import CommandError
    from gateway.mqtt_broker import mosquitto_binary, prepare

    binary = mosquitto_binary()
    if binary is None:
        raise CommandError("mosquitto not found: apt-get install mosquitto")
    conf = prepare(settings)
    os.execv(str(binary), [str(binary), "-c", str(conf)])
