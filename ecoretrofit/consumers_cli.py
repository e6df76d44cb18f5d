"""``ecoretrofit consumers [--serve]``: every consumer group's committed offsets and
lag, per topic (``ecoretrofit.consumer_progress``); ``--serve`` exports them on /metrics
until SIGTERM (the local stack runs it so Prometheus can alert on a stalled consumer)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from ecoretrofit import metrics
from ecoretrofit.config import Settings
from ecoretrofit.consumer_progress import export, measure
from ecoretrofit.errors import CommandError

log = logging.getLogger("eco.consumers")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--serve", action="store_true", help="export the figures on /metrics until SIGTERM")
    parser.add_argument("--interval", type=float, default=10.0, help="--serve: seconds between measurements (default 10)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.serve:
        port = metrics.port_for(settings, "consumers")
        if not metrics.serve(port, settings.bind_host):
            raise CommandError(f"port {port} on {settings.bind_host} is already in use")
        print(f"consumers: serving consumer progress on http://{settings.bind_host}:{port}/metrics", flush=True)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.is_set():
            try:
                export(settings.kafka_bootstrap)
            except Exception as exc:  # broker down: keep the last figures, try again
                log.warning("cannot measure consumer progress: %s", exc)
            stop.wait(args.interval)
        return 0
    rows = measure(settings.kafka_bootstrap)
    if not rows:
        print("no consumer group has committed offsets")
        return 0
    width = max(len(r.group) for r in rows)
    twidth = max(len(r.topic) for r in rows)
    print(f"{'group':<{width}}  {'topic':<{twidth}}  partitions  committed       lag")
    for r in rows:
        print(f"{r.group:<{width}}  {r.topic:<{twidth}}  {r.partitions:>10}  {r.committed:>9}  {r.lag:>8}")
    return 0
