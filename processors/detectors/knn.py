"""Context novelty: how far the last few values, as a shape, are from every shape seen
in the recent past (a streaming nearest-neighbour "discord" score).

A point detector cannot see an anomaly made of ordinary values: a daily cycle that
skips its peak, a signal that goes flat in mid-range, a burst of ordinary-sized
spikes. Each event forms the vector of the last ``lags`` values; its raw score is the
mean distance to its ``k`` nearest neighbours among the last ``history`` vectors
(minus the ``lags`` most recent ones, which overlap it), divided by a robust scale of
the series. A ``TailCalibrator`` turns the distance into a calibrated score.

>>> import math
>>> d = ContextKNN(lags=8, history=600, warmup=100)
>>> for i in range(1200):
...     d.learn_one(math.sin(i / 10.0))
>>> d.score_one(math.sin(1200 / 10.0)) < 0.9, d.score_one(3.0) > 0.999
(True, True)
>>> ContextKNN().score_one(1.0)
0.0
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from processors.detectors.base import Evidence, register
from processors.detectors.calibration import TailCalibrator
from processors.detectors.robust import IQR_TO_SIGMA, RollingQuantiles
from processors.detectors.state import integer, pack_floats, params_of, unpack_floats


@register("knn")
class ContextKNN:
    """k-nearest-neighbour distance of the last ``lags`` values to recent history.

    The history is the last ``history + lags`` values in one array; the candidate
    vectors are a sliding-window view of it (no copies), so the state is a few
    thousand floats (with the calibrator and scale window). Cost: one vectorised distance computation over
    ``history x lags`` floats per event
    (``score_one`` memoises the distance for the ``learn_one`` that follows, so a
    score+learn pair pays it once).
    """

    name = "knn"

    def __init__(self, lags: int = 10, history: int = 1500, k: int = 1, warmup: int = 150,
                 scale_window: int = 1000, calib_size: int = 1500):
        if lags < 1 or history < lags + k:
            raise ValueError("need lags >= 1 and history >= lags + k")
        self.lags = lags
        self.history = history
        self.k = k
        self.scale_window, self.calib_size = scale_window, calib_size
        self.warmup = max(warmup, 2 * lags + k + 10)
        self._keep = history + 2 * lags  # values needed for `history` candidates
        self._vals = np.zeros(2 * self._keep)
        self._len = 0
        self._count = 0
        self._q = RollingQuantiles(scale_window)
        self._cal = TailCalibrator(size=calib_size, min_count=50)
        self._memo: tuple[float, float] | None = None

    def _scale(self) -> float:
        q = self._q
        if len(q) < 4:
            return 1.0
        s = (q.quantile(0.75) - q.quantile(0.25)) * IQR_TO_SIGMA
        if s <= 0.0:
            s = (q.quantile(0.99) - q.quantile(0.01)) / 4.65
        if s <= 0.0:
            s = max(1e-9, 1e-6 * abs(q.median()))
        return s

    def _raw(self, x: float) -> float:
        if self._memo is not None and self._memo[0] == x:
            return self._memo[1]
        L, n = self.lags, self._len
        # candidates: windows ending at e, lags-1 <= e <= n-1-lags, the newest `history`
        last_end = n - 1 - L
        first_end = max(L - 1, last_end - self.history + 1)
        if last_end - first_end + 1 < self.k:
            return 0.0
        v = np.empty(L)
        v[:-1] = self._vals[n - L + 1:n]
        v[-1] = x
        windows = sliding_window_view(self._vals[first_end - L + 1:last_end + 1], L)
        diff = windows - v
        d2 = np.einsum("ij,ij->i", diff, diff)
        if self.k == 1:
            dist = math.sqrt(float(d2.min()))
        else:
            dist = float(np.sqrt(np.partition(d2, self.k - 1)[: self.k]).mean())
        raw = dist / (self._scale() * math.sqrt(L))
        self._memo = (x, raw)
        return raw

    def score_one(self, x: float) -> float:
        if self._count < self.warmup or x != x:
            return 0.0
        return self._cal.score(self._raw(x))

    def learn_one(self, x: float) -> None:
        if x != x:
            return
        if self._count >= self.lags:
            raw = self._raw(x)
            if self._count >= self.warmup // 2:
                self._cal.learn_one(raw)
        self._memo = None
        if self._len == len(self._vals):  # compact: keep the newest values
            keep = self._keep
            self._vals[:keep] = self._vals[self._len - keep:self._len]
            self._len = keep
        self._vals[self._len] = x
        self._len += 1
        self._count += 1
        self._q.add(x)

    def evidence(self) -> Evidence:
        if not len(self._q):
            return Evidence(0.0, 0.0, 0)
        return Evidence(self._q.median(), self._scale(), self._count)

    def to_state(self) -> dict:
        keep = min(self._len, self._keep)
        return {"params": {"lags": self.lags, "history": self.history, "k": self.k, "warmup": self.warmup,
                           "scale_window": self.scale_window, "calib_size": self.calib_size},
                "vals": pack_floats(self._vals[self._len - keep:self._len].tolist()),
                "count": self._count, "q": self._q.to_state(), "cal": self._cal.to_state()}

    @classmethod
    def from_state(cls, state: dict) -> "ContextKNN":
        det = cls(**params_of(state, ("lags", "history", "k", "warmup", "scale_window", "calib_size")))
        vals = unpack_floats(state["vals"], det._keep)
        det._vals[:len(vals)] = vals
        det._len = len(vals)
        det._count = integer(state["count"])
        det._q = RollingQuantiles.from_state(state["q"])
        det._cal = TailCalibrator.from_state(state["cal"])
        return det

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_memo"] = None
        keep = min(self._len, self._keep)
        state["_vals"] = self._vals[self._len - keep:self._len].copy()
        state["_len"] = keep
        return state

    def __setstate__(self, state: dict) -> None:
        vals = np.zeros(2 * state["_keep"])
        vals[: state["_len"]] = state["_vals"]
        state["_vals"] = vals
        self.__dict__.update(state)
