"""Pattern changes in periodic signals: each value against the same phase one period ago.

A daily cycle that skips its peak, flattens in mid-range, or runs at a lower level
for a day is made of values the series has seen many times: point detectors (extreme,
robust) cannot see it, and a short shape window (``knn``) sees only part of it. The
seasonal-naive forecast "the same as one period ago" does: the residual
``|x[t] - x[t - P]|`` is small while the cycle repeats and large where it breaks.

``SeasonalResidual`` estimates the period ``P`` itself, online: every ``every``
events it computes the autocorrelation of the last ``buffer`` values (one FFT) and
takes the lag of the highest autocorrelation after the first negative one, between
``min_lag`` and ``max_lag``; a peak below ``min_acf`` means "no period". The raw
measure is the mean residual of the last ``smooth`` events (a broken cycle lasts;
single noisy values average out), turned into a calibrated score by a
``TailCalibrator`` (see ``calibration``), which starts afresh whenever the period
estimate changes (residuals at another lag are another distribution).

Without a period (a random walk, a spiky series, a cycle longer than ``max_lag``)
the detector has no opinion: it scores 0 and ``has_opinion()`` is False, so an
``Ensemble`` leaves it out of the combination instead of counting it as "normal".

>>> import math
>>> d = SeasonalResidual(buffer=600, every=100, max_lag=200, min_values=200)
>>> for i in range(1500):
...     d.learn_one(math.sin(2 * math.pi * i / 50) + (i * 7919 % 11) / 100)
>>> d.period, d.has_opinion()
(50, True)
>>> d.score_one(math.sin(2 * math.pi * 1500 / 50)) < 0.9, d.score_one(-1.0) > 0.999
(True, True)
>>> SeasonalResidual().score_one(1.0), SeasonalResidual().has_opinion()
(0.0, False)
"""

from __future__ import annotations

import numpy as np

from processors.detectors.base import Evidence, register
from processors.detectors.calibration import TailCalibrator
from processors.detectors.state import integer, pack_floats, params_of, unpack_floats


def dominant_period(values: np.ndarray, min_lag: int, max_lag: int, min_acf: float) -> int | None:
    """The lag of the highest autocorrelation after the first negative one, within
    ``[min_lag, max_lag]`` (and at most half the data), if it reaches ``min_acf``.

    >>> dominant_period(np.sin(np.arange(400) * 2 * np.pi / 25), 2, 150, 0.5)
    25
    >>> dominant_period(np.random.default_rng(0).normal(size=400), 2, 150, 0.5) is None
    True
    """
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    hi = min(max_lag, n // 2)
    if hi <= min_lag:
        return None
    x = x - x.mean()
    spec = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(spec * np.conj(spec))[:hi + 1]
    if acf[0] <= 0.0:  # a constant series has no period
        return None
    acf = acf / acf[0]
    seg = acf[min_lag:hi + 1]
    negative = np.flatnonzero(seg < 0.0)
    if not len(negative):
        return None
    start = int(negative[0])
    best = start + int(np.argmax(seg[start:]))
    return min_lag + best if seg[best] >= min_acf else None


@register("seasonal")
class SeasonalResidual:
    """Mean residual against the value one (estimated) period ago, calibrated.

    Cost: a few µs per event plus one FFT of ``2 * buffer`` points every ``every``
    events; state: ``buffer`` values, ``smooth`` residuals and the calibrator's
    ``calib_size``. The period is searched once ``min_values`` values were seen.
    """

    name = "seasonal"

    def __init__(self, buffer: int = 2016, every: int = 288, min_lag: int = 4, max_lag: int = 700,
                 min_acf: float = 0.5, smooth: int = 5, calib_size: int = 1500, min_count: int = 100,
                 min_values: int = 300):
        if buffer < 4 * min_lag or min_lag < 2:
            raise ValueError("need min_lag >= 2 and buffer >= 4 * min_lag")
        if every < 1 or smooth < 1:
            raise ValueError("every and smooth must be at least 1")
        self.buffer = buffer
        self.every = every
        self.min_lag = min_lag
        self.max_lag = max_lag
        self.min_acf = min_acf
        self.smooth = smooth
        self.calib_size = calib_size
        self.min_count = min_count
        self.min_values = max(min_values, 4 * min_lag)
        self.period: int | None = None
        self._ring: list[float] = []  # the last `buffer` values; _pos is the oldest once full
        self._pos = 0
        self._residuals: list[float] = []  # the last smooth-1 residuals, oldest first
        self._cal = TailCalibrator(size=calib_size, min_count=min_count)
        self._count = 0

    # ------------------------------------------------------------------ state
    def _ago(self, lag: int) -> float:
        """The value ``lag`` events before the next one (1 = the latest)."""
        ring = self._ring
        return ring[(self._pos - lag) % len(ring)] if len(ring) == self.buffer else ring[-lag]

    def _raw(self, x: float) -> float | None:
        p = self.period
        if p is None or len(self._ring) < p:
            return None
        r = abs(x - self._ago(p))
        return (sum(self._residuals) + r) / (len(self._residuals) + 1)

    def has_opinion(self) -> bool:
        """A period was found and the residuals at that lag are calibrated."""
        return self.period is not None and len(self._cal) >= self._cal.min_count

    # ------------------------------------------------------------------ protocol
    def score_one(self, x: float) -> float:
        if x != x:
            return 0.0
        raw = self._raw(x)
        return 0.0 if raw is None else self._cal.score(raw)

    def learn_one(self, x: float) -> None:
        if x != x:
            return
        raw = self._raw(x)
        if raw is not None:
            self._cal.learn_one(raw)
            self._residuals.append(abs(x - self._ago(self.period)))  # type: ignore[arg-type]
            if len(self._residuals) >= self.smooth:  # keep smooth-1: the next value completes it
                del self._residuals[0]
        if len(self._ring) < self.buffer:
            self._ring.append(x)
        else:
            self._ring[self._pos] = x
            self._pos = (self._pos + 1) % self.buffer
        self._count += 1
        if self._count % self.every == 0 and len(self._ring) >= self.min_values:
            ordered = self._ring[self._pos:] + self._ring[:self._pos]
            period = dominant_period(np.asarray(ordered), self.min_lag, self.max_lag, self.min_acf)
            if period != self.period:
                self.period = period
                self._residuals = []
                self._cal = TailCalibrator(size=self.calib_size, min_count=self.min_count)

    def to_state(self) -> dict:
        return {"params": {"buffer": self.buffer, "every": self.every, "min_lag": self.min_lag,
                           "max_lag": self.max_lag, "min_acf": self.min_acf, "smooth": self.smooth,
                           "calib_size": self.calib_size, "min_count": self.min_count,
                           "min_values": self.min_values},
                "period": self.period, "ring": pack_floats(self._ring), "pos": self._pos,
                "residuals": pack_floats(self._residuals), "cal": self._cal.to_state(), "count": self._count}

    @classmethod
    def from_state(cls, state: dict) -> "SeasonalResidual":
        det = cls(**params_of(state, ("buffer", "every", "min_lag", "max_lag", "min_acf", "smooth",
                                      "calib_size", "min_count", "min_values")))
        det.period = None if state["period"] is None else integer(state["period"], 1, det.buffer)
        det._ring = unpack_floats(state["ring"], det.buffer)
        det._pos = integer(state["pos"], 0, max(0, len(det._ring) - 1))
        det._residuals = unpack_floats(state["residuals"], det.smooth)
        det._cal = TailCalibrator.from_state(state["cal"])
        det._count = integer(state["count"])
        return det

    def evidence(self) -> Evidence:
        """The value one period ago (what the cycle predicts) and the typical residual."""
        if self.period is None or len(self._ring) < self.period:
            return Evidence(0.0, 0.0, self._count)
        return Evidence(self._ago(self.period), self._cal.median(), self._count)
