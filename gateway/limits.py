"""Per-device rate limiting and retry deduplication: pure, the caller passes the time.

>>> bucket = TokenBuckets(rate_per_s=1.0, burst=2)
>>> [bucket.allow("d", now=0.0) for _ in range(3)], bucket.allow("d", now=1.0), bucket.allow("e", now=1.0)
([True, True, False], True, True)

A retried batch is recognised by (home, seq): a reading whose seq was acknowledged
recently is a duplicate, one whose seq is in flight in another request is pending.

>>> seen = RecentSeqs(window=100)
>>> seen.classify("H1", [1, 2, 3])
([1, 2, 3], [], [])
>>> seen.reserve("H1", [1, 2, 3]); seen.classify("H1", [2, 3, 4])
([4], [], [2, 3])
>>> seen.commit("H1", [1, 2, 3]); seen.classify("H1", [2, 3, 4])
([4], [2, 3], [])
>>> seen.release("H1", [4]); seen.commit("H1", [300]); seen.classify("H1", [1, 4, 250, 300])  # 1 fell out of the window
([1, 4, 250], [300], [])
>>> seen.commit("H1", [205, 207, 206, 204, 299]); seen._acked["H1"]
[[204, 207], [299, 300]]
"""

from __future__ import annotations

import bisect


class TokenBuckets:
    """One token bucket per key; idle keys are forgotten so memory stays bounded."""

    def __init__(self, rate_per_s: float, burst: int, max_keys: int = 100_000):
        self.rate, self.burst, self.max_keys = rate_per_s, float(burst), max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def allow(self, key: str, now: float, cost: float = 1.0) -> bool:
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        ok = tokens >= cost
        if ok:
            tokens -= cost
        if key not in self._buckets and len(self._buckets) >= self.max_keys:
            self._buckets.clear()  # a flood of keys: start everyone over, never grow without bound
        self._buckets[key] = (tokens, now)
        return ok

    def retry_after(self, key: str, cost: float = 1.0) -> float:
        tokens, _ = self._buckets.get(key, (self.burst, 0.0))
        return max(0.0, (cost - tokens) / self.rate)


class RecentSeqs:
    """Per home: the seqs acknowledged within ``window`` of the highest one (kept as
    merged intervals, so a home's contiguous stream costs two integers), and those
    reserved by requests still waiting for Kafka.

    Only this process's memory: a second gateway, or this one after a restart, does not
    know them, so the warehouse still deduplicates on (home_id, seq). This stops the
    common case (a device retrying after a lost reply) before it reaches Kafka."""

    def __init__(self, window: int = 1_000_000):
        self.window = window
        self._acked: dict[str, list[list[int]]] = {}  # home -> sorted disjoint [lo, hi]
        self._pending: dict[str, set[int]] = {}

    def classify(self, home: str, seqs: list[int]) -> tuple[list[int], list[int], list[int]]:
        """(new, already acknowledged, in flight elsewhere)."""
        spans = self._acked.get(home, [])
        pending = self._pending.get(home, ())
        new, dup, busy = [], [], []
        for s in seqs:
            i = bisect.bisect_right(spans, [s, float("inf")]) - 1
            if i >= 0 and spans[i][0] <= s <= spans[i][1]:
                dup.append(s)
            elif s in pending:
                busy.append(s)
            else:
                new.append(s)
        return new, dup, busy

    def reserve(self, home: str, seqs: list[int]) -> None:
        self._pending.setdefault(home, set()).update(seqs)

    def release(self, home: str, seqs: list[int]) -> None:
        pending = self._pending.get(home)
        if pending is not None:
            pending.difference_update(seqs)
            if not pending:
                del self._pending[home]

    def commit(self, home: str, seqs: list[int]) -> None:
        self.release(home, seqs)
        spans = self._acked.setdefault(home, [])
        for s in sorted(set(seqs)):
            i = bisect.bisect_right(spans, [s, float("inf")])
            if i > 0 and spans[i - 1][1] >= s - 1:  # inside or right after the span before
                spans[i - 1][1] = max(spans[i - 1][1], s)
                if i < len(spans) and spans[i][0] <= spans[i - 1][1] + 1:  # now touches the next
                    spans[i - 1][1] = spans[i][1]
                    del spans[i]
            elif i < len(spans) and spans[i][0] == s + 1:
                spans[i][0] = s
            else:
                spans.insert(i, [s, s])
        floor = spans[-1][1] - self.window
        while spans and spans[0][1] <= floor:
            del spans[0]
        if spans and spans[0][0] <= floor:
            spans[0][0] = floor + 1
