"""Causes of inefficiency with ground truth: why a simulated home uses more energy than
it should. Pure: no I/O.

A ``CausePlan`` maps homes to one cause each, with a severity in [0, 1]. The simulator
(``CitySimulator(..., causes=plan)``) changes the home's physics for the whole run;
homes without a cause are untouched and read exactly as without a plan. The
evaluation (``evaluation.explain_eval``) scores the analysis (``assistant.analysis``)
against ``plan.ground_truth()``.

=================  ==========================================================  =============================
cause              what the simulator changes (severity s in [0, 1])           shows as
=================  ==========================================================  =============================
poor_insulation    envelope loss UA x (1.8 + 0.7 s), heat pump sized to the    high kWh per degree-day,
                   actual home, same heat capacity (shorter time constant)     comfort kept
low_cop            heat pump COP x (0.45 + 0.15 s) and heating capacity x      high kWh per degree-day and
                   (0.40 + 0.10 s) (a refrigerant loss costs both)             indoor sags on cold hours
high_setpoint      thermostat setpoint + (3.0 + 1.5 s) C                       warm indoors all day
no_setback         no night set-back                                           flat indoor temperature at night
base_load          always-on load + (250 + 250 s) W                            high night power floor
pump_never_stops   a circulation pump that runs around the clock:              power floor and vibration up
                   + (90 + 60 s) W and + (1.5 + 1.0 s) mm/s vibration          day and night
=================  ==========================================================  =============================

Plans drawn with ``CausePlan.random`` depend only on ``(seed, home index)`` through
their own hash streams, never on the simulator's noise generator, so the same seed gives
the same causes in a city of any size.

>>> plan = CausePlan.random(["H000000", "H000001", "H000002", "H000003"], seed=5, fraction=0.5)
>>> plan == CausePlan.random(["H000000", "H000001", "H000002", "H000003"], seed=5, fraction=0.5)
True
>>> all(c.cause in CAUSES and 0.0 <= c.severity <= 1.0 for c in plan.ground_truth())
True
>>> CausePlan([HomeCause("H000001", "low_cop", 0.5)]).cause_of("H000001").cause
'low_cop'
>>> CausePlan([HomeCause("H000001", "draughty_door", 0.5)])
Traceback (most recent call last):
...
ValueError: unknown cause 'draughty_door' (known: poor_insulation, low_cop, high_setpoint, no_setback, base_load, pump_never_stops)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from ecoretrofit.hashing import uniforms

#: Every cause, in a fixed order (the eval's table follows it).
CAUSES: tuple[str, ...] = (
    "poor_insulation", "low_cop", "high_setpoint", "no_setback", "base_load", "pump_never_stops",
)
#: Hash streams of cause plans: far from the simulator's (0-22), the fleet's and the register's.
_STREAM = 7_300


@dataclass(frozen=True)
class HomeCause:
    """Ground truth: ``home_id`` is inefficient because of ``cause`` (``severity`` in [0, 1])."""

    home_id: str
    cause: str
    severity: float = 0.5

    def __post_init__(self):
        if self.cause not in CAUSES:
            raise ValueError(f"unknown cause {self.cause!r} (known: {', '.join(CAUSES)})")
        if not 0.0 <= float(self.severity) <= 1.0:
            raise ValueError(f"severity must be in [0, 1] (got {self.severity})")

    def as_dict(self) -> dict:
        return {"home_id": self.home_id, "cause": self.cause, "severity": round(float(self.severity), 4)}


class CausePlan:
    """At most one cause per home."""

    def __init__(self, causes: Sequence[HomeCause] = ()):
        self._by_home: dict[str, HomeCause] = {}
        for c in causes:
            if c.home_id in self._by_home:
                raise ValueError(f"home {c.home_id} has two causes")
            self._by_home[c.home_id] = c

    @classmethod
    def random(cls, home_ids: Sequence[str], seed: int, fraction: float = 0.6,
               causes: Sequence[str] = CAUSES) -> "CausePlan":
        """Each home gets a cause with probability ``fraction``, the cause uniformly from
        ``causes``, a uniform severity; from ``(seed, home index)`` only."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction must be in [0, 1]")
        for c in causes:
            if c not in CAUSES:
                raise ValueError(f"unknown cause {c!r} (known: {', '.join(CAUSES)})")
        if not causes:
            return cls()
        idx = np.arange(len(home_ids), dtype=np.uint64)
        has = uniforms(seed, idx, _STREAM) < fraction
        which = np.minimum((uniforms(seed, idx, _STREAM + 1) * len(causes)).astype(np.int64), len(causes) - 1)
        sev = uniforms(seed, idx, _STREAM + 2)
        return cls([HomeCause(h, causes[int(which[i])], float(sev[i]))
                    for i, h in enumerate(home_ids) if has[i]])

    def cause_of(self, home_id: str) -> HomeCause | None:
        return self._by_home.get(home_id)

    def ground_truth(self) -> list[HomeCause]:
        return sorted(self._by_home.values(), key=lambda c: c.home_id)

    def __len__(self) -> int:
        return len(self._by_home)

    def __iter__(self) -> Iterator[HomeCause]:
        return iter(self.ground_truth())

    def __eq__(self, other) -> bool:
        return isinstance(other, CausePlan) and self.ground_truth() == other.ground_truth()

    def __repr__(self) -> str:
        return f"CausePlan({len(self)} homes)"


@dataclass
class CauseEffects:
    """What a plan does to the simulator's per-home parameters, as arrays over all homes
    (multipliers 1 and additions 0 where a home has no cause)."""

    ua_factor: np.ndarray
    cop_factor: np.ndarray
    capacity_factor: np.ndarray
    setpoint_add_c: np.ndarray
    no_setback: np.ndarray  # bool
    base_add_w: np.ndarray
    pump_add_w: np.ndarray
    pump_vib_add: np.ndarray

    @classmethod
    def of(cls, plan: CausePlan, home_index: dict[str, int], n: int) -> "CauseEffects":
        e = cls(np.ones(n), np.ones(n), np.ones(n), np.zeros(n), np.zeros(n, dtype=bool), np.zeros(n),
                np.zeros(n), np.zeros(n))
        for c in plan:
            if c.home_id not in home_index:
                raise ValueError(f"cause on unknown home {c.home_id!r} (city has {n} homes)")
            i, s = home_index[c.home_id], float(c.severity)
            if c.cause == "poor_insulation":
                e.ua_factor[i] = 1.8 + 0.7 * s
            elif c.cause == "low_cop":
                e.cop_factor[i] = 0.45 + 0.15 * s
                e.capacity_factor[i] = 0.40 + 0.10 * s
            elif c.cause == "high_setpoint":
                e.setpoint_add_c[i] = 3.0 + 1.5 * s
            elif c.cause == "no_setback":
                e.no_setback[i] = True
            elif c.cause == "base_load":
                e.base_add_w[i] = 250.0 + 250.0 * s
            elif c.cause == "pump_never_stops":
                e.pump_add_w[i] = 90.0 + 60.0 * s
                e.pump_vib_add[i] = 1.5 + 1.0 * s
        return e
