"""Rolling z-score over a fixed window of the most recent values.

>>> d = RollingZScore(window=50, warmup=10)
>>> for i in range(50):
...     d.learn_one(10.0 + (i % 5) * 0.1)
>>> d.score_one(10.2) < 0.5, d.score_one(30.0) > 0.999
(True, True)
"""

from __future__ import annotations

import math
from collections import deque

from processors.detectors.base import Evidence, register


def z_to_score(z: float) -> float:
    """Map |z| to [0, 1]: the two-sided normal confidence erf(|z|/sqrt 2).

    |z| = 3 -> 0.9973, |z| = 4 -> 0.99994; monotonic, so a z threshold and a score
    threshold are the same decision.
    """
    return math.erf(abs(z) / math.sqrt(2.0))


def score_to_z(score: float) -> float:
    """Inverse of ``z_to_score`` (for turning a z threshold into a score threshold)."""
    lo, hi = 0.0, 40.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if z_to_score(mid) < score:
            lo = mid
        else:
            hi = mid
    return hi


@register("zscore")
class RollingZScore:
    """Mean and standard deviation over the last ``window`` values (Welford-style
    running sums with subtraction of the value leaving the window).

    Until ``warmup`` values were seen the score is 0: a model with five readings has
    no business calling anything anomalous. ``min_std`` keeps a flat signal from
    turning every tiny change into an infinite z.
    """

    name = "zscore"

    def __init__(self, window: int = 120, warmup: int = 30, min_std: float = 1e-6):
        if window < 2:
            raise ValueError("window must be at least 2")
        self.window = window
        self.warmup = max(2, min(warmup, window))
        self.min_std = min_std
        self._values: deque[float] = deque()
        self._sum = 0.0
        self._sumsq = 0.0

    def learn_one(self, x: float) -> None:
        self._values.append(x)
        self._sum += x
        self._sumsq += x * x
        if len(self._values) > self.window:
            old = self._values.popleft()
            self._sum -= old
            self._sumsq -= old * old

    def evidence(self) -> Evidence:
        n = len(self._values)
        if n == 0:
            return Evidence(0.0, 0.0, 0)
        mean = self._sum / n
        var = max(0.0, self._sumsq / n - mean * mean) * n / max(1, n - 1)
        return Evidence(mean, math.sqrt(var), n)

    def zscore(self, x: float) -> float | None:
        ev = self.evidence()
        if ev.count < self.warmup:
            return None
        return (x - ev.mean) / max(ev.std, self.min_std)

    def score_one(self, x: float) -> float:
        z = self.zscore(x)
        return 0.0 if z is None else z_to_score(z)
