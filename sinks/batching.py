"""Batches of one partition's messages, and the rules that cut them (pure: no I/O).

A batch is an offset range ``[first_offset, last_offset]`` of one partition; its
insert deduplication token is a function of that range only, which is what makes a
replay store nothing new (see :mod:`sinks.sink`). :class:`Batcher` cuts batches by
size and age, and re-cuts exactly the ranges a write-ahead ledger recorded.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Sequence

log = logging.getLogger("eco.sink")

DEFAULT_BATCH_ROWS = 20_000
DEFAULT_BATCH_SECONDS = 2.0


@dataclass
class Batch:
    """One partition's messages ``[first_offset, last_offset]``, decoded."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int
    rows: list[tuple] = field(default_factory=list)
    dead: list[tuple] = field(default_factory=list)  # (topic, partition, offset, raw, error)
    newest_event_ms: int | None = None
    # rows the writer did not store because the same reading was stored already
    # (sinks/reading_identity.py); set by each write attempt
    duplicates: int = 0

    @property
    def token(self) -> str:
        """The insert deduplication token: a function of the offset range only."""
        return f"{self.topic}:{self.partition}:{self.first_offset}-{self.last_offset}"

    @property
    def messages(self) -> int:
        return len(self.rows) + len(self.dead)


class _Buffer:
    __slots__ = ("first", "last", "rows", "dead", "opened", "newest")

    def __init__(self, offset: int, now: float):
        self.first = offset
        self.last = offset
        self.rows: list[tuple] = []
        self.dead: list[tuple] = []
        self.opened = now
        self.newest: int | None = None

    def __len__(self) -> int:
        return len(self.rows) + len(self.dead)


def normalise_ranges(ranges: Iterable[tuple[int, int]], committed: int | None = None) -> list[tuple[int, int]]:
    """Ledger ranges worth replaying: those ending at or after ``committed``, sorted,
    duplicates merged, and any range overlapping an earlier one dropped (it cannot
    have been cut by a sink honouring the ledger).

    >>> normalise_ranges([(10, 19), (0, 9), (10, 19), (15, 30), (20, 29)], committed=10)
    [(10, 19), (20, 29)]
    """
    out: list[tuple[int, int]] = []
    for first, last in sorted(set((int(a), int(b)) for a, b in ranges)):
        if last < first or (committed is not None and last < committed):
            continue
        if out and first <= out[-1][1]:
            continue
        out.append((first, last))
    return out


class Batcher:
    """Per-partition buffers and the rules that cut them into batches.

    - Recorded cuts first: a partition with ledger ranges pending (see :meth:`expect`)
      gets exactly those batches: a range's messages are buffered until its last
      offset, and neither the size nor the time bound cuts inside it. A buffer never
      straddles a recorded range's boundary.
    - Otherwise a buffer is cut when it holds ``max_rows`` messages (rows and dead
      letters alike), or by :meth:`cut_due` once its first message is ``max_seconds``
      old.

    >>> b = Batcher("t", max_rows=3, max_seconds=10)
    >>> out = [x for o in range(7) for x in b.add(0, o, row=(o,), now=0.0)]
    >>> [x.token for x in out], b.buffered()
    (['t:0:0-2', 't:0:3-5'], 1)
    >>> b.expect(1, [(100, 104)])
    >>> [x.token for o in range(100, 106) for x in b.add(1, o, row=(o,), now=0.0)]
    ['t:1:100-104']
    """

    def __init__(self, topic: str, max_rows: int, max_seconds: float):
        if max_rows < 1 or max_seconds <= 0:
            raise ValueError("max_rows and max_seconds must be positive")
        self.topic = topic
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self._buf: dict[int, _Buffer] = {}
        self._cuts: dict[int, deque[tuple[int, int]]] = {}

    # ------------------------------------------------------------- ledger cuts
    def expect(self, partition: int, ranges: Sequence[tuple[int, int]]) -> None:
        """Ranges recorded in the ledger but possibly not committed: re-cut them exactly."""
        self._cuts[partition] = deque(normalise_ranges(ranges))

    def expected(self, partition: int) -> list[tuple[int, int]]:
        return list(self._cuts.get(partition, ()))

    # ------------------------------------------------------------------ adding
    def add(self, partition: int, offset: int, row: tuple | None = None, dead: tuple | None = None,
            event_ms: int | None = None, now: float = 0.0) -> list[Batch]:
        """Buffer one message (a decoded row or a dead letter); returns the batches
        this message closed (zero, one, or two when it also ends a gap)."""
        out: list[Batch] = []
        cuts = self._cuts.get(partition)
        buf = self._buf.get(partition)
        if buf is not None and offset <= buf.last:
            return out  # a message seen already (re-delivery after a seek): ignore
        if cuts:
            # ranges we have moved past without reaching their end (messages gone)
            while cuts and cuts[0][1] < offset:
                first, last = cuts.popleft()
                if buf is not None and buf.first >= first:
                    log.warning("%s[%d]: recorded batch %d-%d ends at an offset never seen; cutting at %d",
                                self.topic, partition, first, last, buf.last)
                    out.append(self._close(partition))
                    buf = None
                else:
                    log.warning("%s[%d]: recorded batch %d-%d is no longer in the log; skipped",
                                self.topic, partition, first, last)
            if cuts and cuts[0][0] <= offset:
                # inside a recorded range: a buffer that began before it is closed first
                if buf is not None and buf.first < cuts[0][0]:
                    out.append(self._close(partition))
                    buf = None
                buf = self._append(partition, buf, offset, row, dead, event_ms, now)
                if offset >= cuts[0][1]:
                    cuts.popleft()
                    out.append(self._close(partition))
                return out
        buf = self._append(partition, buf, offset, row, dead, event_ms, now)
        if len(buf) >= self.max_rows:
            out.append(self._close(partition))
        return out

    def _append(self, partition, buf, offset, row, dead, event_ms, now) -> _Buffer:
        if buf is None:
            buf = self._buf[partition] = _Buffer(offset, now)
        buf.last = offset
        if dead is not None:
            buf.dead.append(dead)
        else:
            buf.rows.append(row)
            if event_ms is not None and (buf.newest is None or event_ms > buf.newest):
                buf.newest = event_ms
        return buf

    def _in_recorded_range(self, partition: int) -> bool:
        cuts = self._cuts.get(partition)
        buf = self._buf.get(partition)
        return bool(cuts) and buf is not None and buf.first >= cuts[0][0]

    def _close(self, partition: int) -> Batch:
        buf = self._buf.pop(partition)
        return Batch(self.topic, partition, buf.first, buf.last, buf.rows, buf.dead, buf.newest)

    # ----------------------------------------------------------------- cutting
    def oldest_age(self, now: float) -> float:
        return max((now - b.opened for b in self._buf.values()), default=0.0)

    def due(self, now: float) -> bool:
        return any(now - b.opened >= self.max_seconds and not self._in_recorded_range(p)
                   for p, b in self._buf.items())

    def cut_due(self, now: float) -> list[Batch]:
        """When some buffer is ``max_seconds`` old, cut it and every buffer at least
        half that old (one flush instead of one per partition a moment apart)."""
        if not self.due(now):
            return []
        half = self.max_seconds / 2
        return [self._close(p) for p in sorted(self._buf)
                if now - self._buf[p].opened >= half and not self._in_recorded_range(p)]

    def cut(self, partitions: Iterable[int] | None = None) -> list[Batch]:
        """Cut every buffer (of ``partitions``) now, e.g. at shutdown or revocation.
        A buffer inside a recorded range that has not reached its end stays: cutting it
        would form a different batch; its partition's next owner re-cuts it."""
        chosen = sorted(self._buf if partitions is None else set(partitions) & set(self._buf))
        return [self._close(p) for p in chosen if not self._in_recorded_range(p)]

    def drop(self, partitions: Iterable[int]) -> int:
        """Forget buffers and cuts of revoked partitions; returns the messages dropped."""
        n = 0
        for p in partitions:
            buf = self._buf.pop(p, None)
            n += len(buf) if buf else 0
            self._cuts.pop(p, None)
        return n

    def buffered(self) -> int:
        return sum(len(b) for b in self._buf.values())

    def partitions(self) -> list[int]:
        return sorted(self._buf)
