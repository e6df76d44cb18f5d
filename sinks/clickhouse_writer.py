"""The sink's ClickHouse side: the write-ahead ledger table and the batch writer.

Every insert carries the batch's deduplication token, so writing the same batch twice
stores it once (``non_replicated_deduplication_window`` on the target tables).
"""

from __future__ import annotations

from typing import Sequence

from sinks import reading_identity
from sinks.batching import Batch
from sinks.sink import TransientError

DEAD_LETTER_COLUMNS = ("topic", "partition", "offset", "raw", "error")


def _retryable(fn):
    """Map the warehouse being unreachable or failing to TransientError."""

    def wrapper(*args, **kw):
        from clickhouse_connect.driver.exceptions import ClickHouseError

        try:
            return fn(*args, **kw)
        except (ClickHouseError, OSError) as exc:
            from sinks.warehouse import error_line

            raise TransientError(error_line(exc)) from None

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


class ClickHouseLedger:
    """The ledger in ``{database}.sink_batches`` (sinks/sql/030_sink_tables.sql)."""

    COLUMNS = ("sink", "topic", "partition", "first_offset", "last_offset", "rows", "dead_letters")
    TYPES = ("String", "String", "UInt32", "UInt64", "UInt64", "UInt32", "UInt32")

    def __init__(self, client, database: str):
        self.client = client
        self.database = database

    @_retryable
    def pending(self, group, topic, committed):
        if not committed:
            return {}
        low = min((c or 0) for c in committed.values())
        rows = self.client.query(
            f"SELECT DISTINCT partition, first_offset, last_offset FROM {self.database}.sink_batches "
            "WHERE sink = {g:String} AND topic = {t:String} AND partition IN {ps:Array(UInt32)} "
            "AND last_offset >= {low:UInt64} ORDER BY partition, first_offset",
            parameters={"g": group, "t": topic, "ps": sorted(committed), "low": low},
        ).result_rows
        out: dict[int, list[tuple[int, int]]] = {}
        for p, first, last in rows:
            if last >= (committed.get(p) or 0):
                out.setdefault(int(p), []).append((int(first), int(last)))
        return out

    @_retryable
    def record(self, group, batches):
        rows = [(group, b.topic, b.partition, b.first_offset, b.last_offset, len(b.rows), len(b.dead)) for b in batches]
        self.client.insert("sink_batches", rows, database=self.database, column_names=list(self.COLUMNS),
                           column_type_names=list(self.TYPES))

    def forget(self, group, batches) -> None:
        pass  # rows expire with the table's TTL


class ClickHouseWriter:
    """Inserts a batch's rows (and dead letters) with its deduplication token.

    ``readings=True`` (telemetry): one row per reading (home_id, seq, ts): readings repeated in the
    batch or already stored elsewhere are dropped before the insert, and counted in
    ``batch.duplicates`` (sinks/reading_identity.py says why this is safe with the
    token). The insert then also deduplicates the blocks of every view chained from the
    table (roll-ups), which :meth:`prepare` gives a deduplication window."""

    def __init__(self, client, database: str, table: str, columns: Sequence[str], types: Sequence[str] | None = None,
                 readings: bool = False):
        self.client = client
        self.database = database
        self.table = table
        self.label = table
        self.columns = list(columns)
        self.readings = readings
        if readings:
            at = {c: i for i, c in enumerate(self.columns)}
            self._identity = {k: at[c] for k, c in (("home", "home_id"), ("seq", "seq"), ("ts", "ts"),
                                                     ("partition", "kafka_partition"), ("offset", "kafka_offset"))}
            self._bounds = {"region": at["region"], "home": at["home_id"], "ts": at["ts"]}
            self._stored_sql = reading_identity.stored_query(database, table)
        if types is None:
            described = {r[0]: r[1] for r in client.query(f"DESCRIBE TABLE {database}.{table}").result_rows}
            missing = [c for c in self.columns if c not in described]
            if missing:
                raise ValueError(f"{database}.{table} has no column(s) {', '.join(missing)}")
            types = [described[c] for c in self.columns]
        self.types = list(types)
        self.dl_types = ["String", "UInt64", "UInt64", "String", "String"]

    def prepare(self, cluster: str = "") -> list[str]:
        """A deduplication window on the table and every MergeTree table its views feed
        (derived from the warehouse's views, as the lake ingester does)."""
        from sinks.lake_ingest import prepare

        return prepare(self.client, self.database, cluster, start=self.table)

    @_retryable
    def write(self, batch: Batch) -> None:
        rows, token, settings = batch.rows, batch.token, {}
        if self.readings and rows:
            # Never assign the filtered rows back to the batch: a retry of this same
            # batch must filter the original rows again to reach the same token.
            stored = self.client.query(self._stored_sql, parameters=reading_identity.stored_query_parameters(
                rows, **self._bounds)).result_rows
            rows, dropped = reading_identity.drop_repeated(rows, stored=stored, **self._identity)
            batch.duplicates = len(dropped)
            token = reading_identity.token(batch.token, dropped)
            settings["deduplicate_blocks_in_dependent_materialized_views"] = 1
        if rows:
            self.client.insert(
                self.table, list(zip(*rows)), database=self.database, column_names=self.columns,
                column_type_names=self.types, column_oriented=True,
                settings={"insert_deduplication_token": token, **settings},
            )
        if batch.dead:
            self.client.insert(
                "dead_letters", batch.dead, database=self.database, column_names=list(DEAD_LETTER_COLUMNS),
                column_type_names=self.dl_types, settings={"insert_deduplication_token": batch.token + ":dlq"},
            )
