"""How well the detectors find injected faults: ``ecoretrofit eval faults``.

The city simulator runs a seeded scenario mix (``FaultPlan.random``) and every
detector scores every series (one home, one metric) with the code the stream
processor uses (``processors.detectors.make``; ``score_one`` then ``learn_one`` on each
reading, in event-time order). Meter dropouts leave no values: ``GapDetector`` (seq
jumps and silent homes, checked at every tick with the tick's time as the clock) is
scored on those instead, on the pseudo-metric ``seq``.

Event-level matching (``match``; pure, no simulator needed):

- An **alarm** is a reading whose score is ``>= threshold`` (default 0.9999, per
  detector configurable). Alarms on one series whose timestamps are at most
  ``merge_gap_ms`` apart (default: one step, i.e. consecutive readings) form one
  **episode**.
- A fault's window is ``[start_ms, end_ms + grace_ms)`` on each of its series (its home
  and each metric it affects, e.g. HVAC failure: indoor_temp_c and power_w). The fault
  is **detected** if any alarm falls in its window on one of those series; its
  **delay** is the first such alarm's time minus ``start_ms``.
- An episode that overlaps no fault window on its series is a **false positive**.
  Episodes that overlap a window are not counted at all beyond the detection: a
  detector that flickers during a fault is neither rewarded nor punished for it.
- Per fault kind: ``recall = detected / faults``; ``precision = detected / (detected +
  FP)``, where FP counts the false episodes on the series that carry a fault of that
  kind (so an operator watching those series sees ``detected`` true and ``FP`` false
  alarms); ``F1`` their harmonic mean; median delay over the detected faults. The
  ``all`` row counts every fault and every false episode on every scored series.
- Alarms in the probationary period (before ``since_ms``; in ``eval faults`` the first
  tenth of the run, at least 200 readings, in which no fault is injected) are ignored,
  as NAB does: a detector still learning is not judged.

>>> from producers.faults import FaultRecord
>>> faults = [FaultRecord("H1", "spike", "power_w", 10_000, 12_000),
...           FaultRecord("H2", "spike", "power_w", 50_000, 51_000)]
>>> alarms = [("H1", "power_w", 11_000), ("H1", "power_w", 12_000),   # one episode, true
...           ("H1", "power_w", 90_000),                             # false
...           ("H3", "voltage_v", 5_000)]                            # false, other series
>>> s = score(faults, alarms, grace_ms=1_000, merge_gap_ms=1_000)
>>> k = s["spike"]
>>> k.detected, k.false_episodes, k.precision, k.recall, round(k.f1, 3), k.median_delay_s
(1, 1, 0.5, 0.5, 0.5, 1.0)
>>> s["all"].false_episodes
2
"""

from __future__ import annotations

import bisect
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from producers.faults import KINDS, VALUE_METRICS, FaultPlan, FaultRecord

DEFAULT_THRESHOLD = 0.9999
GAP_DETECTOR = "gaps"
GAP_METRIC = "seq"


# ====================================================================== matching
class Alarm(NamedTuple):
    home_id: str
    metric: str
    ts_ms: int


@dataclass(frozen=True)
class Episode:
    """Consecutive alarms on one series."""

    home_id: str
    metric: str
    start_ms: int
    end_ms: int  # last alarm's time (inclusive)
    alarms: int


def merge_episodes(alarms: Iterable[tuple[str, str, int]], merge_gap_ms: int) -> list[Episode]:
    """Alarms on the same series at most ``merge_gap_ms`` apart become one episode.

    >>> merge_episodes([("H1", "power_w", t) for t in (0, 1000, 2000, 5000)], 1000)
    [Episode(home_id='H1', metric='power_w', start_ms=0, end_ms=2000, alarms=3), Episode(home_id='H1', metric='power_w', start_ms=5000, end_ms=5000, alarms=1)]
    """
    by = _by_series(alarms)
    out: list[Episode] = []
    for (home, metric), times in sorted(by.items()):
        first = prev = times[0]
        count = 1
        for t in times[1:]:
            if t - prev <= merge_gap_ms:
                count += 1
            else:
                out.append(Episode(home, metric, first, prev, count))
                first, count = t, 1
            prev = t
        out.append(Episode(home, metric, first, prev, count))
    return out


@dataclass(frozen=True)
class Detection:
    fault: FaultRecord
    first_alarm_ms: int | None

    @property
    def detected(self) -> bool:
        return self.first_alarm_ms is not None

    @property
    def delay_ms(self) -> int | None:
        return None if self.first_alarm_ms is None else self.first_alarm_ms - self.fault.start_ms


@dataclass(frozen=True)
class Match:
    detections: list[Detection]
    episodes: list[Episode]
    false_episodes: list[Episode]


def match(
    faults: Sequence[FaultRecord],
    alarms: Iterable[tuple[str, str, int]],
    grace_ms: int,
    merge_gap_ms: int,
    since_ms: int | None = None,
) -> Match:
    """Match alarms to fault windows (see the module docstring for the rules); alarms
    before ``since_ms`` (the probationary period) are ignored.

    >>> f = FaultRecord("H1", "stuck_sensor", "voltage_v", 100, 200)
    >>> m = match([f], [("H1", "voltage_v", 50), ("H1", "voltage_v", 150), ("H1", "voltage_v", 205)], 10, 1)
    >>> m.detections[0].delay_ms, len(m.episodes), [e.start_ms for e in m.false_episodes]
    (50, 3, [50])
    """
    alarms = [a for a in alarms if since_ms is None or a[2] >= since_ms]
    by = _by_series(alarms)
    windows: dict[tuple[str, str], list[tuple[int, int]]] = {}
    detections = []
    for f in faults:
        first = None
        for m in f.metrics:
            key = (f.home_id, m)
            windows.setdefault(key, []).append((f.start_ms, f.end_ms + grace_ms))
            times = by.get(key)
            if not times:
                continue
            i = bisect.bisect_left(times, f.start_ms)
            if i < len(times) and times[i] < f.end_ms + grace_ms:
                first = times[i] if first is None else min(first, times[i])
        detections.append(Detection(f, first))
    episodes = merge_episodes(alarms, merge_gap_ms)
    false = [
        e
        for e in episodes
        if not any(e.start_ms < hi and e.end_ms >= lo for lo, hi in windows.get((e.home_id, e.metric), ()))
    ]
    return Match(detections, episodes, false)


@dataclass(frozen=True)
class Scores:
    kind: str
    faults: int
    detected: int
    false_episodes: int
    precision: float | None  # None: no detection and no false alarm
    recall: float | None  # None: no fault
    f1: float
    median_delay_s: float | None
    delays_s: tuple[float, ...] = field(default=(), repr=False)
    before_end: int = field(default=0, repr=False)  # detected while the fault was present

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "faults": self.faults,
            "detected": self.detected,
            "false_episodes": self.false_episodes,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "median_delay_s": self.median_delay_s,
            "max_delay_s": max(self.delays_s) if self.delays_s else None,
            "detected_before_end": self.before_end,
        }


def _scores(kind: str, detections: list[Detection], false_count: int) -> Scores:
    n = len(detections)
    delays = tuple(sorted(d.delay_ms / 1000.0 for d in detections if d.detected))
    tp = len(delays)
    precision = tp / (tp + false_count) if tp + false_count else None
    recall = tp / n if n else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else 0.0
    median = statistics.median(delays) if delays else None
    before = sum(1 for d in detections if d.detected and d.first_alarm_ms < d.fault.end_ms)
    return Scores(kind, n, tp, false_count, precision, recall, f1, median, delays, before)


def scores_by_kind(m: Match) -> dict[str, Scores]:
    """Per fault kind (in ``KINDS`` order) and ``all``, from a ``match``."""
    kinds = sorted({d.fault.kind for d in m.detections}, key=lambda k: (KINDS.index(k) if k in KINDS else 99, k))
    false_by_series: dict[tuple[str, str], int] = {}
    for e in m.false_episodes:
        false_by_series[(e.home_id, e.metric)] = false_by_series.get((e.home_id, e.metric), 0) + 1
    out = {}
    for kind in kinds:
        dets = [d for d in m.detections if d.fault.kind == kind]
        scope = {(d.fault.home_id, metric) for d in dets for metric in d.fault.metrics}
        out[kind] = _scores(kind, dets, sum(false_by_series.get(s, 0) for s in scope))
    out["all"] = _scores("all", list(m.detections), len(m.false_episodes))
    return out


def score(
    faults: Sequence[FaultRecord],
    alarms: Iterable[tuple[str, str, int]],
    grace_ms: int,
    merge_gap_ms: int,
    since_ms: int | None = None,
) -> dict[str, Scores]:
    """``scores_by_kind(match(...))``."""
    return scores_by_kind(match(faults, alarms, grace_ms, merge_gap_ms, since_ms))


def _by_series(alarms: Iterable[tuple[str, str, int]]) -> dict[tuple[str, str], list[int]]:
    by: dict[tuple[str, str], list[int]] = {}
    for home, metric, ts in alarms:
        by.setdefault((home, metric), []).append(int(ts))
    for times in by.values():
        times.sort()
    return by


# ====================================================================== simulation
@dataclass
class Recording:
    """A simulated run kept in memory: ``values[metric][tick, home]``."""

    ts: np.ndarray  # [T] int64
    seq: np.ndarray  # [T, N] int64
    emitted: np.ndarray  # [T, N] bool
    values: dict[str, np.ndarray]
    home_ids: list[str]
    has_water: np.ndarray
    step_ms: int
    faults: list[FaultRecord]
    scored_from_ms: int  # end of the probationary period: no faults, no alarms before

    @property
    def scored_days(self) -> float:
        end = int(self.ts[-1]) + self.step_ms if len(self.ts) else self.scored_from_ms
        return max(0, end - self.scored_from_ms) / 86_400_000

    @property
    def readings(self) -> int:
        return int(self.emitted.sum())

    def series(self, metrics: Sequence[str] = VALUE_METRICS) -> list[tuple[int, str]]:
        """(home index, metric) pairs that carry values (water metrics: water homes)."""
        water = set(VALUE_METRICS[4:])
        return [
            (j, m)
            for j in range(len(self.home_ids))
            for m in metrics
            if m in self.values and (m not in water or self.has_water[j])
        ]


def record(
    homes: int,
    hours: float,
    seed: int,
    *,
    step_ms: int = 10_000,
    start_ms: int = 1_705_276_800_000,
    regions: Sequence[str] = ("north", "south", "east", "west", "central"),
    water_fraction: float = 0.35,
    kinds: Sequence[str] = KINDS,
    faults_per_kind: int = 6,
    progress: bool = True,
) -> Recording:
    """Simulate ``homes`` homes for ``hours`` with a seeded scenario mix."""
    from tqdm import tqdm

    from producers.simulator import CitySimulator

    sim = CitySimulator(homes, regions, seed, start_ms, step_ms=step_ms, water_fraction=water_fraction)
    ticks = int(round(hours * 3_600_000 / step_ms))
    span = ticks * step_ms
    # the probationary period: detectors learn, nothing is injected, nothing is scored
    warmup = min(span // 3, max(span // 10, 200 * step_ms))
    plan = FaultPlan.random(
        sim.home_ids, start_ms, span, seed, kinds=kinds, faults_per_kind=faults_per_kind,
        water_homes=sim.water_homes, step_ms=step_ms, warmup_ms=warmup,
    )
    sim.set_faults(plan)
    n = sim.n
    ts = np.empty(ticks, dtype=np.int64)
    seq = np.empty((ticks, n), dtype=np.int64)
    emitted = np.empty((ticks, n), dtype=bool)
    values = {m: np.empty((ticks, n)) for m in VALUE_METRICS}
    for t in tqdm(range(ticks), desc="simulate", unit="tick", file=sys.stderr, disable=not progress, leave=False):
        c = sim.tick_columns()
        ts[t] = c["ts"][0]
        seq[t] = c["seq"]
        emitted[t] = c["emitted"]
        for m in VALUE_METRICS:
            values[m][t] = c[m]
    return Recording(
        ts, seq, emitted, values, sim.home_ids, sim.has_water.copy(), step_ms, plan.ground_truth(), start_ms + warmup
    )


def run_detector(
    rec: Recording,
    name: str,
    threshold: float = DEFAULT_THRESHOLD,
    params: Mapping[str, object] | None = None,
    progress=None,
    series: Sequence[tuple[int, str]] | None = None,
) -> list[Alarm]:
    """Stream every series (or ``series``) through a fresh ``make(name, **params)``;
    the alarms."""
    _register_own_detectors()
    from processors.detectors import make

    params = dict(params or {})
    alarms: list[Alarm] = []
    for j, metric in rec.series() if series is None else series:
        mask = rec.emitted[:, j]
        times = rec.ts[mask].tolist()
        vals = rec.values[metric][mask, j].tolist()
        det = make(name, **params)
        score_one, learn_one = det.score_one, det.learn_one
        home = rec.home_ids[j]
        for t, x in zip(times, vals):
            s = score_one(x)
            learn_one(x)
            if s >= threshold:
                alarms.append(Alarm(home, metric, t))
        if progress is not None:
            progress.update(1)
    return alarms


def run_gap_detector(rec: Recording, silence_intervals: float = 3.0) -> list[Alarm]:
    """Replay arrivals tick by tick through a ``GapDetector``; its flags as alarms."""
    from processors.detectors.gaps import GapDetector

    g = GapDetector(rec.step_ms, silence_intervals)
    alarms: list[Alarm] = []
    homes = rec.home_ids
    for t in range(len(rec.ts)):
        now = int(rec.ts[t])
        seqs = rec.seq[t]
        for j in np.flatnonzero(rec.emitted[t]).tolist():
            gap = g.observe(homes[j], int(seqs[j]), now)
            if gap is not None:
                alarms.append(Alarm(gap.home_id, GAP_METRIC, gap.detected_ms))
        for gap in g.check(now):
            alarms.append(Alarm(gap.home_id, GAP_METRIC, gap.detected_ms))
    return alarms


_SHARED: Recording | None = None  # what forked workers read


def _work(task: tuple) -> tuple[str, int, list[Alarm], float]:
    name, thr, params, chunk = task
    t0 = time.perf_counter()
    alarms = run_detector(_SHARED, name, thr, params, series=chunk)
    return name, len(chunk), alarms, time.perf_counter() - t0


def _run_all(rec, names, thresholds, params, series, jobs, bar) -> tuple[dict, dict]:
    """Alarms and CPU seconds per detector, in this process or ``jobs`` forked ones."""
    global _SHARED
    by_home: dict[int, list[tuple[int, str]]] = {}
    for j, m in series:
        by_home.setdefault(j, []).append((j, m))
    tasks = [
        (name, thresholds.get(name, DEFAULT_THRESHOLD), params.get(name), chunk)
        for name in names
        for chunk in by_home.values()
    ]
    alarms: dict[str, list[Alarm]] = {n: [] for n in names}
    secs: dict[str, float] = {n: 0.0 for n in names}

    def collect(result) -> None:
        name, count, found, took = result
        alarms[name] += found
        secs[name] += took
        bar.update(count)

    _register_own_detectors()
    import multiprocessing as mp

    if jobs > 1 and len(tasks) > 1 and "fork" in mp.get_all_start_methods():
        _SHARED = rec
        try:
            with mp.get_context("fork").Pool(jobs) as pool:
                for result in pool.imap_unordered(_work, tasks):
                    collect(result)
        finally:
            _SHARED = None
    else:
        _SHARED = rec
        try:
            for task in tasks:
                collect(_work(task))
        finally:
            _SHARED = None
    return alarms, secs


def _register_own_detectors() -> None:
    # "stuck" registers itself on import; base._load_all may not import it yet.
    import processors.detectors.stuck  # noqa: F401


def default_detectors() -> list[str]:
    _register_own_detectors()
    from processors.detectors import available

    return sorted(set(available()) | {"stuck"})


def evaluate(
    rec: Recording,
    detectors: Sequence[str],
    thresholds: Mapping[str, float] | None = None,
    params: Mapping[str, Mapping[str, object]] | None = None,
    grace_ms: int = 600_000,
    merge_gap_ms: int | None = None,
    progress: bool = True,
    jobs: int = 1,
) -> dict:
    """Every detector on ``rec``: a report (JSON-ready dict). ``jobs`` > 1 spreads the
    (detector, home) pairs over that many forked worker processes."""
    from tqdm import tqdm

    thresholds = dict(thresholds or {})
    params = dict(params or {})
    merge_gap_ms = rec.step_ms if merge_gap_ms is None else merge_gap_ms
    value_faults = [f for f in rec.faults if f.kind != "meter_dropout"]
    gap_faults = [f for f in rec.faults if f.kind == "meter_dropout"]
    value_dets = [d for d in detectors if d != GAP_DETECTOR]
    series = rec.series()
    results: list[dict] = []
    rates: dict[str, float] = {}
    days = rec.scored_days
    since = rec.scored_from_ms
    bar = tqdm(
        total=len(series) * len(value_dets), desc="detect", unit="series", file=sys.stderr, disable=not progress
    )
    alarms_of, timings = _run_all(rec, value_dets, thresholds, params, series, jobs, bar)
    bar.close()
    for name in value_dets:
        thr = thresholds.get(name, DEFAULT_THRESHOLD)
        alarms = alarms_of[name]
        sc = score(value_faults, alarms, grace_ms, merge_gap_ms, since)
        results += [{"detector": name, "threshold": thr, **s.as_dict()} for s in sc.values()]
        fp = sc["all"].false_episodes if "all" in sc else 0
        rates[name] = fp / (len(series) * days) if series and days else 0.0
    if GAP_DETECTOR in detectors and gap_faults:
        t0 = time.perf_counter()
        alarms = run_gap_detector(rec)
        timings[GAP_DETECTOR] = time.perf_counter() - t0
        sc = score(gap_faults, alarms, grace_ms, merge_gap_ms, since)
        results += [{"detector": GAP_DETECTOR, "threshold": None, **s.as_dict()} for s in sc.values()]
        rates[GAP_DETECTOR] = sc["all"].false_episodes / (len(rec.home_ids) * days) if days else 0.0
    order = {k: i for i, k in enumerate(KINDS + ("all",))}
    results.sort(key=lambda r: (order.get(r["kind"], 99), r["detector"] != GAP_DETECTOR, r["detector"]))
    return {
        "homes": len(rec.home_ids),
        "ticks": len(rec.ts),
        "step_ms": rec.step_ms,
        "readings": rec.readings,
        "series": len(series),
        "grace_ms": grace_ms,
        "scored_from_ms": since,
        "merge_gap_ms": merge_gap_ms,
        "results": results,
        "false_episodes_per_series_day": rates,
        "detector_seconds": timings,
        "faults": [f.as_dict() for f in rec.faults],
    }


# ====================================================================== output
def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def format_table(report: dict) -> str:
    """The readable summary: one row per fault kind and detector; ``*`` = best F1."""
    rows = report["results"]
    best: dict[str, float] = {}
    for r in rows:
        best[r["kind"]] = max(best.get(r["kind"], 0.0), r["f1"])
    head = (
        f"{'fault kind':<24}{'detector':<10}{'faults':>7}{'found':>6}{'early':>6}{'false':>6}"
        f"{'precision':>10}{'recall':>7}{'F1':>7}{'delay p50 s':>12}{'max s':>8}"
    )
    lines = [head, "-" * len(head)]
    prev = None
    for r in rows:
        if prev is not None and r["kind"] != prev:
            lines.append("")
        prev = r["kind"]
        mark = " *" if r["f1"] > 0 and r["f1"] == best[r["kind"]] else ""
        lines.append(
            f"{r['kind']:<24}{r['detector']:<10}{r['faults']:>7}{r['detected']:>6}{r['detected_before_end']:>6}"
            f"{r['false_episodes']:>6}{_fmt(r['precision']):>10}{_fmt(r['recall']):>7}{r['f1']:>7.3f}"
            f"{_fmt(r['median_delay_s'], '.0f'):>12}{_fmt(r['max_delay_s'], '.0f'):>8}{mark}"
        )
    lines.append("")
    lines.append(
        "found = alarm in [start, end + grace]; early = of those, before the fault ended (a slow fault "
        "'found' only after its end was noticed by its repair); false = false-positive episodes on the "
        "series carrying that kind of fault"
    )
    lines.append(
        "false episodes per series-day (all scored series): "
        + ", ".join(f"{k} {v:.2f}" for k, v in report["false_episodes_per_series_day"].items())
    )
    return "\n".join(lines)
