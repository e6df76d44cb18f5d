"""Robust detectors on a rolling window: median and inter-quartile range instead of
mean and standard deviation, so the outliers they look for cannot inflate the scale
they are measured with.

``robust`` (``RobustZ``) scores two things about each new value ``x`` against the
last ``window`` values, each turned into a calibrated score by its own
``TailCalibrator`` (see ``calibration``):

- the *point* statistic ``|x - median| / scale``: spikes and dips;
- optionally (``short > 1``) the *level* statistic
  ``|mean of the last `short` robust z's| * sqrt(short)``: a sustained move of the
  level that single values are too noisy to show. Off by default: on NAB it added
  more false alarms (autocorrelated series) than detections (README, NAB).

With the level statistic on, the score is the larger of the two calibrated scores,
corrected for taking the best of two (``p = 2 * min(p_point, p_level)``), so its
meaning stays ``P(score > s) = 1 - s`` in normal operation.

>>> d = RobustZ(window=200, warmup=50)
>>> for i in range(400):
...     d.learn_one(20.0 + (i * 7919 % 13) / 13.0)
>>> d.score_one(20.5) < 0.9, d.score_one(40.0) > 0.999
(True, True)
>>> RobustZ().score_one(1.0)             # warm-up: nothing learnt yet
0.0
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque

from processors.detectors.base import Evidence, register
from processors.detectors.calibration import TailCalibrator
from processors.detectors.state import integer, number, pack_floats, params_of, unpack_floats


class RollingQuantiles:
    """The last ``window`` values, kept both in arrival order and sorted.

    Insert/delete are a bisect and a memmove;
    any quantile is then O(1).
    """

    __slots__ = ("window", "_fifo", "_sorted")

    def __init__(self, window: int):
        self.window = window
        self._fifo: deque[float] = deque()
        self._sorted: list[float] = []

    def __len__(self) -> int:
        return len(self._sorted)

    def add(self, x: float) -> None:
        self._fifo.append(x)
        insort(self._sorted, x)
        if len(self._fifo) > self.window:
            old = self._fifo.popleft()
            del self._sorted[bisect_left(self._sorted, old)]

    def quantile(self, q: float) -> float:
        s = self._sorted
        pos = q * (len(s) - 1)
        i = int(pos)
        if i + 1 >= len(s):
            return s[-1]
        f = pos - i
        return s[i] + (s[i + 1] - s[i]) * f

    def median(self) -> float:
        return self.quantile(0.5)

    def __getstate__(self) -> dict:
        return {"window": self.window, "fifo": list(self._fifo)}

    def to_state(self) -> dict:
        return {"window": self.window, "fifo": pack_floats(self._fifo)}

    @classmethod
    def from_state(cls, state: dict) -> "RollingQuantiles":
        q = cls(integer(state["window"], 1, 10**6))
        fifo = unpack_floats(state["fifo"], max_len=q.window)
        q._fifo.extend(fifo)
        q._sorted = sorted(fifo)
        return q

    def __setstate__(self, state: dict) -> None:
        self.window = state["window"]
        self._fifo = deque(state["fifo"])
        self._sorted = sorted(self._fifo)


IQR_TO_SIGMA = 1.0 / 1.349  # IQR of a normal distribution is 1.349 sigma


@register("robust")
class RobustZ:
    """Robust z of each value against the rolling median/IQR (plus, with
    ``short > 1``, a short-window level statistic), calibrated. Score 0 until
    ``warmup`` values were learnt.

    Cost: the calibrators and one rolling sorted window per event;
    state: ``window`` values plus ``calib_size`` raw values per calibrator.
    """

    name = "robust"

    def __init__(self, window: int = 400, warmup: int = 100, short: int = 1,
                 calib_size: int = 1500, min_scale: float = 1e-9):
        if window < 10:
            raise ValueError("window must be at least 10")
        self.window = window
        self.calib_size = calib_size
        self.warmup = max(10, warmup)
        self.short = max(1, short)
        self.min_scale = min_scale
        self._q = RollingQuantiles(window)
        self._recent_z: deque[float] = deque(maxlen=self.short)
        self._recent_sum = 0.0
        self._cal_point = TailCalibrator(size=calib_size, min_count=min(50, self.warmup))
        self._cal_level = TailCalibrator(size=calib_size, min_count=min(50, self.warmup))
        self._count = 0

    # ------------------------------------------------------------------ statistics
    def _center_scale(self) -> tuple[float, float]:
        q = self._q
        med = q.quantile(0.5)
        iqr = q.quantile(0.75) - q.quantile(0.25)
        scale = iqr * IQR_TO_SIGMA
        if scale <= self.min_scale:
            # more than half the window is one value: fall back to the spread of the rest
            spread = (q.quantile(0.95) - q.quantile(0.05)) / 3.29
            scale = max(spread, self.min_scale, 1e-9 * abs(med))
        return med, scale

    def _raw(self, x: float) -> tuple[float, float, float]:
        med, scale = self._center_scale()
        z = (x - med) / scale
        # the level statistic over the last short-1 z's and this one
        n = len(self._recent_z)
        if n == self.short:
            s = self._recent_sum - self._recent_z[0] + z
        else:
            s = self._recent_sum + z
            n += 1
        return z, abs(z), abs(s) / math.sqrt(n)

    # ------------------------------------------------------------------ protocol
    def score_one(self, x: float) -> float:
        if self._count < self.warmup or x != x:
            return 0.0
        _, point, level = self._raw(x)
        if self.short == 1:
            return self._cal_point.score(point)
        p = min(self._cal_point.p_value(point), self._cal_level.p_value(level))
        return max(0.0, 1.0 - 2.0 * p)

    def learn_one(self, x: float) -> None:
        if x != x:
            return
        if len(self._q) >= 10:
            z, point, level = self._raw(x)
            if self._count >= self.warmup // 2:
                self._cal_point.learn_one(point)
                if self.short > 1:
                    self._cal_level.learn_one(level)
            if len(self._recent_z) == self.short:
                self._recent_sum -= self._recent_z[0]
            self._recent_z.append(z)
            self._recent_sum += z
        self._q.add(x)
        self._count += 1
        if self._count % 1024 == 0:  # keep the running sum exact
            self._recent_sum = math.fsum(self._recent_z)

    def to_state(self) -> dict:
        return {"params": {"window": self.window, "warmup": self.warmup, "short": self.short,
                           "calib_size": self.calib_size, "min_scale": self.min_scale},
                "q": self._q.to_state(), "recent_z": pack_floats(self._recent_z),
                "cal_point": self._cal_point.to_state(), "cal_level": self._cal_level.to_state(),
                "count": self._count}

    @classmethod
    def from_state(cls, state: dict) -> "RobustZ":
        det = cls(**params_of(state, ("window", "warmup", "short", "calib_size", "min_scale")))
        det._q = RollingQuantiles.from_state(state["q"])
        if det._q.window != det.window:
            raise ValueError("quantile window differs from the detector's")
        det._recent_z.extend(unpack_floats(state["recent_z"], det.short))
        det._recent_sum = math.fsum(det._recent_z)
        det._cal_point = TailCalibrator.from_state(state["cal_point"])
        det._cal_level = TailCalibrator.from_state(state["cal_level"])
        det._count = integer(state["count"])
        return det

    def evidence(self) -> Evidence:
        if not len(self._q):
            return Evidence(0.0, 0.0, 0)
        med, scale = self._center_scale()
        return Evidence(med, scale, len(self._q))
