"""Fault scenarios with labelled ground truth, for the city simulator.

A ``FaultPlan`` is a list of ``FaultRecord``: which home, what kind of fault, which
metric(s) it shows on, and the half-open window ``[start_ms, end_ms)`` of event time in
which the simulator applies it. The simulator (``producers.simulator.CitySimulator``)
reads the plan while ticking; the evaluation (``evaluation.faults``) scores detectors
against ``plan.ground_truth()``.

Kinds (``KINDS``) and what the simulator does inside the window:

=========================  =====================  ========================================
kind                       metric(s)              signature
=========================  =====================  ========================================
hvac_failure               indoor_temp_c, power_w  heating/cooling stops (capacity x
                                                   ``1 - magnitude``): indoor temperature
                                                   drifts toward outdoor, HVAC power drops
insulation_degradation     power_w, energy_kwh    envelope loss UA grows linearly to
                                                   ``1 + magnitude`` x: more HVAC power
                                                   for the same weather (slow)
voltage_sag                voltage_v              voltage x ``1 - magnitude``
voltage_surge              voltage_v              voltage x ``1 + magnitude``
pump_bearing_wear          vibration_mm_s,        vibration grows to ``1 + magnitude`` x
                           pump_pressure_bar      (``frac**1.5`` ramp) and the pump
                                                   pressure oscillates, growing (random
                                                   plans: homes with a water system)
stuck_sensor               any scored metric      the metric repeats its value at the
                                                   window's first reading
meter_dropout              seq                    no reading is emitted (``seq`` still
                                                   advances, so the gap is visible)
spike                      power_w, voltage_v or  ``magnitude`` is added for the one to
                           indoor_temp_c          three readings of the window
=========================  =====================  ========================================

Sensor faults (stuck, spike, dropout, sag/surge) change only what is reported; physical
faults (HVAC, insulation) change the simulated home, so their effects (an indoor
temperature that recovers, a cumulative energy counter that stays higher) outlast the
window: the window is when the fault *is present*, the aftermath is recovery.

>>> plan = FaultPlan()
>>> rec = plan.inject("H000003", "voltage_sag", start_ms=60_000, duration_ms=30_000)
>>> rec.metric, rec.end_ms, rec.magnitude
('voltage_v', 90000, 0.15)
>>> plan.ground_truth() == [rec]
True
>>> r = FaultPlan.random(["H000000", "H000001", "H000002"], 0, 6 * 3_600_000, seed=7,
...                      kinds=("spike", "meter_dropout"), faults_per_kind=2, step_ms=10_000)
>>> sorted(f.kind for f in r.ground_truth())
['meter_dropout', 'meter_dropout', 'spike', 'spike']
>>> r.ground_truth() == FaultPlan.random(["H000000", "H000001", "H000002"], 0, 6 * 3_600_000,
...     seed=7, kinds=("spike", "meter_dropout"), faults_per_kind=2, step_ms=10_000).ground_truth()
True
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Collection, Iterator, Mapping, Sequence

from schemas import SCORED_METRICS, WATER_METRICS

HOUR_MS = 3_600_000
MINUTE_MS = 60_000

#: Metrics that carry values a detector can score (the stream processor's list).
#: ``energy_kwh`` is a cumulative counter: its derivative, ``power_w``, is scored.
VALUE_METRICS = SCORED_METRICS
#: Metrics a stuck sensor may affect (``outdoor_temp_c`` and ``energy_kwh`` too).
STUCK_METRICS = VALUE_METRICS + ("outdoor_temp_c", "energy_kwh")
SPIKE_METRICS = ("power_w", "voltage_v", "indoor_temp_c")


@dataclass(frozen=True)
class KindSpec:
    """What one fault kind affects and its default ranges (for ``FaultPlan.random``)."""

    metrics: tuple[str, ...]  # allowed primary metrics; the first is the default
    extra_metrics: tuple[str, ...]  # also affected, whatever the primary
    duration_ms: tuple[int, int]  # random range; spikes: number of steps instead
    magnitude: tuple[float, float]  # random range
    default_magnitude: float
    water_only: bool = False


KIND_SPECS: dict[str, KindSpec] = {
    "hvac_failure": KindSpec(("indoor_temp_c",), ("power_w",), (45 * MINUTE_MS, 3 * HOUR_MS), (1.0, 1.0), 1.0),
    "insulation_degradation": KindSpec(
        ("power_w",), ("energy_kwh",), (3 * HOUR_MS, 8 * HOUR_MS), (0.5, 1.0), 0.6
    ),
    "voltage_sag": KindSpec(("voltage_v",), (), (30_000, 5 * MINUTE_MS), (0.10, 0.25), 0.15),
    "voltage_surge": KindSpec(("voltage_v",), (), (30_000, 3 * MINUTE_MS), (0.06, 0.12), 0.08),
    "pump_bearing_wear": KindSpec(
        ("vibration_mm_s",), ("pump_pressure_bar",), (2 * HOUR_MS, 6 * HOUR_MS), (2.0, 5.0), 3.0, water_only=True
    ),
    "stuck_sensor": KindSpec(STUCK_METRICS, (), (20 * MINUTE_MS, 90 * MINUTE_MS), (0.0, 0.0), 0.0),
    "meter_dropout": KindSpec(("seq",), (), (5 * MINUTE_MS, 30 * MINUTE_MS), (0.0, 0.0), 0.0),
    "spike": KindSpec(SPIKE_METRICS, (), (1, 3), (1.0, 1.0), 1.0),
}
KINDS: tuple[str, ...] = tuple(KIND_SPECS)

#: Spike size per metric (additive, in the metric's unit): default and random range.
SPIKE_MAGNITUDE: dict[str, tuple[float, float, float]] = {
    "power_w": (4000.0, 3000.0, 7000.0),
    "voltage_v": (45.0, 30.0, 60.0),
    "indoor_temp_c": (8.0, 5.0, 10.0),  # random sign
}


@dataclass(frozen=True)
class FaultRecord:
    """One injected fault: ground truth. The window is ``[start_ms, end_ms)``."""

    home_id: str
    kind: str
    metric: str
    start_ms: int
    end_ms: int
    magnitude: float = 0.0
    extra_metrics: tuple[str, ...] = ()

    @property
    def metrics(self) -> tuple[str, ...]:
        """Every metric the fault shows on (primary first)."""
        return (self.metric,) + self.extra_metrics

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms

    def active(self, ts_ms: int) -> bool:
        return self.start_ms <= ts_ms < self.end_ms

    def as_dict(self) -> dict:
        return {
            "home_id": self.home_id,
            "kind": self.kind,
            "metric": self.metric,
            "metrics": list(self.metrics),
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "magnitude": self.magnitude,
        }


def default_magnitude(kind: str, metric: str) -> float:
    if kind == "spike":
        return SPIKE_MAGNITUDE[metric][0]
    return KIND_SPECS[kind].default_magnitude


class FaultPlan:
    """An editable list of faults; the simulator applies it while ticking."""

    def __init__(self, records: Sequence[FaultRecord] = ()):
        self._records: list[FaultRecord] = []
        for r in records:
            self.add(r)

    # ------------------------------------------------------------------ build
    def add(self, record: FaultRecord) -> FaultRecord:
        spec = KIND_SPECS.get(record.kind)
        if spec is None:
            raise ValueError(f"unknown fault kind {record.kind!r}; known: {', '.join(KINDS)}")
        if record.metric not in spec.metrics:
            raise ValueError(f"{record.kind} cannot affect {record.metric!r}; allowed: {', '.join(spec.metrics)}")
        if record.end_ms <= record.start_ms:
            raise ValueError("a fault needs a positive duration")
        self._records.append(record)
        return record

    def inject(
        self,
        home_id: str,
        kind: str,
        start_ms: int,
        duration_ms: int,
        metric: str | None = None,
        magnitude: float | None = None,
    ) -> FaultRecord:
        """Add one fault; ``metric`` and ``magnitude`` default per kind (see module doc).

        >>> FaultPlan().inject("H000001", "spike", 5_000, 1_000, metric="voltage_v").magnitude
        45.0
        """
        spec = KIND_SPECS.get(kind)
        if spec is None:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(KINDS)}")
        metric = metric or spec.metrics[0]
        if magnitude is None:
            magnitude = default_magnitude(kind, metric) if metric in spec.metrics else 0.0
        return self.add(
            FaultRecord(
                home_id, kind, metric, int(start_ms), int(start_ms) + int(duration_ms), float(magnitude),
                spec.extra_metrics,
            )
        )

    @classmethod
    def random(
        cls,
        home_ids: Sequence[str],
        start_ms: int,
        duration_ms: int,
        seed: int,
        kinds: Sequence[str] = KINDS,
        faults_per_kind: int | Mapping[str, int] = 2,
        *,
        water_homes: Collection[str] | None = None,
        step_ms: int = 1000,
        warmup_ms: int | None = None,
        tail_ms: int | None = None,
        spacing_ms: int | None = None,
    ) -> "FaultPlan":
        """A seeded scenario mix inside ``[start_ms, start_ms + duration_ms)``.

        Faults start on the tick grid (``start_ms + k * step_ms``), after ``warmup_ms``
        (default: a tenth of the span, at least 200 steps) so detectors have learned
        something, and end ``tail_ms`` before the span does (default: a twentieth), so
        the aftermath is observed. Faults on the same home are kept ``spacing_ms`` apart
        (default: 15 minutes, or a tenth of the span if shorter) and spread over the
        least-used homes first. ``pump_bearing_wear`` and stuck
        water sensors go to ``water_homes`` only (default: every home); random stuck
        sensors are on ``VALUE_METRICS`` (the scored ones). Durations are
        the kind's range, shrunk to fit the span; spikes last one to three steps. A
        fault that cannot be placed is left out: check ``len(plan)``.
        """
        kinds = tuple(kinds)
        for k in kinds:
            if k not in KIND_SPECS:
                raise ValueError(f"unknown fault kind {k!r}; known: {', '.join(KINDS)}")
        if not home_ids:
            raise ValueError("no homes to put faults on")
        step = int(step_ms)
        span = int(duration_ms)
        warm = int(warmup_ms) if warmup_ms is not None else min(span // 3, max(span // 10, 200 * step))
        tail = int(tail_ms) if tail_ms is not None else span // 20
        lo, hi = int(start_ms) + warm, int(start_ms) + span - tail  # fault window inside [lo, hi)
        spacing = min(15 * MINUTE_MS, span // 10) if spacing_ms is None else int(spacing_ms)
        if hi - lo < 2 * step:
            raise ValueError("span too short for faults after warm-up")
        counts = {k: (faults_per_kind.get(k, 0) if isinstance(faults_per_kind, Mapping) else int(faults_per_kind)) for k in kinds}
        water = set(home_ids if water_homes is None else water_homes) & set(home_ids)
        rng = random.Random(f"faultplan/{seed}")
        plan = cls()
        busy: dict[str, list[tuple[int, int]]] = {h: [] for h in home_ids}
        used: dict[str, int] = {h: 0 for h in home_ids}
        # scarce homes (water systems) and long faults first, so they find room
        order = sorted(kinds, key=lambda k: (not KIND_SPECS[k].water_only, -KIND_SPECS[k].duration_ms[1]))
        pools = {
            k: [h for h in home_ids if h in water] if KIND_SPECS[k].water_only else list(home_ids) for k in order
        }
        # round robin over kinds, so that when room runs out every kind is represented
        for round_ in range(max(counts.values(), default=0)):
            for kind in order:
                if counts[kind] <= round_ or not pools[kind]:
                    continue
                rec = _place(rng, kind, KIND_SPECS[kind], pools[kind], water, busy, used, lo, hi, step, spacing)
                if rec is not None:
                    plan.add(rec)
                    busy[rec.home_id].append((rec.start_ms, rec.end_ms))
                    used[rec.home_id] += 1
        return plan

    # ------------------------------------------------------------------ read
    def ground_truth(self) -> list[FaultRecord]:
        """The faults, ordered by start time then home."""
        return sorted(self._records, key=lambda r: (r.start_ms, r.home_id, r.kind, r.metric))

    def for_home(self, home_id: str) -> list[FaultRecord]:
        return [r for r in self.ground_truth() if r.home_id == home_id]

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[FaultRecord]:
        return iter(self.ground_truth())

    def __repr__(self) -> str:
        return f"FaultPlan({len(self)} faults)"


def _place(rng, kind, spec, pool, water, busy, used, lo, hi, step, spacing_ms) -> FaultRecord | None:
    span = hi - lo
    for _attempt in range(60):
        least = min(used[h] for h in pool)
        candidates = [h for h in pool if used[h] == least] if _attempt < 30 else pool
        home = rng.choice(candidates)
        if kind == "spike":
            dur = rng.randint(spec.duration_ms[0], spec.duration_ms[1]) * step
        else:
            dmin, dmax = spec.duration_ms
            dmax = min(dmax, int(span * 0.6))
            dmin = min(dmin, dmax)
            dur = max(2 * step, (rng.randint(dmin, dmax) // step) * step)
        slots = (span - dur) // step
        if slots < 0:
            continue
        start = lo + rng.randint(0, slots) * step
        end = start + dur
        if any(start < e + spacing_ms and s < end + spacing_ms for s, e in busy[home]):
            continue
        if kind == "stuck_sensor":
            # scored metrics only: a fault nobody scores cannot be evaluated
            allowed = [m for m in VALUE_METRICS if home in water or m not in WATER_METRICS]
            metric = rng.choice(allowed)
        elif kind == "spike":
            metric = rng.choice(spec.metrics)
        else:
            metric = spec.metrics[0]
        if kind == "spike":
            _, mlo, mhi = SPIKE_MAGNITUDE[metric]
            mag = rng.uniform(mlo, mhi)
            if metric == "indoor_temp_c" and rng.random() < 0.5:
                mag = -mag
        else:
            mag = rng.uniform(*spec.magnitude)
        return FaultRecord(home, kind, metric, start, end, round(mag, 4), spec.extra_metrics)
    return None
