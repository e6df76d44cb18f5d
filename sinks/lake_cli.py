"""``ecoretrofit lake``: the telemetry data lake (Parquet in S3, see sinks/lake.py).

    ecoretrofit lake import --from 2026-01-14 --to 2026-01-15   # -> eco.telemetry_lake
    ecoretrofit lake import --from 2026-01-14 --to 2026-01-14 --table telemetry
    ecoretrofit lake stats [--from D] [--to D]                   # rows per date and region

The lake is written by ``ecoretrofit sink --topic telemetry --to lake``. ``import``
replaces each day of the range in the target table with that day's files (so it can
be re-run); importing into ``telemetry`` rebuilds days of the main table from the lake.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys

from ecoretrofit.config import Settings
from ecoretrofit.errors import CommandError


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
    for p in (imp, st):
        p.add_argument("--prefix", default="telemetry", help="key prefix of the telemetry files (default telemetry)")
        p.add_argument("--s3-url", default=None,
                       help="the object store as ClickHouse reaches it (default ECO_S3_ENDPOINT)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from clickhouse_connect.driver.exceptions import ClickHouseError

    from sinks import lake, warehouse

    if args.action == "import" and not re.fullmatch(r"[A-Za-z_]\w*", args.table):
        raise CommandError(f"--table {args.table!r}: expected a table name")
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
