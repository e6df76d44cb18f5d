"""``ecoretrofit lake``: the telemetry data lake (Parquet in S3, see sinks/lake.py).

    ecoretrofit lake import --from 2026-01-14 --to 2026-01-15   # -> eco.telemetry_lake
    ecoretrofit lake import --from 2026-01-14 --to 2026-01-14 --table telemetry
    ecoretrofit lake stats [--from D] [--to D]                   # rows per date and region
    ecoretrofit lake ingest [--once]      # store each new object under landing/telemetry/ once

The lake is written by ``ecoretrofit sink --topic telemetry --to lake``. ``import``
replaces each day of the range in the target table with that day's files (so it can
be re-run); importing into ``telemetry`` rebuilds days of the main table from the lake.
``ingest`` (a component of the local stack and of docker-compose) watches the landing
prefix and stores every new object exactly once (sinks/lake_ingest.py).

"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys

from ecoretrofit.config import Settings
from ecoretrofit.errors import CommandError
from sinks import lake


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date such as 2026-01-15") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    imp = sub.add_parser("import", help="replace days of a MergeTree table with the lake's rows")
    imp.add_argument("--from", dest="start", type=_date, required=True, help="first UTC date, e.g. 2026-01-14")
    imp.add_argument("--to", dest="end", type=_date, required=True, help="last UTC date (inclusive)")
    imp.add_argument("--table", default="telemetry_lake", help="target table in ECO_CLICKHOUSE_DATABASE (default telemetry_lake)")
    st = sub.add_parser("stats", help="files and rows per date and region, read through ClickHouse's s3()")
    st.add_argument("--from", dest="start", type=_date, default=None)
    st.add_argument("--to", dest="end", type=_date, default=None)
    ing = sub.add_parser("ingest", help="store each new object under the landing prefix in ClickHouse, once")
    ing.add_argument("--once", action="store_true", help="ingest what is there now, then exit")
    ing.add_argument("--poll", type=float, default=1.0, help="seconds between listings when idle (default 1)")
    ing.add_argument("--workers", type=int, default=2, help="objects inserted side by side (default 2)")
    for p in (imp, st, ing):
        default = lake.LANDING_PREFIX if p is ing else lake.DEFAULT_PREFIX
        p.add_argument("--prefix", default=default, help=f"key prefix of the telemetry files (default {default})")
        p.add_argument("--s3-url", default=None,
                       help="the object store as ClickHouse reaches it (default ECO_S3_ENDPOINT)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from clickhouse_connect.driver.exceptions import ClickHouseError

    from sinks import lake, warehouse

    if args.action == "import" and not re.fullmatch(r"[A-Za-z_]\w*", args.table):
        raise CommandError(f"--table {args.table!r}: expected a table name")
    if args.action == "ingest":
        return _ingest(args, settings)
    try:
        client = warehouse.connect(settings)
        if args.action == "import":
            if args.end < args.start:
                raise CommandError(f"--to {args.end} is before --from {args.start}")
            result = lake.import_range(settings, client, args.start, args.end, table=args.table,
                                       prefix=args.prefix, s3_url=args.s3_url,
                                       progress=lambda line: print(line, file=sys.stderr, flush=True))
            total = sum(r["rows"] for r in result)
            print(f"imported {total:,} rows of {len(result)} day(s) from "
                  f"s3://{settings.s3_lake_bucket}/{args.prefix}/ into "
                  f"{settings.clickhouse_database}.{args.table}")
            return 0
        rows = lake.stats(settings, client, prefix=args.prefix, s3_url=args.s3_url, start=args.start, end=args.end)
    except ClickHouseError as exc:
        raise CommandError(warehouse.error_line(exc)) from None
    from sinks.query_cli import render_table

    print(render_table(["date", "region", "files", "rows"], rows))
    return 0


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    import logging
    import signal
    import threading

    from clickhouse_connect.driver.exceptions import ClickHouseError

    from ecoretrofit import metrics
    from ecoretrofit.admin import s3_client
    from sinks import lake_ingest, warehouse

    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    warehouse.wait_ready(settings)
    try:
        ingester = lake_ingest.LakeIngester(settings, warehouse.connect(settings), s3_client(settings),
                                            prefix=args.prefix, s3_url=args.s3_url, workers=args.workers,
                                            connect=lambda: warehouse.connect(settings))
        tables = ingester.prepare()
        if args.once:
            n = ingester.run_once()
            print(f"ingested {n} object(s): {ingester.stats.rows:,} rows, {ingester.stats.rejected} rejected")
            return 0
    except ClickHouseError as exc:
        raise CommandError(warehouse.error_line(exc)) from None
    metrics.serve(metrics.port_for(settings, "lake_ingest"), settings.bind_host)
    print(f"ingesting s3://{settings.s3_lake_bucket}/{ingester.prefix} into {settings.clickhouse_database}.telemetry "
          f"({len(ingester.done)} objects already in the ledger; deduplication window on {', '.join(tables)})",
          flush=True)
    stats = ingester.run(stop, poll_s=args.poll)
    print(f"stopped: {stats.objects} object(s), {stats.rows:,} rows, {stats.rejected} rejected", flush=True)
    return 0
