"""The sink's ClickHouse side: the write-ahead ledger table and the batch writer.

Every insert carries the batch's deduplication token, so writing the same batch twice
stores it once (``non_replicated_deduplication_window`` on the target tables).
"""

from __future__ import annotations

from typing import Sequence

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
    """Inserts a batch's rows (and dead letters) with its deduplication token."""

    def __init__(self, client, database: str, table: str, columns: Sequence[str], types: Sequence[str] | None = None):
        self.client = client
        self.database = database
        self.table = table
        self.label = table
        self.columns = list(columns)
        if types is None:
            described = {r[0]: r[1] for r in client.query(f"DESCRIBE TABLE {database}.{table}").result_rows}
            missing = [c for c in self.columns if c not in described]
            if missing:
                raise ValueError(f"{database}.{table} has no column(s) {', '.join(missing)}")
            types = [described[c] for c in self.columns]
        self.types = list(types)
        self.dl_types = ["String", "UInt64", "UInt64", "String", "String"]

    @_retryable
    def write(self, batch: Batch) -> None:
        if batch.rows:
            self.client.insert(
                self.table, list(zip(*batch.rows)), database=self.database, column_names=self.columns,
                column_type_names=self.types, column_oriented=True,
                settings={"insert_deduplication_token": batch.token},
            )
        if batch.dead:
            self.client.insert(
                "dead_letters", batch.dead, database=self.database, column_names=list(DEAD_LETTER_COLUMNS),
                column_type_names=self.dl_types, settings={"insert_deduplication_token": batch.token + ":dlq"},
            )
