"""A stuck-sensor detector: the same value, again and again, on a sensor that varies.

A flat line is invisible to detectors that look for values far from normal (a stuck
sensor repeats a perfectly normal value), yet on a noisy analogue sensor exact repeats
essentially never happen. This detector learns how often the series repeats its
previous value, ``p`` (exponentially weighted, Laplace-smoothed), from the runs of
identical values it has seen *end*, and scores the current run of ``r`` identical
values by how unlikely it is if repeats were independent: ``score = 1 - p ** (r - 1)``.

- The current run is not part of ``p``: a sensor that froze keeps being flagged for as
  long as it stays frozen, however long that is.
- A series must first show that it varies: nothing is scored before ``warmup`` values
  and ``min_changes`` value changes, so a sensor that has always been flat is never
  flagged. One that is flat most of the time learns a high ``p`` and is flagged only
  for runs far longer than its usual ones.
- Runs shorter than ``min_run`` score 0. On a noisy sensor the ``min_run``-th identical
  reading (the third, by default) already scores above 0.9999 once ~100 values were
  seen.

>>> d = StuckDetector(warmup=20)
>>> for i in range(200):
...     d.learn_one(21.0 + 0.01 * ((i * 7919) % 13))     # noisy, never flat
>>> scores = []
>>> for _ in range(5):                                    # then the sensor freezes
...     scores.append(d.score_one(21.5)); d.learn_one(21.5)
>>> [round(s, 6) for s in scores]
[0.0, 0.0, 0.999974, 1.0, 1.0]
>>> flat = StuckDetector(warmup=20)
>>> for _ in range(200):
...     flat.learn_one(0.0)                               # a sensor that is always flat
>>> flat.score_one(0.0)
0.0
>>> steps = StuckDetector()                               # changes every 10 readings
>>> for i in range(2000):
...     steps.learn_one(float(i // 10))
>>> round(steps.score_one(199.0), 2), steps.score_one(5.0)   # an 11th 199.0: long-ish
(0.65, 0.0)
"""

from __future__ import annotations

import math

from processors.detectors.base import Evidence, register
from processors.detectors.state import integer, number, params_of


@register("stuck")
class StuckDetector:
    """Scores runs of identical values (``|x - previous| <= tol``) on one series."""

    name = "stuck"

    def __init__(
        self, min_run: int = 3, warmup: int = 30, min_changes: int = 10, tol: float = 0.0, half_life: int = 2000
    ):
        if min_run < 2:
            raise ValueError("min_run must be at least 2")
        if half_life < 1:
            raise ValueError("half_life must be positive")
        self.min_run = int(min_run)
        self.warmup = int(warmup)
        self.min_changes = int(min_changes)
        self.tol = float(tol)
        self.half_life = int(half_life)
        self._decay = 0.5 ** (1.0 / half_life)
        self._last: float | None = None
        self._run = 0  # length of the run of equal values ending with the last value
        self._seen = 0
        self._changes = 0  # completed runs
        self._pairs = 0.0  # weighted count of (previous, current) pairs in completed runs
        self._repeats = 0.0  # weighted count of those that repeated
        # for evidence(): weighted mean and variance of the values
        self._w = 0.0
        self._mean = 0.0
        self._var = 0.0

    def _repeats_last(self, x: float) -> bool:
        return self._last is not None and abs(x - self._last) <= self.tol

    def repeat_rate(self) -> float:
        """The learned probability that a value repeats the previous one."""
        return (self._repeats + 1.0) / (self._pairs + 2.0)

    def score_one(self, x: float) -> float:
        if self._seen < self.warmup or self._changes < self.min_changes:
            return 0.0
        run = self._run + 1 if self._repeats_last(x) else 1
        if run < self.min_run:
            return 0.0
        return 1.0 - self.repeat_rate() ** (run - 1)

    def learn_one(self, x: float) -> None:
        if self._last is None:
            self._run = 1
        elif self._repeats_last(x):
            self._run += 1
        else:  # a run of self._run values ended: run - 1 repeats, then a change
            f = self._decay**self._run
            self._pairs = self._pairs * f + self._run
            self._repeats = self._repeats * f + (self._run - 1)
            self._changes += 1
            self._run = 1
        self._last = x
        self._seen += 1
        if not math.isnan(x):
            d = self._decay
            self._w = self._w * d + 1.0
            delta = x - self._mean
            self._mean += delta / self._w
            self._var = self._var * d + delta * (x - self._mean)

    def evidence(self) -> Evidence:
        if self._w <= 0:
            return Evidence(0.0, 0.0, 0)
        std = math.sqrt(max(0.0, self._var / max(self._w - 1.0, 1.0)))
        return Evidence(self._mean, std, self._seen)

    _LEARNED = ("run", "seen", "changes", "pairs", "repeats", "w", "mean", "var")

    def to_state(self) -> dict:
        return {"params": {"min_run": self.min_run, "warmup": self.warmup, "min_changes": self.min_changes,
                           "tol": self.tol, "half_life": self.half_life},
                "last": self._last, **{k: getattr(self, "_" + k) for k in self._LEARNED}}

    @classmethod
    def from_state(cls, state: dict) -> "StuckDetector":
        det = cls(**params_of(state, ("min_run", "warmup", "min_changes", "tol", "half_life")))
        det._last = None if state["last"] is None else number(state["last"])
        for k in ("run", "seen", "changes"):
            setattr(det, "_" + k, integer(state[k]))
        for k in ("pairs", "repeats", "w", "var"):
            setattr(det, "_" + k, number(state[k], 0.0))
        det._mean = number(state["mean"])
        return det
