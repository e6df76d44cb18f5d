"""The clock a live processor judges silence by, one per partition (pure: no Kafka).

A home is silent when its partition's "now" is more than a few reading intervals past
its last reading. Wall-clock time would call every home silent whenever the worker
itself falls behind: readings of the last seconds sitting unread in a backlog, or a
worker starved of CPU for a few seconds (measured: a loaded machine made a demo report
7,189 silences for 1,000 homes that never stopped). So a partition's now is the newest
event time read on it, advanced by wall time only

- as far as the consumer's latest completed fetch (a starved worker has not looked,
  so it cannot know that anything stayed away), and
- while the partition is caught up (nothing more to read below the high watermark of
  that fetch); behind, the readings of those seconds may be waiting in the backlog.

A replay of old data therefore judges silence in event time, and a home that really
stops reporting is seen while the others on its partition go on (or, on a partition
gone quiet as a whole, once fetches keep coming back empty).

>>> clock = SilenceClock()
>>> clock.now_ms(0, wall=100.0) is None           # nothing read on partition 0 yet
True
>>> clock.saw(0, ts_ms=99_500, wall=100.0); clock.fetched(100.0)
>>> clock.now_ms(0, wall=104.0)                   # no fetch since: the worker was busy or starved
99500
>>> clock.fetched(104.0)
>>> clock.now_ms(0, wall=104.0)                   # fetched, caught up: 4 s of quiet are real
103500
>>> clock.now_ms(0, wall=104.0, behind=True)      # fetched, but a backlog: those 4 s are unread
99500
>>> clock.now_ms(1, wall=104.0, idle_ok=True)     # a partition with nothing to read at all
104000
"""

from __future__ import annotations


class SilenceClock:
    """Event-time "now" per partition (see the module docstring)."""

    def __init__(self) -> None:
        self.seen: dict[int, tuple[int, float]] = {}  # partition -> (newest ts read, wall time then)
        self.fetched_at = 0.0  # wall time the consumer's latest fetch completed

    def saw(self, partition: int, ts_ms: int, wall: float) -> None:
        """A reading stamped ``ts_ms`` was read from ``partition`` at ``wall``."""
        seen = self.seen.get(partition)
        if seen is None or ts_ms > seen[0]:
            self.seen[partition] = (ts_ms, wall)

    def fetched(self, wall: float) -> None:
        """The consumer completed a fetch (with records or without) at ``wall``."""
        self.fetched_at = max(self.fetched_at, wall)

    def forget(self) -> None:
        """Partitions were reassigned: what was read on them says nothing any more."""
        self.seen.clear()

    def now_ms(self, partition: int | None, wall: float, behind: bool = False, idle_ok: bool = False) -> int | None:
        """The partition's now; ``None`` when silence cannot be judged there yet.
        ``behind``: records below the partition's high watermark are still unread.
        ``idle_ok``: for a partition nothing was read on, the caller knows it is idle
        (assigned long enough ago, recovered, fetched since): then the fetch time."""
        upto = min(wall, self.fetched_at)
        seen = self.seen.get(partition) if partition is not None else None
        if seen is None:
            return int(upto * 1000) if idle_ok and not behind else None
        if behind:
            return seen[0]
        return seen[0] + int(max(0.0, upto - seen[1]) * 1000)
