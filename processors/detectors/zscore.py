"""Z-score detectors: a rolling window (``zscore``) and an exponentially weighted one
(``ewzscore``).

Both score ``erf(|z|/sqrt 2)`` (``z_to_score``): on Gaussian data a score above
``s`` happens with probability ``1 - s``, which is the meaning every calibrated
detector in this package shares. Both score 0 until ``warmup`` values were learnt.

>>> d = RollingZScore(window=50, warmup=10)
>>> for i in range(50):
...     d.learn_one(10.0 + (i % 5) * 0.1)
>>> d.score_one(10.2) < 0.5, d.score_one(30.0) > 0.999
(True, True)

Large offsets do not eat the precision (a running sum of squares would give a
variance of 0 or garbage here):

>>> d = RollingZScore(window=100, warmup=10)
>>> for i in range(1000):
...     d.learn_one(1e9 + (i % 2))
>>> round(d.evidence().std, 6)
0.502519

>>> e = EWZScore(halflife=20, warmup=10)
>>> e.score_one(5.0)                      # nothing learnt yet
0.0
>>> for i in range(200):
...     e.learn_one(100.0 + (i % 3))
>>> e.score_one(101.0) < 0.5, e.score_one(120.0) > 0.9999
(True, True)
"""

from __future__ import annotations

import math
from collections import deque

from processors.detectors.base import Evidence, register
from processors.detectors.state import integer, number, pack_floats, params_of, unpack_floats


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
    """Mean and standard deviation over the last ``window`` values.

    Welford's update with removal of the value leaving the window (differences from
    the running mean, never a sum of squares of raw values), and an exact recompute
    from the window every ``window`` updates so rounding cannot accumulate.
    Amortised O(1) per value, state = the window.

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
        self._mean = 0.0
        self._m2 = 0.0
        self._since_exact = 0

    def learn_one(self, x: float) -> None:
        if x != x:  # NaN: skip, do not poison the window
            return
        vals = self._values
        vals.append(x)
        n = len(vals)
        d = x - self._mean
        self._mean += d / n
        self._m2 += d * (x - self._mean)
        if n > self.window:
            old = vals.popleft()
            n -= 1
            d = old - self._mean
            self._mean -= d / n
            self._m2 -= d * (old - self._mean)
        self._since_exact += 1
        if self._since_exact >= self.window or self._m2 < 0.0:
            self._recompute()

    def _recompute(self) -> None:
        vals = self._values
        n = len(vals)
        mean = math.fsum(vals) / n
        self._mean = mean
        self._m2 = math.fsum((v - mean) ** 2 for v in vals)
        self._since_exact = 0

    def evidence(self) -> Evidence:
        n = len(self._values)
        if n == 0:
            return Evidence(0.0, 0.0, 0)
        var = max(0.0, self._m2) / max(1, n - 1)
        return Evidence(self._mean, math.sqrt(var), n)

    def zscore(self, x: float) -> float | None:
        ev = self.evidence()
        if ev.count < self.warmup or x != x:
            return None
        return (x - ev.mean) / max(ev.std, self.min_std)

    def score_one(self, x: float) -> float:
        z = self.zscore(x)
        return 0.0 if z is None else z_to_score(z)

    def to_state(self) -> dict:
        return {"params": {"window": self.window, "warmup": self.warmup, "min_std": self.min_std},
                "values": pack_floats(self._values), "mean": self._mean, "m2": self._m2,
                "since_exact": self._since_exact}

    @classmethod
    def from_state(cls, state: dict) -> "RollingZScore":
        det = cls(**params_of(state, ("window", "warmup", "min_std")))
        values = unpack_floats(state["values"])
        if len(values) > det.window:
            raise ValueError("more values than the window holds")
        det._values.extend(values)
        # the running sums as they were (a recompute would round differently)
        det._mean, det._m2 = number(state["mean"]), number(state["m2"])
        det._since_exact = integer(state["since_exact"], 0, det.window)
        return det

    def __setstate__(self, state: dict) -> None:
        # detectors pickled before the Welford rewrite kept raw sums
        if "_sum" in state:
            state = dict(state)
            state.pop("_sum", None)
            state.pop("_sumsq", None)
            self.__dict__.update(state)
            self._since_exact = 0
            if self._values:
                self._recompute()
            else:
                self._mean = self._m2 = 0.0
            return
        self.__dict__.update(state)


@register("ewzscore")
class EWZScore:
    """Exponentially weighted mean and variance (``halflife`` in events).

    Adapts to level shifts in a few half-lives with O(1) state (three floats) and
    O(1) work per value; the update works on differences from the running mean, so
    large offsets are harmless. Score 0 until ``warmup`` values were learnt.
    """

    name = "ewzscore"

    def __init__(self, halflife: float = 60.0, warmup: int = 30, min_std: float = 1e-6):
        if halflife <= 0:
            raise ValueError("halflife must be positive")
        self.halflife = float(halflife)
        self.alpha = 1.0 - 0.5 ** (1.0 / self.halflife)
        self.warmup = max(2, warmup)
        self.min_std = min_std
        self._count = 0
        self._mean = 0.0
        self._var = 0.0

    def learn_one(self, x: float) -> None:
        if x != x:
            return
        self._count += 1
        if self._count == 1:
            self._mean, self._var = x, 0.0
            return
        # until 1/alpha values were seen, weight like a plain running mean
        a = max(self.alpha, 1.0 / self._count)
        d = x - self._mean
        incr = a * d
        self._mean += incr
        self._var = (1.0 - a) * (self._var + d * incr)

    def evidence(self) -> Evidence:
        return Evidence(self._mean, math.sqrt(max(0.0, self._var)), self._count)

    def to_state(self) -> dict:
        return {"params": {"halflife": self.halflife, "warmup": self.warmup, "min_std": self.min_std},
                "count": self._count, "mean": self._mean, "var": self._var}

    @classmethod
    def from_state(cls, state: dict) -> "EWZScore":
        det = cls(**params_of(state, ("halflife", "warmup", "min_std")))
        det._count = integer(state["count"])
        det._mean = number(state["mean"])
        det._var = number(state["var"], 0.0)
        return det

    def zscore(self, x: float) -> float | None:
        if self._count < self.warmup or x != x:
            return None
        return (x - self._mean) / max(math.sqrt(max(0.0, self._var)), self.min_std)

    def score_one(self, x: float) -> float:
        z = self.zscore(x)
        return 0.0 if z is None else z_to_score(z)
