"""Extreme values against the long-run history (peaks over threshold).

Most operational anomalies worth waking someone for take the signal somewhere it has
not been for a long time: a temperature above every reading of the last weeks, a
request latency below anything seen. A rolling window of a few hundred values forgets
that context and flags every busy hour; this detector remembers the ``k`` largest and
``k`` smallest values of the last ``horizon`` events (exactly, with O(k) state per
block of events) and scores a new value by the peaks-over-threshold estimate of its
tail probability (the SPOT idea, Siffer et al., KDD 2017):

``p_up = (k / n) * exp(-(x - u) / beta)`` for ``x`` above ``u``, the k-th largest
value, with ``beta`` the mean excess of the top ``k`` over ``u`` (likewise below the
k-th smallest). ``p = 2 * min(p_up, p_down)`` and the score is ``1 - p``; values inside
``[k-th smallest, k-th largest]`` score 0. A new record of an i.i.d. series comes out
at ``p ~ 1/n``; a value far beyond every record at much less. (A generalised-Pareto
tail fitted by moments was tried instead of the exponential one: it did worse on NAB,
55.6 vs 58.4 standard, and was dropped.)

On NAB this detector alone (with the ensemble's refractory rule) scores 58.4 on the
standard profile; it is the backbone of the default ``ensemble``.

>>> d = ExtremeValue(warmup=50)
>>> for i in range(2000):
...     d.learn_one(10.0 + (i * 7919 % 101) / 100.0)
>>> d.score_one(10.5), d.score_one(11.05) > 0.99, d.score_one(12.0) > 0.9999
(0.0, True, True)
>>> ExtremeValue().score_one(5.0)
0.0
"""

from __future__ import annotations

import math
from bisect import insort
from collections import deque

from processors.detectors.base import Evidence, register
from processors.detectors.state import integer, pack_floats, params_of, unpack_floats


class _TopK:
    """The ``k`` largest values seen, sorted ascending."""

    __slots__ = ("k", "vals")

    def __init__(self, k: int, vals: list[float] | None = None):
        self.k = k
        self.vals: list[float] = vals or []

    def add(self, x: float) -> None:
        v = self.vals
        if len(v) < self.k:
            insort(v, x)
        elif x > v[0]:
            insort(v, x)
            del v[0]


@register("extreme")
class ExtremeValue:
    """Two-sided peaks-over-threshold score against the last ``horizon`` events.

    The history is kept as blocks of ``horizon // blocks`` events, each with its own
    top-k and bottom-k; the union of the live blocks' extremes contains the exact
    extremes of the horizon. Cost: O(k) per event; state: ``2 k`` floats per
    block.
    """

    name = "extreme"

    def __init__(self, k: int = 30, horizon: int = 50_000, blocks: int = 25, warmup: int = 100,
                 min_beta: float = 0.01):
        if k < 5:
            raise ValueError("k must be at least 5")
        self.k = k
        self.horizon = horizon
        self.block_size = max(k, horizon // blocks)
        self.blocks = blocks
        self.warmup = max(warmup, 20)
        self.min_beta = min_beta
        self._blocks: deque[tuple[int, _TopK, _TopK]] = deque()  # (count, top, -bottom)
        self._top = _TopK(k)
        self._bot = _TopK(k)  # negated values
        self._n = 0

    # ------------------------------------------------------------------ state
    def _total(self) -> int:
        return sum(c for c, _, _ in self._blocks)

    def _rebuild(self) -> None:
        top, bot = _TopK(self.k), _TopK(self.k)
        for _, t, b in self._blocks:
            for v in t.vals:
                top.add(v)
            for v in b.vals:
                bot.add(v)
        self._top, self._bot = top, bot

    def learn_one(self, x: float) -> None:
        if x != x:
            return
        if not self._blocks or self._blocks[-1][0] >= self.block_size:
            self._blocks.append((0, _TopK(self.k), _TopK(self.k)))
            if len(self._blocks) > self.blocks:
                self._blocks.popleft()
                self._rebuild()
        c, t, b = self._blocks[-1]
        t.add(x)
        b.add(-x)
        self._blocks[-1] = (c + 1, t, b)
        self._top.add(x)
        self._bot.add(-x)
        self._n += 1

    def to_state(self) -> dict:
        return {"params": {"k": self.k, "horizon": self.horizon, "blocks": self.blocks, "warmup": self.warmup,
                           "min_beta": self.min_beta},
                "n": self._n,
                "blocks": [[c, pack_floats(t.vals), pack_floats(b.vals)] for c, t, b in self._blocks]}

    @classmethod
    def from_state(cls, state: dict) -> "ExtremeValue":
        det = cls(**params_of(state, ("k", "horizon", "blocks", "warmup", "min_beta")))
        det._n = integer(state["n"])
        blocks = state["blocks"]
        if not isinstance(blocks, list) or len(blocks) > det.blocks:
            raise ValueError("blocks: not a list of at most `blocks` entries")
        for c, top, bot in blocks:
            t, b = unpack_floats(top, det.k), unpack_floats(bot, det.k)
            if t != sorted(t) or b != sorted(b):
                raise ValueError("block extremes must be sorted")
            det._blocks.append((integer(c, 0, det.block_size), _TopK(det.k, t), _TopK(det.k, b)))
        det._rebuild()
        return det

    # ------------------------------------------------------------------ scoring
    def _tail_p(self, vals: list[float], x: float, n: int, spread: float) -> float:
        k = min(len(vals), max(5, n // 10))
        tail = vals[len(vals) - k:]
        u = tail[0]
        if x <= u:
            return 1.0
        # ``min_beta`` of the max-min spread keeps a flat tail (a quantised or once
        # constant series) from turning the smallest step into an infinite surprise.
        beta = max(sum(tail) / k - u, self.min_beta * spread, 1e-12)
        return (k / n) * math.exp(-(x - u) / beta)

    def p_value(self, x: float) -> float:
        n = self._total()
        if self._n < self.warmup or n < self.warmup or x != x:
            return 1.0
        spread = self._top.vals[-1] + self._bot.vals[-1]  # max - min
        p_up = self._tail_p(self._top.vals, x, n, spread)
        p_dn = self._tail_p(self._bot.vals, -x, n, spread)
        return min(1.0, 2.0 * min(p_up, p_dn))

    def score_one(self, x: float) -> float:
        return 1.0 - self.p_value(x)

    def evidence(self) -> Evidence:
        """Mid-range and half-range of the remembered extremes (the range normal
        values have covered within the horizon), and how many events that is."""
        if not self._n:
            return Evidence(0.0, 0.0, 0)
        hi, lo = self._top.vals[-1], -self._bot.vals[-1]
        return Evidence((hi + lo) / 2.0, (hi - lo) / 2.0, self._total())
