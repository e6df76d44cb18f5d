"""The one command: ``ecoretrofit <subcommand> …``.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args, settings) -> int``. Modules are imported only when their subcommand is
chosen, so ``ecoretrofit stack status`` does not pay for importing Faust or River.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys

from ecoretrofit.config import ConfigError, Settings
from ecoretrofit.errors import CommandError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "stack": ("infra.localstack.stack_cli", "start, stop or inspect the local stack (broker, S3, registry, warehouse)"),
    "demo": ("ecoretrofit.demo_cli", "run the whole city for a minute and print what happened"),
    "simulate": ("producers.simulate_cli", "stream simulated homes to Kafka, live or as a backfill"),
    "process": ("processors.process_cli", "run the Faust stream processor (anomaly detection)"),
    "query": ("sinks.query_cli", "run SQL or a named query against the warehouse"),
    "sink": ("sinks.sink_cli", "batching ClickHouse sink with exactly-once delivery"),
    "lake": ("sinks.lake_cli", "the telemetry data lake on S3: import days into ClickHouse, stats"),
    "topics": ("ecoretrofit.topics_cli", "print the contract of every topic"),
    "maintenance": ("maintenance.maintenance_cli", "component reliability: MTBF, MTTR, Kaplan-Meier and Weibull fits, next failures"),
    "twin": ("twin.twin_cli", "the digital twin of every home: HTTP API, what-if and the city dashboard"),
    "assistant": ("assistant.assistant_cli", "MCP server over the warehouse and the twins (stdio, or --http with a token)"),
    "explain": ("assistant.explain_cli", "why is a home inefficient: ranked findings, their numbers, how to check them"),
    "consumers": ("ecoretrofit.consumers_cli", "committed offsets and lag of every consumer group (--serve: /metrics)"),
    "maintain": ("maintenance.maintain_cli", "run the predictive-maintenance stream processor (predictions, predictive work orders)"),
    "eval": ("evaluation.eval_cli", "score the detectors on injected faults or on NAB"),
    "bench": ("bench.bench_cli", "measure throughput and latency against baselines"),
    "init": ("infra.init_cli", "create topics, register schemas, create the lake bucket, apply the ClickHouse DDL"),
    "gateway": ("gateway.gateway_cli", "the device gateway: HTTPS ingestion (serve) and the MQTT bridge"),
    "devices": ("gateway.devices_cli", "register, list or revoke the devices allowed to send readings"),
    "registry": ("infra.localstack.registry_cli", "run the Confluent-compatible schema registry"),
    "warehouse": ("infra.localstack.warehouse_cli", "run the embedded-ClickHouse warehouse service"),
}


# Commands that start processes of their own (a stack, workers, simulators) and stop
# them in ``finally`` blocks: SIGTERM (a service manager, CI's timeout, ``kill``) ends
# them as Ctrl-C does, through those blocks, instead of leaving the processes behind;
# and Ctrl-C does so even in a background job, which inherits SIGINT ignored.
# (Services handle SIGTERM themselves.)
STOPS_ITS_PROCESSES = {"bench", "demo", "eval"}


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def _top_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ecoretrofit",
        description="EcoRetrofit Streams: real-time telemetry of a simulated city.",
        epilog="Configuration comes from ECO_* environment variables (see README).",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    verbose = False
    while argv and argv[0] in ("-v", "--verbose"):
        verbose = True
        argv.pop(0)
    if not argv or argv[0] not in COMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            top.print_usage(sys.stderr)
            print(f"ecoretrofit: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        top.print_help()
        return 0 if argv else 2
    name = argv.pop(0)
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"ecoretrofit {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if name in STOPS_ITS_PROCESSES:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _interrupt)
    try:
        settings = Settings.from_env()
        return int(module.run(args, settings) or 0)
    except (CommandError, ConfigError) as exc:
        print(f"ecoretrofit {name}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ecoretrofit {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
