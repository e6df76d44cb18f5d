"""Prepare a cluster for the pipeline, once: ``python -m infra.init_cli`` (the
docker-compose ``warehouse-init`` job), or ``ecoretrofit init`` once registered.

Steps, in order, each retried until ``--wait`` seconds have passed (a service that
reports healthy may still refuse its first requests):

1. ``topics``:  create every topic declared in ``schemas/topics.py`` that is missing, with
   its partition count and config (brokers would auto-create them with the wrong one, or not at all);
2. ``schemas``: register each topic's value schema under ``<topic>-value`` and pin the
   subject's declared compatibility (the contract of docs/topics.md);
3. ``buckets``: create the data-lake bucket in the S3 store;
4. ``ddl``:     apply ``sinks/sql`` to ``ECO_CLICKHOUSE_URL`` (``sinks.warehouse.apply_ddl``;
   idempotent: every statement is ``IF NOT EXISTS``).

Every step is idempotent, so the job can run at every ``docker compose up``. Exit 0
only if every step that was not skipped succeeded.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Callable

from ecoretrofit.config import ConfigError, Settings
from ecoretrofit.errors import CommandError

STEPS = ("topics", "schemas", "buckets", "ddl")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait", type=float, default=180.0, metavar="SECONDS",
        help="keep retrying a failing step for this long (default 180)",
    )
    parser.add_argument(
        "--skip", action="append", default=[], choices=STEPS,
        help="skip a step (repeatable)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    actions: dict[str, Callable[[Settings], str]] = {
        "topics": create_topics,
        "schemas": register_schemas,
        "buckets": create_lake_bucket,
        "ddl": apply_ddl,
    }
    for step in STEPS:
        if step in args.skip:
            print(f"init: {step:<8} skipped", flush=True)
            continue
        t0 = time.monotonic()
        result = _retry(step, lambda: actions[step](settings), args.wait)
        print(f"init: {step:<8} ok in {time.monotonic() - t0:4.1f}s: {result}", flush=True)
    return 0


def _retry(step: str, action: Callable[[], str], wait_s: float) -> str:
    deadline = time.monotonic() + wait_s
    delay = 0.5
    while True:
        try:
            return action()
        except CommandError as exc:
            last = str(exc)
        except Exception as exc:  # noqa: BLE001 - any client error is retried, then reported
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() + delay > deadline:
            raise CommandError(f"{step} failed after {wait_s:.0f}s: {last}")
        print(f"init: {step:<8} not yet ({last}); retrying", file=sys.stderr, flush=True)
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


# ------------------------------------------------------------------------ steps
def create_topics(settings: Settings) -> str:
    from ecoretrofit.admin import ensure_topics
    from schemas.topics import partitions_by_name

    created = ensure_topics(settings)
    specs = partitions_by_name(settings)
    return "created " + (", ".join(f"{t} ({specs[t]} partitions)" for t in created) if created else "none: all exist")


def register_schemas(settings: Settings) -> str:
    from ecoretrofit.admin import register_schemas as register

    ids = register(settings)
    return ", ".join(f"{subject} id {i} ({level})" for subject, (i, level) in ids.items())


def create_lake_bucket(settings: Settings) -> str:
    from ecoretrofit.admin import ensure_buckets

    if not ensure_buckets(settings, (settings.s3_lake_bucket,)):
        return f"bucket {settings.s3_lake_bucket} exists"
    return f"created bucket {settings.s3_lake_bucket}"


def apply_ddl(settings: Settings) -> str:
    from sinks import warehouse

    # The database may not exist yet: connect to "default"; the DDL creates it.
    client = warehouse.connect(settings, database="default")
    n = warehouse.apply_ddl(client, settings)
    return f"{n} statements applied to {settings.clickhouse_url}"


# ------------------------------------------------------------------ entry point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.init_cli",
        description="Create topics, register schemas, create the lake bucket and apply the "
        "ClickHouse DDL, against the endpoints of the ECO_* environment variables.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(args, Settings.from_env())
    except (CommandError, ConfigError) as exc:
        print(f"init: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
