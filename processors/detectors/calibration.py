"""Turning a detector's raw anomaly measure into a calibrated score in [0, 1].

Raw measures (a Half-Space-Trees mass, a robust z on skewed data, a change statistic)
have no common scale: a fixed threshold of 0.8 on raw HST scores flags almost
everything on one series and nothing on the next. ``TailCalibrator`` keeps the last
``size`` raw values of *this* detector on *this* series and reports the estimated
probability ``p`` that a normal raw value is at least as large as the new one; the
score is ``1 - p``.

That is the same meaning the z-score detector's ``erf(|z|/sqrt 2)`` has on Gaussian
data (``P(score > s) = 1 - s`` in normal operation), so one threshold means the same
false-alarm rate whatever the detector or the series: a score of 0.9973 is a
"3-sigma" event, 0.99994 a "4-sigma" one.

Below the tail the estimate is the empirical distribution (rank in the sorted
history). Above its ``1 - tail`` quantile ``u`` the empirical distribution runs out of
resolution (a 1000-value history cannot tell 1e-3 from 1e-6), so the tail is
extrapolated with an exponential (peaks-over-threshold) fit:
``p = tail * exp(-(raw - u) / beta)`` with ``beta`` the mean excess over ``u``.
Exponential tails are heavier than Gaussian ones, so the estimate errs towards *not*
alarming.

Cost: one ``bisect`` in a sorted list of ``size`` floats per score, plus a sorted
insert/delete per learn (a memmove).

>>> import random
>>> rng = random.Random(1)
>>> cal = TailCalibrator(size=500, min_count=50)
>>> for _ in range(500):
...     cal.learn_one(abs(rng.gauss(0, 1)))
>>> 0.5 < cal.score(0.8) < 0.7, cal.score(3.0) > 0.99, cal.score(6.0) > 0.9999
(True, True, True)
>>> TailCalibrator(min_count=50).score(100.0)   # not enough history yet
0.0
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque

from processors.detectors.state import integer, number, pack_floats, unpack_floats


class TailCalibrator:
    """Streaming ECDF of recent raw scores with an exponential upper tail."""

    __slots__ = ("size", "min_count", "tail", "_fifo", "_sorted")

    def __init__(self, size: int = 1000, min_count: int = 50, tail: float = 0.05):
        if size < 10:
            raise ValueError("size must be at least 10")
        if not 0.0 < tail < 0.5:
            raise ValueError("tail must be in (0, 0.5)")
        self.size = size
        self.min_count = max(5, min(min_count, size))
        self.tail = tail
        self._fifo: deque[float] = deque()
        self._sorted: list[float] = []

    def __len__(self) -> int:
        return len(self._sorted)

    def p_value(self, raw: float) -> float:
        """Estimated P(normal raw >= ``raw``); 1.0 until ``min_count`` values were seen."""
        h = self._sorted
        m = len(h)
        if m < self.min_count or raw != raw:  # NaN never alarms
            return 1.0
        k = max(5, int(math.ceil(self.tail * m)))
        u = h[m - k]
        if raw <= u:
            ge = m - bisect_left(h, raw)  # history values >= raw
            return (ge + 1) / (m + 1)
        top = h[m - k:]
        beta = sum(top) / k - u
        p0 = (k + 1) / (m + 1)
        if beta <= 0.0:  # the tail is flat: anything above it is new
            return 0.0
        return p0 * math.exp(-(raw - u) / beta)

    def median(self) -> float:
        """The median of the remembered raw values (0.0 before any)."""
        h = self._sorted
        return h[len(h) // 2] if h else 0.0

    def score(self, raw: float) -> float:
        """``1 - p_value(raw)``: 0 for ordinary raw values, close to 1 for rare ones."""
        return 1.0 - self.p_value(raw)

    def learn_one(self, raw: float) -> None:
        if raw != raw:
            return
        self._fifo.append(raw)
        insort(self._sorted, raw)
        if len(self._fifo) > self.size:
            old = self._fifo.popleft()
            del self._sorted[bisect_left(self._sorted, old)]

    def __getstate__(self) -> dict:
        # the sorted view is rebuilt on load: smaller pickles
        return {"size": self.size, "min_count": self.min_count, "tail": self.tail,
                "fifo": list(self._fifo)}

    def to_state(self) -> dict:
        return {"size": self.size, "min_count": self.min_count, "tail": self.tail,
                "fifo": pack_floats(self._fifo)}

    @classmethod
    def from_state(cls, state: dict) -> "TailCalibrator":
        cal = cls(size=integer(state["size"], 10, 10**6), min_count=integer(state["min_count"]),
                  tail=number(state["tail"], 0.0, 0.5))
        fifo = unpack_floats(state["fifo"], max_len=cal.size)
        cal._fifo.extend(fifo)
        cal._sorted = sorted(fifo)
        return cal

    def __setstate__(self, state: dict) -> None:
        self.size = state["size"]
        self.min_count = state["min_count"]
        self.tail = state["tail"]
        self._fifo = deque(state["fifo"])
        self._sorted = sorted(self._fifo)
