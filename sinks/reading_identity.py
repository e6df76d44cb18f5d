"""One row per reading: a retried reading is stored once (pure: no I/O).

A device or the gateway may produce the same reading twice (a retry after a lost
acknowledgement: same home_id, seq and ts, two Kafka offsets). The telemetry sink stores
it once: before a batch is inserted, :func:`drop_repeated` removes every reading whose
(home_id, seq, ts) appeared earlier in the batch or is already stored at another Kafka
position. The time is part of the key because a retry repeats the reading unchanged,
while a counter that starts again (a restarted simulator or a reset device: seq from 0)
gives other readings the same (home_id, seq) at other times: those are stored.
:func:`stored_query` finds the stored ones, bounded by the batch's regions,
homes and time range so ClickHouse reads only the granules of the ORDER BY
(region, home_id, ts) and the weekly partitions those readings can be in (a retry
carries the original ts).

Why it holds: telemetry is keyed by home, so one partition, and one sink consumer,
holds every copy of a home's readings, and batches of a partition are written one
after the other: a copy in a later batch finds the first one stored. Limits (see
docs/delivery.md): two writers for one home at once (a rebalance that hands a partition
over while its old owner still writes, or a producer that keys a home's readings
differently) can both find nothing and both store it; a copy that arrives after the
first one left the 7-day raw table is stored again.

Interplay with the insert deduplication token (sinks/sink.py): a batch replayed after a
crash must be inserted *exactly* as it was the first time, or the token drops a
different block under the same name (ClickHouse numbers the parts of a multi-part
insert and deduplicates each by token + number: if the filter removed rows the second
time, a whole partition's part could be missing and the numbers shift, and the rows of
a part that was never written would be dropped with it: lost). So the filter ignores
rows stored at the reading's *own* position (partition, offset): those are this batch's
own earlier attempt, which the token deduplicates (and, with
deduplicate_blocks_in_dependent_materialized_views, the roll-ups with it, which the
filter alone could not: a crash between the raw part and a roll-up part would leave the
roll-up short for good). What the filter drops is then the same on every attempt,
unless another writer stored a copy in between (the limit above); and the token names
what was dropped (:func:`token`), so a batch filtered differently is a different
insert: its rows are stored (never lost), at worst once more.

>>> rows = [("H1", 5, 9, 0, 10), ("H1", 6, 9, 0, 11), ("H1", 5, 9, 0, 12), ("H2", 5, 9, 0, 13), ("H1", 5, 8, 0, 14)]
>>> idx = dict(home=0, seq=1, ts=2, partition=3, offset=4)
>>> kept, dropped = drop_repeated(rows, stored=[("H2", 5, 9, 0, 3)], **idx)
>>> kept, dropped
([('H1', 5, 9, 0, 10), ('H1', 6, 9, 0, 11), ('H1', 5, 8, 0, 14)], [12, 13])
>>> token("t:0:10-13", dropped) != token("t:0:10-13", []) == "t:0:10-13"
True
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence


def drop_repeated(rows: Sequence[tuple], home: int, seq: int, ts: int, partition: int, offset: int,
                  stored: Iterable[tuple]) -> tuple[list[tuple], list[int]]:
    """``rows`` of one batch (in offset order) without the repeated readings; and the
    offsets of those dropped. ``home``, ``seq``, ``ts`` (epoch ms), ``partition``,
    ``offset`` are column indexes of a row; ``stored`` holds (home_id, seq, ts in epoch
    ms, kafka_partition, kafka_offset) of rows already in the table. A row is dropped
    when its (home_id, seq, ts) came earlier in the batch, or is stored at a position
    other than the row's own (a row stored at its own position is this batch's earlier
    attempt: see the module docstring)."""
    elsewhere: set[tuple] = set()
    at: dict[tuple, set[tuple[int, int]]] = {}
    for h, s, t, p, o in stored:
        at.setdefault((h, int(s), int(t)), set()).add((int(p), int(o)))
    kept: list[tuple] = []
    dropped: list[int] = []
    for row in rows:
        key = (row[home], int(row[seq]), int(row[ts]))
        own = (int(row[partition]), int(row[offset]))
        if key in elsewhere or (at.get(key, set()) - {own}):
            dropped.append(own[1])
            continue
        elsewhere.add(key)
        kept.append(row)
    return kept, dropped


def token(base: str, dropped: Sequence[int]) -> str:
    """The insert deduplication token of a batch after the filter: ``base`` when nothing
    was dropped, else ``base`` plus a digest of the dropped offsets (the same filter
    result gives the same token; another one a new token, never a dropped block)."""
    if not dropped:
        return base
    digest = hashlib.sha256(",".join(map(str, sorted(dropped))).encode()).hexdigest()[:16]
    return f"{base}~{digest}"


def stored_query(database: str, table: str) -> str:
    """The (home_id, seq, ts in epoch ms, kafka_partition, kafka_offset) of stored rows
    that may repeat a batch's readings; parameters from :func:`stored_query_parameters`.

    >>> "ts BETWEEN fromUnixTimestamp64Milli({lo:Int64}, 'UTC')" in stored_query("eco", "telemetry")
    True
    """
    return (f"SELECT home_id, seq, toUnixTimestamp64Milli(ts), kafka_partition, kafka_offset FROM {database}.{table} "
            "WHERE region IN {regions:Array(String)} AND home_id IN {homes:Array(String)} "
            "AND ts BETWEEN fromUnixTimestamp64Milli({lo:Int64}, 'UTC') AND fromUnixTimestamp64Milli({hi:Int64}, 'UTC')")


def stored_query_parameters(rows: Sequence[tuple], region: int, home: int, ts: int) -> dict:
    """Bounds of :func:`stored_query` for a batch's rows (``ts`` in epoch milliseconds).

    >>> stored_query_parameters([("n", "H1", 1000), ("s", "H2", 500)], region=0, home=1, ts=2)
    {'regions': ['n', 's'], 'homes': ['H1', 'H2'], 'lo': 500, 'hi': 1000}
    """
    return {
        "regions": sorted({r[region] for r in rows}),
        "homes": sorted({r[home] for r in rows}),
        "lo": min(r[ts] for r in rows),
        "hi": max(r[ts] for r in rows),
    }
