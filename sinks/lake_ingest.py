"""Continuous S3 ingestion: every new Parquet object under the lake's landing prefix is
stored in ClickHouse exactly once, without a manual import.

Objects that land in ``s3://$ECO_S3_LAKE_BUCKET/landing/telemetry/`` (same layout and
columns as the lake, :data:`sinks.lake.TELEMETRY_COLUMNS`: ``date=D/region=R/*.parquet``)
are picked up by ``ecoretrofit lake ingest`` (a stack component, and a compose service).
It lists the prefix, skips the keys its ledger ``lake_ingested`` already holds, and per
new object runs one statement::

    INSERT INTO telemetry_lake_incoming SELECT …, '<key>' FROM s3('<key>') ORDER BY ALL
    SETTINGS insert_deduplication_token = '<key>', deduplicate_blocks_in_dependent_materialized_views = 1

then records the key in the ledger. ``telemetry_lake_incoming`` is a Null table whose
views apply the plausibility contract (sinks/plausibility_sql.py) like the Kafka
path's: plausible readings go to ``telemetry`` (and on through the roll-up views),
implausible ones to ``dead_letters`` with their reasons (``topic`` = ``lake:<key>``).

Exactly once, also across a crash between the insert and the ledger write (or a
warehouse restart mid-insert): the insert carries the object key as its deduplication
token, and every MergeTree table the insert reaches has a deduplication window
(:func:`prepare`), so inserting the same object again adds nothing anywhere, roll-ups
included. ``ORDER BY ALL`` makes the SELECT stable, which ClickHouse requires before it
deduplicates an ``INSERT … SELECT``; without a token the window only drops a block that
is identical byte for byte (``ingested_at`` included), so the Kafka-engine path is
unaffected. The window only has to cover the objects inserted since the last ledger
write (one, as the ingester works object by object); it is much larger.

An object ClickHouse cannot read (not Parquet, a missing column, a wrong type) is
recorded in the ledger as rejected with the error, and one dead letter names it: it
does not stall the ingester, and nothing vanishes. Errors reaching S3 or ClickHouse are
retried with a growing pause.

An object rewritten under a key already ingested is not read again: keys are the
identity (writers name objects uniquely, as the lake sink and the bulk demo do).

Why not S3Queue: chdb refuses ``ENGINE = S3Queue`` without a ZooKeeper-compatible
coordinator (shared/notes/local-stack.md), and the local stack has none; this ingester
works the same against the embedded warehouse and a ClickHouse server.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from ecoretrofit import metrics
from sinks.lake import LANDING_PREFIX, TELEMETRY_COLUMNS, list_files, s3_function
from sinks.plausibility_sql import literal

log = logging.getLogger("eco.lake_ingest")

INCOMING_TABLE = "telemetry_lake_incoming"
LEDGER_TABLE = "lake_ingested"
# Blocks remembered per table for deduplication (see the module docstring).
DEDUP_WINDOW = 10_000


def insert_sql(database: str, key: str, source: str) -> str:
    """The statement that stores one object (pure).

    >>> sql = insert_sql("eco", "landing/telemetry/a.parquet", "s3('u', 'Parquet')")
    >>> "INSERT INTO eco.telemetry_lake_incoming" in sql and "ORDER BY ALL" in sql
    True
    >>> "insert_deduplication_token = 'landing/telemetry/a.parquet'" in sql
    True
    """
    cols = ", ".join(TELEMETRY_COLUMNS)
    return (f"INSERT INTO {database}.{INCOMING_TABLE} ({cols}, lake_key) "
            f"SELECT {cols}, {literal(key)} FROM {source} ORDER BY ALL "
            f"SETTINGS insert_deduplication_token = {literal(key)}, "
            f"deduplicate_blocks_in_dependent_materialized_views = 1")


def downstream_tables(views: list[tuple[str, str, str]], start: str) -> list[str]:
    """Every table an insert into ``start`` reaches through materialized views, in
    breadth-first order (pure). ``views`` holds (view, source table, target table).

    >>> downstream_tables([("v1", "a", "b"), ("v2", "b", "c"), ("v3", "x", "y"), ("v4", "a", "d")], "a")
    ['b', 'd', 'c']
    """
    out, frontier = [], [start]
    while frontier:
        nxt = []
        for src in frontier:
            for _view, s, target in views:
                if s == src and target not in out and target != start:
                    out.append(target)
                    nxt.append(target)
        frontier = nxt
    return out


def prepare(client, database: str, cluster: str = "", window: int = DEDUP_WINDOW,
            start: str = INCOMING_TABLE) -> list[str]:
    """Give every MergeTree table an insert into ``start`` writes (``start`` itself
    included: the landing path's is a Null table, the telemetry sink's is `telemetry`)
    a deduplication window. Returns those tables. Derived from the views in the warehouse
    (and, in a cluster, from each Distributed table to its shards' table), so a roll-up
    added later is covered without a list to keep up to date. In a cluster the ALTER runs
    ON CLUSTER (the DDL's own rendering, sinks/warehouse.py)."""
    edges = _edges(client, database)
    engines = dict(client.query(
        "SELECT name, engine FROM system.tables WHERE database = {db:String}", parameters={"db": database}
    ).result_rows)
    tables = [t for t in [start] + downstream_tables(edges, start) if engines.get(t, "").endswith("MergeTree")]
    on_cluster = f" ON CLUSTER {literal(cluster)}" if cluster else ""
    for t in tables:
        client.command(f"ALTER TABLE {database}.{t}{on_cluster} "
                       f"MODIFY SETTING non_replicated_deduplication_window = {int(window)}")
    return tables


TABLES_SQL = ("SELECT name, engine, dependencies_table, create_table_query, engine_full FROM system.tables "
              "WHERE database = {db:String}")


def _edges(client, database: str) -> list[tuple[str, str, str]]:
    return edges(client.query(TABLES_SQL, parameters={"db": database}).result_rows)


def edges(tables) -> list[tuple[str, str, str]]:
    """(via, source, target) from rows of :data:`TABLES_SQL` (pure): every materialized
    view (a source table's ``dependencies_table`` names the views reading it; a view's
    ``TO`` table is its target), and every Distributed table to the table it spreads
    over the shards.

    >>> edges([("t", "Distributed", [], "", "Distributed('c', 'db', 't_local', rand())"),
    ...        ("t_local", "MergeTree", ["db.v"], "", "MergeTree"),
    ...        ("v", "MaterializedView", [], "CREATE MATERIALIZED VIEW db.v TO db.r (x UInt8) AS SELECT 1", "")])
    [('t', 't', 't_local'), ('v', 't_local', 'r')]
    """
    import re

    creates = {name: create for name, engine, _deps, create, _full in tables if engine == "MaterializedView"}
    out = []
    for name, engine, views, _create, full in tables:
        if engine == "Distributed":
            m = re.match(r"Distributed\(\s*'[^']*'\s*,\s*'[^']*'\s*,\s*'(\w+)'", full or "")
            if m:
                out.append((name, name, m.group(1)))
        for view in views:
            view = view.rsplit(".", 1)[-1]
            m = re.search(r"\bTO\s+(?:`?\w+`?\.)?`?(\w+)`?", creates.get(view, ""))
            if m:
                out.append((view, name, m.group(1)))
    return out


@dataclass
class IngestStats:
    objects: int = 0
    rows: int = 0
    rejected: int = 0
    errors: list[str] = field(default_factory=list)


class LakeIngester:
    """Lists the landing prefix and stores each object not yet in the ledger."""

    def __init__(self, settings, client, s3, prefix: str = LANDING_PREFIX, s3_url: str | None = None,
                 workers: int = 1, connect=None):
        self.settings = settings
        self.client = client
        self.workers = max(1, int(workers))
        self.connect = connect or (lambda: client)
        self._local = threading.local()
        self._lock = threading.Lock()
        self.s3 = s3
        self.prefix = prefix.strip("/") + "/"
        self.s3_url = s3_url
        self.db = settings.clickhouse_database
        self.done: set[str] = set()
        self.stats = IngestStats()

    def prepare(self) -> list[str]:
        tables = prepare(self.client, self.db, self.settings.clickhouse_cluster)
        self.done = {r[0] for r in self.client.query(
            f"SELECT DISTINCT key FROM {self.db}.{LEDGER_TABLE}").result_rows}
        return tables

    def pending(self) -> list[str]:
        """New object keys, oldest first (by modification time, then key)."""
        objs = [o for o in list_files(self.s3, self.settings.s3_lake_bucket, self.prefix) if o["Key"] not in self.done]
        objs.sort(key=lambda o: (o["LastModified"], o["Key"]))
        return [o["Key"] for o in objs]

    def ingest(self, key: str, client=None) -> int:
        """Store one object (idempotent) and record it. Returns the rows it held."""
        from clickhouse_connect.driver.exceptions import DatabaseError

        client = client or self.client
        source = s3_function(self.settings, key, self.s3_url)
        try:
            # the object's row count (from the Parquet footer), for the ledger
            rows = int(client.command(f"SELECT count() FROM {source}"))
            client.command(insert_sql(self.db, key, source))
        except DatabaseError as exc:
            if not _unreadable(exc):
                raise
            self._reject(key, exc, client)
            return 0
        self._record(client, key, rows, "stored")
        with self._lock:
            self.done.add(key)
            self.stats.objects += 1
            self.stats.rows += rows
        metrics.LAKE_OBJECTS.labels("stored").inc()
        metrics.LAKE_ROWS.inc(rows)
        return rows

    def _record(self, client, key: str, rows: int, status: str, error: str = "") -> None:
        """The ledger row of an object: it is never read again."""
        client.command(f"INSERT INTO {self.db}.{LEDGER_TABLE} (key, rows, status, error) VALUES "
                       f"({literal(key)}, {int(rows)}, {literal(status)}, {literal(error)})")

    def _reject(self, key: str, exc: BaseException, client) -> None:
        from sinks.warehouse import error_line

        err = error_line(exc)
        log.warning("rejected %s: %s", key, err)
        # The dead letter first: a crash before the ledger write repeats it, which the
        # dead_letters window deduplicates (same token).
        client.command(
            f"INSERT INTO {self.db}.dead_letters (topic, partition, offset, raw, error) "
            f"SELECT {literal('lake:' + key)}, 0, 0, {literal(key)}, {literal('unreadable lake object: ' + err)} "
            f"SETTINGS insert_deduplication_token = {literal('rejected:' + key)}")
        self._record(client, key, 0, "rejected", err)
        with self._lock:
            self.done.add(key)
            self.stats.rejected += 1
        metrics.LAKE_OBJECTS.labels("rejected").inc()

    def run_once(self) -> int:
        """Ingest every pending object; the number ingested. With ``workers`` > 1,
        objects are inserted side by side (each on its own connection: a session
        runs one query at a time), which keeps both cores of a small machine busy."""
        keys = self.pending()
        if self.workers <= 1 or len(keys) <= 1:
            for key in keys:
                self.ingest(key)
            return len(keys)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.workers) as pool:
            for _ in pool.map(self._ingest_on_own_client, keys):
                pass
        return len(keys)

    def _ingest_on_own_client(self, key: str) -> int:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self.connect()
        return self.ingest(key, client)

    def run(self, stop: threading.Event, poll_s: float = 1.0, max_pause_s: float = 30.0) -> IngestStats:
        pause = poll_s
        while not stop.is_set():
            try:
                n = self.run_once()
                pause = poll_s
            except Exception as exc:  # S3 or the warehouse away: retry, never skip
                if not _transient(exc):
                    raise
                self.stats.errors.append(str(exc)[:300])
                log.warning("retrying in %.1fs: %s", pause, str(exc)[:300])
                n = 0
                pause = min(max_pause_s, pause * 2)
            if not n:
                stop.wait(pause)
        return self.stats


# ClickHouse error codes meaning "this object cannot be read as telemetry", as opposed
# to "the warehouse or S3 is unavailable": CANNOT_PARSE_*, INCORRECT_DATA, THERE_IS_NO_COLUMN,
# TYPE_MISMATCH, CANNOT_CONVERT_TYPE, CANNOT_EXTRACT_TABLE_STRUCTURE, BAD_ARGUMENTS,
# UNKNOWN_IDENTIFIER, ILLEGAL_TYPE_OF_ARGUMENT, CANNOT_READ_ALL_DATA, ARROW/PARQUET errors.
_UNREADABLE_CODES = {6, 16, 27, 32, 33, 36, 41, 43, 47, 53, 70, 72, 73, 117, 173, 636, 1001}


def _code(exc: BaseException) -> int | None:
    import re

    m = re.search(r"Code: (\d+)\.", str(exc))
    return int(m.group(1)) if m else None


def _unreadable(exc: BaseException) -> bool:
    return _code(exc) in _UNREADABLE_CODES


def _transient(exc: BaseException) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError
    from clickhouse_connect.driver.exceptions import ClickHouseError

    return isinstance(exc, (BotoCoreError, ClientError, ClickHouseError, OSError))


def wait_stored(client, database: str, keys: set[str], timeout_s: float, poll_s: float = 0.5) -> set[str]:
    """Wait until the ledger holds every key in ``keys``; returns those still missing."""
    deadline = time.monotonic() + timeout_s
    missing = set(keys)
    while missing and time.monotonic() < deadline:
        got = {r[0] for r in client.query(
            f"SELECT DISTINCT key FROM {database}.{LEDGER_TABLE} WHERE key IN {{keys:Array(String)}}",
            parameters={"keys": sorted(missing)}).result_rows}
        missing -= got
        if missing:
            time.sleep(poll_s)
    return missing
