"""``ecoretrofit warehouse …``: run the embedded-ClickHouse warehouse, or apply its DDL.

    ecoretrofit warehouse serve [--host H] [--port P] [--no-ddl] [--ddl-dir DIR]
    ecoretrofit warehouse ddl [--print]

``serve`` owns the chdb data directory (``$ECO_DATA_DIR/clickhouse``) and answers
ClickHouse's HTTP protocol on ``ECO_PORT_BASE+123``. ``ddl`` applies ``sinks/sql`` to
whatever ``ECO_CLICKHOUSE_URL`` points at (a real server in docker-compose).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ecoretrofit.config import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    serve = sub.add_parser("serve", help="run the warehouse service (embedded ClickHouse over HTTP)")
    serve.add_argument("--host", help="address to listen on (default: ECO_BIND_HOST)")
    serve.add_argument("--port", type=int, help="port to listen on (default: ECO_PORT_BASE+123)")
    serve.add_argument("--no-ddl", action="store_true", help="do not apply sinks/sql at start-up")
    serve.add_argument("--ddl-dir", type=Path, help="apply the *.sql files of this directory instead of sinks/sql")
    ddl = sub.add_parser("ddl", help="apply sinks/sql to ECO_CLICKHOUSE_URL (e.g. a real ClickHouse server)")
    ddl.add_argument("--print", action="store_true", help="only print the rendered statements")
    ddl.add_argument("--ddl-dir", type=Path, help="use the *.sql files of this directory instead of sinks/sql")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from sinks import warehouse

    if args.action == "serve":
        from infra.localstack.warehouse_service import serve

        serve(settings, host=args.host, port=args.port, apply_schema=not args.no_ddl, ddl_dir=args.ddl_dir)
        return 0

    if args.print:
        for sql in warehouse.render_ddl(settings, args.ddl_dir):
            print(sql + ";\n")
        return 0
    # The database may not exist yet: connect to "default"; apply_ddl creates it.
    client = _connect_or_explain(settings, database="default")
    n = warehouse.apply_ddl(client, settings, args.ddl_dir)
    print(f"applied {n} DDL statements to {settings.clickhouse_url}")
    return 0


def _connect_or_explain(settings: Settings, **kw):
    from clickhouse_connect.driver.exceptions import ClickHouseError

    from ecoretrofit.errors import CommandError
    from sinks import warehouse

    try:
        return warehouse.connect(settings, **kw)
    except ClickHouseError as exc:
        raise CommandError(f"cannot use the warehouse at {settings.clickhouse_url}: {warehouse.error_line(exc)}") from None
