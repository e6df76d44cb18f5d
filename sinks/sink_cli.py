"""``ecoretrofit sink``: the batching sink with exactly-once delivery (sinks/sink.py).

    ecoretrofit sink --topic telemetry                  # -> eco.telemetry (ECO_TELEMETRY_INGEST=sink)
    ecoretrofit sink --topic anomalies --batch-rows 5000 --batch-seconds 1
    ecoretrofit sink --topic telemetry --to lake        # -> Parquet in s3://$ECO_S3_LAKE_BUCKET/telemetry/

SIGTERM or Ctrl-C: the current batches are written and their offsets committed, then
the process exits. /metrics on ECO_METRICS_PORT+5.
"""

from __future__ import annotations

import argparse
import logging
import signal

from ecoretrofit import metrics
from ecoretrofit.config import Settings
from ecoretrofit.errors import CommandError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topic", required=True, choices=("telemetry", "anomalies", "alerts"),
                        help="which topic to store (its name comes from ECO_TOPIC_*)")
    parser.add_argument("--to", choices=("warehouse", "lake"), default="warehouse",
                        help="ClickHouse MergeTree tables (default) or Parquet files in the S3 lake")
    parser.add_argument("--batch-rows", type=int, default=None,
                        help="messages per batch and partition (default 20000; lake 250000)")
    parser.add_argument("--batch-seconds", type=float, default=None,
                        help="oldest message a batch may hold before it is written (default 2; lake 60)")
    parser.add_argument("--group", default=None, help="consumer group (default eco-sink-<topic> / eco-lake-<topic>)")
    parser.add_argument("--offset-reset", choices=("earliest", "latest"), default="earliest",
                        help="where a group without committed offsets starts (default earliest; on Tansu, "
                             "whose high watermarks are wrong, latest starts at the last producer batch)")
    parser.add_argument("--table", default=None,
                        help="target table (default: telemetry -> `telemetry` when ECO_TELEMETRY_INGEST=sink, "
                             "else `telemetry_sink`; anomalies -> anomalies_sink; alerts -> alerts_sink)")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="/metrics port (default ECO_METRICS_PORT+5)")
    parser.add_argument("--lake-prefix", default=None, help="lake: key prefix in the bucket (default telemetry)")
    parser.add_argument("--exit-when-idle", type=float, default=None, metavar="SECONDS",
                        help="stop once nothing arrived for this long and everything is stored (backfills, benchmarks)")
    # test hook: sleep between the insert and the offset commit, so a test can SIGKILL there
    parser.add_argument("--debug-commit-delay", type=float, default=0.0, help=argparse.SUPPRESS)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from sinks.wiring import build

    log = logging.getLogger("eco.sink")
    if not log.isEnabledFor(logging.INFO):
        log.setLevel(logging.INFO)  # re-cuts and retries are worth a line in the log
    if (args.batch_rows is not None and args.batch_rows < 1) or (args.batch_seconds is not None and args.batch_seconds <= 0):
        raise CommandError("--batch-rows and --batch-seconds must be positive")
    try:
        sink = build(settings, args.topic, to=args.to, group=args.group, batch_rows=args.batch_rows,
                     batch_seconds=args.batch_seconds, offset_reset=args.offset_reset,
                     commit_delay=args.debug_commit_delay, lake_prefix=args.lake_prefix, table=args.table)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    metrics.serve(args.metrics_port or metrics.port_for(settings, "sink"), settings.bind_host)

    def on_signal(signum, frame):
        sink.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"sink: {sink.topic} -> {sink.writer.label} (group {sink.group}, batches of "
          f"{sink.batcher.max_rows:,} messages / {sink.batcher.max_seconds:g}s)", flush=True)
    stats = sink.run(idle_exit=args.exit_when_idle)
    print(f"sink: stored {stats['rows']:,} rows and {stats['dead_letters']:,} dead letters "
          f"({stats['duplicates']:,} repeated readings not stored again) in "
          f"{stats['batches']:,} batches ({stats['replayed_batches']} re-cut from the ledger)", flush=True)
    return 0
