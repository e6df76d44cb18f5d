"""River's Half-Space Trees on scaled features, with calibrated scores.

Two things make raw HST unusable as an alarm score:

- HST partitions a fixed box (by default the unit cube): fed unscaled values (a
  temperature of 21.3) every point lands in the same corner and every score is the
  same. A running ``MinMaxScaler`` is no cure for the anomalies that matter most: a
  value beyond the range seen so far is clipped onto the edge of the box, where the
  ordinary maxima live, and scores as normal (11.6 on NAB's standard profile). So the
  box is fixed once, from the warm-up values: each feature's warm-up range is put in
  the middle third of the box (``limits = (lo - r, hi + r)``, ``r`` the range), and
  new extremes land in empty space.
- Its raw score (1 - normalised mass) has no fixed meaning: on one series 0.8 is
  ordinary, on another it never happens, and a fixed 0.8 threshold flagged nearly
  everything on the project's data. The raw score is passed through a
  ``TailCalibrator`` (the streaming distribution of this detector's own recent raw
  scores, with an exponential tail), so the score is ``1 - p`` with ``p`` the
  estimated chance of a raw score this high in normal operation: the same meaning
  ``erf(|z|/sqrt 2)`` has for the z-score, so one threshold serves every detector.

Features: the value and its first difference (a jump is as telling as a level).

>>> import math
>>> d = HalfSpaceTreesDetector(window_size=50, warmup=200, seed=7)
>>> for i in range(800):
...     d.learn_one(20.0 + math.sin(i / 5.0))
>>> d.score_one(20.0 + math.sin(800 / 5.0)) < 0.9, d.score_one(23.0) > 0.99
(True, True)
>>> HalfSpaceTreesDetector().score_one(1.0)
0.0
"""

from __future__ import annotations

import math

from river import anomaly

from processors.detectors.base import Evidence, register
from processors.detectors.calibration import TailCalibrator


@register("hst")
class HalfSpaceTreesDetector:
    """River ``HalfSpaceTrees`` (``n_trees`` x ``height``) on the value and its first
    difference, in a box fixed from the first ``warmup`` values; calibrated. Score 0
    until ``warmup`` values were learnt (at least ``window_size + 10``: HST has no
    reference mass before one window).

    Cost: a walk down every tree per event (``score_one`` memoises the raw score for
    the ``learn_one`` that follows); state: the trees' mass counts.

    On NAB it is weak (README): HST compares each point with the mass of
    the previous window only, so it is a local density detector, and NAB's anomalies
    are mostly departures from the long-run range. It is not in the default ensemble
    (adding it lowered the ensemble's score).
    """

    name = "hst"

    def __init__(self, n_trees: int = 10, height: int = 6, window_size: int = 250,
                 warmup: int = 300, calib_size: int = 1500, seed: int | None = 42):
        self.window_size = window_size
        self.warmup = max(warmup, window_size + 10)
        self.n_trees, self.height, self.seed = n_trees, height, seed
        self._hst: anomaly.HalfSpaceTrees | None = None  # built when warm-up ends
        self._buffer: list[dict[str, float]] = []
        self._cal = TailCalibrator(size=calib_size, min_count=50)
        self._prev: float | None = None
        self._count = 0
        self._mean = 0.0
        self._m2 = 0.0
        self._memo: tuple[float, float] | None = None

    def _features(self, x: float) -> dict[str, float]:
        dx = 0.0 if self._prev is None else x - self._prev
        return {"x": x, "dx": dx}

    def _raw(self, x: float) -> float:
        if self._memo is not None and self._memo[0] == x:
            return self._memo[1]
        if self._hst is None:
            return 0.0
        raw = self._hst.score_one(self._features(x))
        self._memo = (x, raw)
        return raw

    def score_one(self, x: float) -> float:
        if self._count < self.warmup or x != x:
            return 0.0
        return self._cal.score(self._raw(x))

    def learn_one(self, x: float) -> None:
        if x != x:
            return
        if self._hst is not None:
            self._cal.learn_one(self._raw(x))
        self._memo = None
        feats = self._features(x)
        if self._hst is None:
            self._buffer.append(feats)
            if len(self._buffer) >= self.warmup:
                self._build()
        else:
            self._hst.learn_one(feats)
        self._prev = x
        self._count += 1
        d = x - self._mean
        self._mean += d / self._count
        self._m2 += d * (x - self._mean)

    def _build(self) -> None:
        limits = {}
        for key in self._buffer[0]:
            vals = [f[key] for f in self._buffer]
            lo, hi = min(vals), max(vals)
            r = hi - lo or max(abs(hi), 1.0) * 1e-3
            limits[key] = (lo - r, hi + r)
        self._hst = anomaly.HalfSpaceTrees(n_trees=self.n_trees, height=self.height,
                                           window_size=self.window_size, limits=limits,
                                           seed=self.seed)
        for f in self._buffer:
            self._hst.learn_one(f)
        self._buffer = []

    def evidence(self) -> Evidence:
        if not self._count:
            return Evidence(0.0, 0.0, 0)
        std = math.sqrt(self._m2 / max(1, self._count - 1))
        return Evidence(self._mean, std, self._count)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_memo"] = None
        return state

    def to_state(self) -> dict:
        # River's trees have no plain-data form short of re-implementing them; a
        # processor running hst re-learns after a restart instead (HomeModel skips
        # checkpointing such models and says so).
        raise NotImplementedError("hst has no checkpoint state")

    @classmethod
    def from_state(cls, state: dict) -> "HalfSpaceTreesDetector":
        raise NotImplementedError("hst has no checkpoint state")
