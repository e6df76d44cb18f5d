"""Combining calibrated detectors, and reporting each incident once.

Every member reports a calibrated score ``s = 1 - p`` (``p`` the estimated chance of a
value at least that unusual in normal operation). ``Ensemble`` combines them:

- ``"geometric"`` (default): the weighted geometric mean of the p-values,
  ``p = prod_i p_i ** w_i`` (weights summing to 1). A value has to look unusual to
  more than one member, or extremely unusual to one, to score high; one member's
  quirk (a local spike in a busy series, a novel but harmless shape) is damped by the
  others. For independent members it is conservative in the tail
  (``P(p <= t) <= t`` for small ``t``), for identical ones exact; under arbitrary
  dependence it can overstate surprise by at most a factor ``e`` (Vovk & Wang, 2020).
  On NAB, with the default members, it beat Bonferroni clearly (figures in the README).
- ``"bonferroni"``: weighted Bonferroni, ``p = min(1, min_i p_i / w_i)`` with
  the weights summing to 1 (equal weights: ``n * min_i p_i``): the most surprised
  member decides, corrected for having asked several, so the combined score keeps the
  meaning ``P(score > s) <= 1 - s``;
- ``"max"``: ``max_i s_i`` (no correction: more alarms as members are added);
- ``"mean"``: the weighted mean of the scores.

``refractory`` (events, default 50): an incident keeps a detector surprised for a
while, and a page per event is noise. A combined score that does not exceed the
largest combined score of the previous ``refractory`` events is reported as 0: the
incident was already reported, unless it is getting worse. This is what turns "rows
above threshold" into "incidents" (on NAB, default members: 51.6 without it, 65.1
with it, standard profile; the gain is fewer false positives); set it to 0 for the
raw combined score.

``alarm`` and ``hold`` (off by default): once a reported score reaches ``alarm``
the incident is open and the next ``hold`` events report 0, even if it grows: the
refractory rule alone reports every new high of a rising incident. Set ``alarm`` to
the threshold the scores are paged at.

``p_floor`` (default 0): no member's p-value counts below it. A member whose tail fit
degenerates (p = 0 on a quantised series) would otherwise decide the combination
alone, whatever the others say.

A member with a ``has_opinion()`` method that returns False (``seasonal`` before it
has found a period) is left out of the combination and the other weights are
renormalised: having no period is not evidence that a value is normal.

NAB (34-file subset, standard / low FP / low FN): 65.1 / 51.2 / 71.7 with the
defaults; the score moves by less than 5 points when any member's main parameter is
halved or doubled.

>>> e = Ensemble(members=(("zscore", {"window": 50, "warmup": 10}),
...                       ("ewzscore", {"halflife": 20, "warmup": 10})), refractory=0)
>>> for i in range(200):
...     e.learn_one(5.0 + (i % 4) * 0.1)
>>> e.score_one(5.1) < 0.5, e.score_one(9.0) > 0.999
(True, True)
>>> Ensemble().score_one(1.0)     # every member still warming up
0.0
"""

from __future__ import annotations

import math
from collections import deque
from typing import Mapping, Sequence

from processors.detectors import extreme, hst, knn, robust, seasonal, stuck, zscore  # noqa: F401 (registers the members)
from processors.detectors.base import Detector, Evidence, create, register
from processors.detectors.state import dump, integer, load, number, pack_floats, unpack_floats

#: The default members and weights: extremes against the long-run history carry most
#: of the weight; a robust rolling window adds spikes that are extreme only locally,
#: and the shape novelty of the last few values adds anomalies made of ordinary values.
DEFAULT_MEMBERS: tuple[tuple[str, Mapping[str, object]], ...] = (
    ("extreme", {}),
    ("robust", {}),
    ("knn", {}),
)
DEFAULT_WEIGHTS: tuple[float, ...] = (0.6, 0.2, 0.2)


@register("ensemble")
class Ensemble:
    """Several detectors on the same series, their calibrated scores combined.

    Cost and state: the sum of the members' plus ``refractory`` floats, most of both
    ``knn``'s (``ecoretrofit bench --only detectors`` measures them). ``score_one``
    memoises the combined score for the ``learn_one`` that follows, which uses it for
    the refractory and hold rules (so a caller may learn a clipped value and the
    incident still follows the event).
    """

    name = "ensemble"

    def __init__(self, members: Sequence[tuple[str, Mapping[str, object]]] | Sequence[str] = DEFAULT_MEMBERS,
                 combine: str = "geometric", weights: Sequence[float] | None = None,
                 refractory: int = 50, p_floor: float = 0.0, alarm: float = 1.0, hold: int = 0):
        if combine not in ("geometric", "bonferroni", "max", "mean"):
            raise ValueError("combine must be 'geometric', 'bonferroni', 'max' or 'mean'")
        specs = [(m, {}) if isinstance(m, str) else (m[0], dict(m[1])) for m in members]
        if not specs:
            raise ValueError("an ensemble needs at least one member")
        if any(name == "ensemble" for name, _ in specs):
            raise ValueError("an ensemble cannot contain an ensemble")
        self.members: list[Detector] = [create(name, **params) for name, params in specs]
        self.combine = combine
        if weights is None and members is DEFAULT_MEMBERS:
            weights = DEFAULT_WEIGHTS
        w = [1.0] * len(specs) if weights is None else [float(x) for x in weights]
        if len(w) != len(specs) or sum(w) <= 0:
            raise ValueError("weights must be one positive number per member")
        if any(x < 0 for x in w):
            raise ValueError("weights must not be negative")
        total = sum(w)
        self.weights = [x / total for x in w]
        self.refractory = max(0, int(refractory))
        if not 0.0 <= p_floor < 1.0:
            raise ValueError("p_floor must be in [0, 1)")
        self.p_floor = float(p_floor)
        self.alarm = float(alarm)
        self.hold = max(0, int(hold))
        self._recent: deque[float] = deque(maxlen=max(1, self.refractory))
        self._since_alarm = self.hold  # events since the last reported alarm
        self._memo: tuple[float, float] | None = None

    def member_scores(self, x: float) -> list[float]:
        return [m.score_one(x) for m in self.members]

    def _voices(self, x: float) -> tuple[list[float], list[float]]:
        """The scores (capped at ``1 - p_floor``) and renormalised weights of the
        members that have an opinion now."""
        cap = 1.0 - self.p_floor
        scores, weights = [], []
        for m, w in zip(self.members, self.weights):
            has_opinion = getattr(m, "has_opinion", None)
            if has_opinion is not None and not has_opinion():
                continue
            scores.append(min(cap, m.score_one(x)))
            weights.append(w)
        total = sum(weights)
        return scores, [w / total for w in weights] if total > 0 else weights

    def combined_score(self, x: float) -> float:
        """The combined score before the refractory and hold rules."""
        if self._memo is not None and self._memo[0] == x:
            return self._memo[1]
        scores, weights = self._voices(x)
        if not scores:
            s = 0.0
        elif self.combine == "max":
            s = max(scores)
        elif self.combine == "mean":
            s = sum(w * s for w, s in zip(weights, scores))
        elif self.combine == "geometric":
            logp = 0.0
            for sc, w in zip(scores, weights):
                if w > 0.0:
                    p = 1.0 - sc
                    if p <= 0.0:
                        logp = -math.inf
                        break
                    logp += w * math.log(p)
            s = 1.0 - math.exp(logp)
        else:
            p = min((1.0 - s) / w if w > 0 else 1.0 for s, w in zip(scores, weights))
            s = 1.0 - min(1.0, p)
        self._memo = (x, s)
        return s

    def _reported(self, s: float) -> float:
        """The combined score ``s`` after the hold and refractory rules."""
        if self._since_alarm < self.hold:
            return 0.0
        if self.refractory and self._recent and s <= max(self._recent):
            return 0.0
        return s

    def score_one(self, x: float) -> float:
        return self._reported(self.combined_score(x))

    def learn_one(self, x: float) -> None:
        # The incident bookkeeping follows the event's own score: the value of the
        # last ``score_one`` (memoised), not the value learnt, which a caller may
        # have clipped (the processor learns anomalies only up to its threshold band).
        s = self._memo[1] if self._memo is not None else self.combined_score(x)
        if self.hold:
            alarmed = self._reported(s) >= self.alarm
            self._since_alarm = 0 if alarmed else min(self.hold, self._since_alarm + 1)
        if self.refractory:
            self._recent.append(s)
        self._memo = None
        for m in self.members:
            m.learn_one(x)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_memo"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        # checkpoints made before the floor and the incident hold existed: neither on
        state = {"p_floor": 0.0, "alarm": 1.0, "hold": 0, "_since_alarm": 0, **state}
        self.__dict__.update(state)

    def to_state(self) -> dict:
        return {"members": [dump(m) for m in self.members], "combine": self.combine,
                "weights": list(self.weights), "refractory": self.refractory,
                "p_floor": self.p_floor, "alarm": self.alarm, "hold": self.hold,
                "since_alarm": self._since_alarm, "recent": pack_floats(self._recent)}

    @classmethod
    def from_state(cls, state: dict) -> "Ensemble":
        members = state["members"]
        if not isinstance(members, list) or not members or len(members) > 16:
            raise ValueError("members: a list of 1 to 16 detector states")
        loaded = [load(m) for m in members]
        weights = state["weights"]
        if not isinstance(weights, list):
            raise TypeError("weights must be a list")
        refractory = integer(state["refractory"], 0, 100_000)
        # the constructor validates names, weights and combine; members are then replaced
        det = cls(members=[m.name for m in loaded], combine=state["combine"],
                  weights=[number(w, 0.0) for w in weights], refractory=refractory,
                  p_floor=number(state["p_floor"], 0.0, 1.0), alarm=number(state["alarm"]),
                  hold=integer(state["hold"], 0, 10**6))
        det.members = loaded
        det._since_alarm = integer(state["since_alarm"], 0, det.hold)
        det._recent.extend(unpack_floats(state["recent"], max(1, refractory)))
        return det

    def evidence(self) -> Evidence:
        """The location/scale view of normal from the first member that has one
        (robust median and sigma, or a z-score's mean and std), else the first member's."""
        for m in self.members:
            if getattr(m, "name", "") in ("robust", "zscore", "ewzscore"):
                return m.evidence()
        return self.members[0].evidence()


#: ``seasonal_ensemble``'s members: the default ensemble's plus the seasonal residual,
#: which only has a say on series with a period it has found.
SEASONAL_MEMBERS: tuple[tuple[str, Mapping[str, object]], ...] = DEFAULT_MEMBERS + (("seasonal", {}),)
SEASONAL_WEIGHTS: tuple[float, ...] = DEFAULT_WEIGHTS + (0.3,)


@register("seasonal_ensemble")
class SeasonalEnsemble(Ensemble):
    """The default ensemble plus pattern-change evidence, reporting each incident once.

    - members: extreme + robust + shape kNN (as ``ensemble``) and ``seasonal`` (the
      residual against one period ago, see ``seasonal``), weights 0.6/0.2/0.2/0.3
      (renormalised over the members with an opinion: without a period the other three
      decide exactly as in ``ensemble``);
    - ``p_floor=1e-10``: no member may claim a p-value below 1e-10. A calibrator with
      1,500 remembered values cannot know more, and an uncapped member whose tail
      fit degenerates (p = 0 on a quantised series) would otherwise decide alone;
    - ``alarm=0.995, hold=100``: once a score reaches 0.995 (p < 0.005) the incident
      is open and the next 100 events report 0, on top of the ``refractory=100`` rule
      (only new highs are reported). An on-call engineer gets one page per incident.

    Cost: the three members of ``ensemble`` plus a few µs for ``seasonal``.
    """

    name = "seasonal_ensemble"

    def __init__(self, members: Sequence[tuple[str, Mapping[str, object]]] | Sequence[str] = SEASONAL_MEMBERS,
                 combine: str = "geometric", weights: Sequence[float] | None = None,
                 refractory: int = 100, p_floor: float = 1e-10, alarm: float = 0.995, hold: int = 100):
        if weights is None and members is SEASONAL_MEMBERS:
            weights = SEASONAL_WEIGHTS
        super().__init__(members, combine, weights, refractory, p_floor, alarm, hold)
