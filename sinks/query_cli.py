"""``ecoretrofit query``: run SQL, or a named query, against the warehouse.

    ecoretrofit query "SELECT region, count() FROM eco.telemetry GROUP BY region"
    ecoretrofit query NAME --param home_id=h0042 --param hours=6 [--format csv]
    ecoretrofit query --list [NAME]

NAME is a file ``sinks/queries/NAME.sql``. Its parameters are ClickHouse query
parameters, written ``{home_id:String}`` in the SQL and bound by the server, so a value
can never change the statement. ``{database}`` in a named query is the warehouse database.

A named query documents itself in its leading ``--`` comments: the first paragraph is its
summary, and the lines after a ``-- Parameters`` line declare its parameters, one a
line, ``--   name  Type  default  meaning`` (a default with spaces in quotes, ``''``
for the empty string). Declared parameters not given with ``--param`` get their
default; ``--param`` names it does not declare are an error. ``--list`` prints them.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import decimal
import json
import re
import sys
import uuid

from ecoretrofit.config import Settings
from ecoretrofit.errors import CommandError
from sinks.named_queries import QUERY_NAME, describe_queries, load_named

# Statements that return rows; anything else (DDL, INSERT … SELECT, OPTIMIZE…) has no
# result set and must not get clickhouse-connect's "FORMAT Native" appended.
_RETURNS_ROWS = re.compile(r"\s*\(*\s*(SELECT|WITH|SHOW|DESC|DESCRIBE|EXISTS|EXPLAIN|CHECK)\b", re.I)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sql", metavar="SQL|NAME", nargs="?", help="SQL text, or the name of a query in sinks/queries/")
    parser.add_argument("--list", action="store_true",
                        help="list the named queries (or NAME's) with their parameters and defaults")
    parser.add_argument("--param", action="append", default=[], metavar="K=V",
                        help="query parameter for {K:Type} in the SQL (repeatable)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table",
                        help="output format (default: an aligned table)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from clickhouse_connect.driver.exceptions import ClickHouseError

    from sinks import warehouse

    if args.list:
        print(describe_queries([args.sql] if args.sql else None))
        return 0
    if not args.sql:
        raise CommandError("give SQL or the name of a query (ecoretrofit query --list shows them)")
    params = parse_params(args.param)
    if QUERY_NAME.fullmatch(args.sql):
        named = load_named(args.sql)
        sql = named.sql(settings)
        params = named.bind(params)
    else:
        sql = args.sql
    try:
        client = warehouse.connect(settings)
        if not _RETURNS_ROWS.match(_strip_leading_comments(sql)):
            summary = client.command(sql, parameters=params or None)
            written = getattr(summary, "written_rows", 0)
            print(f"OK, {written} rows written" if written else "OK")
            return 0
        result = client.query(sql, parameters=params or None)
    except ClickHouseError as exc:
        raise CommandError(_explain(exc, settings)) from None
    rows = result.result_rows
    columns = list(result.column_names)
    if args.format == "csv":
        write_csv(columns, rows, sys.stdout)
    elif args.format == "json":
        print(json.dumps([dict(zip(columns, row)) for row in rows], default=_json_value, indent=2))
    else:
        print(render_table(columns, rows))
    return 0


def _strip_leading_comments(sql: str) -> str:
    return re.sub(r"^(?:\s+|--[^\n]*\n?|/\*.*?\*/)*", "", sql, flags=re.S)


def parse_params(pairs: list[str]) -> dict[str, str]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not QUERY_NAME.fullmatch(key):
            raise CommandError(f"--param {pair!r}: expected NAME=VALUE")
        params[key] = value
    return params


def render_table(columns: list[str], rows: list) -> str:
    """An aligned text table: numbers right-aligned, NULL spelled out, row count below."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [bool(rows) and all(isinstance(r[i], (int, float, decimal.Decimal)) or r[i] is None for r in rows)
               for i in range(len(columns))]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(columns), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def write_csv(columns: list[str], rows: list, stream) -> None:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if v is None else _cell(v) for v in row])


def _cell(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes):
        return value.decode(errors="backslashreplace")
    return str(value)


def _json_value(value):
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, bytes):
        return value.decode(errors="backslashreplace")
    raise TypeError(f"cannot encode {type(value).__name__}")


def _explain(exc: Exception, settings: Settings) -> str:
    from clickhouse_connect.driver.exceptions import OperationalError

    from sinks import warehouse

    if isinstance(exc, OperationalError) and "Code:" not in str(exc):
        return f"cannot reach the warehouse at {settings.clickhouse_url} (is `ecoretrofit warehouse serve` or the stack running?)"
    return warehouse.error_line(exc)
