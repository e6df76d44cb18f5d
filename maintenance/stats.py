"""Reliability statistics from an asset register and its work orders: lives of units
(right-censored when a unit was replaced before failing or is still running), MTBF
and MTTR per group, Kaplan-Meier and Weibull fits (lifelines), and the next expected
failure of every asset. Pure: records in, numbers out.

A unit's life starts when it was installed (the component's commissioning, or the close
of the order that replaced its predecessor) and ends at its failure (an event) or at a
replacement before failure or at ``now`` (censored).

>>> register = [{"asset_id": "A", "asset_type": "pump", "model": "P1", "region": "north",
...              "commissioned_ms": 0, "install_ms": 30 * DAY_MS}]
>>> orders = [{"asset_id": "A", "status": "closed", "replaced": True, "failure_ms": 20 * DAY_MS,
...            "closed_ms": 30 * DAY_MS, "opened_ms": 21 * DAY_MS}]
>>> [(round(life.days), life.failed) for life in unit_lives(register, orders, now_ms=40 * DAY_MS)]
[(20, True), (10, False)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
#: Fewer failures than this in a group: no Weibull fit (its parameters would be noise).
MIN_FAILURES = 5


@dataclass(frozen=True)
class Life:
    asset_id: str
    asset_type: str
    model: str
    region: str
    start_ms: int
    days: float
    failed: bool


def unit_lives(register: Iterable[dict], orders: Iterable[dict], now_ms: int) -> list[Life]:
    """Every unit's life, from the register and the latest version of each order."""
    latest: dict[str, dict] = {}
    for o in orders:
        key = o.get("order_id") or id(o)
        if key not in latest or o.get("version", 0) >= latest[key].get("version", 0):
            latest[key] = o
    by_asset: dict[str, list[dict]] = {}
    for o in latest.values():
        by_asset.setdefault(o["asset_id"], []).append(o)
    lives = []
    for a in register:
        start = int(a["commissioned_ms"])
        for o in sorted(by_asset.get(a["asset_id"], ()), key=lambda o: o.get("closed_ms") or o["opened_ms"]):
            def life(end, failed):
                return Life(a["asset_id"], a["asset_type"], a["model"], a["region"], start,
                            max(end - start, 1) / DAY_MS, failed)

            if o["status"] == "closed" and o.get("replaced"):
                fail = o.get("failure_ms")
                lives.append(life(fail if fail is not None else o["closed_ms"], fail is not None))
                start = int(o["closed_ms"])
            elif o["status"] != "closed" and o.get("failure_ms") is not None:
                lives.append(life(o["failure_ms"], True))  # failed, waiting for a technician
                start = None
                break
        if start is not None and now_ms > start:
            lives.append(Life(a["asset_id"], a["asset_type"], a["model"], a["region"], start,
                              (now_ms - start) / DAY_MS, False))
    return lives


@dataclass(frozen=True)
class GroupStats:
    group: tuple[str, ...]
    units: int
    failures: int
    weibull_shape: float | None
    weibull_scale_days: float | None
    mtbf_days: float | None  # the Weibull fit's mean life
    mtbf_ttt_days: float  # total time on test / failures (the classic, constant-hazard estimate)
    km_median_days: float | None  # Kaplan-Meier median life (None: more than half still running)
    km_restricted_mean_days: float | None  # KM mean life up to the longest observed life
    mttr_hours: float | None  # failure -> service restored, corrective orders

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def fit_group(lives: Sequence[Life], repairs_hours: Sequence[float] = (), group=("all",)) -> GroupStats:
    """Kaplan-Meier and Weibull (lifelines) over right-censored lives."""
    from lifelines import KaplanMeierFitter, WeibullFitter
    from lifelines.utils import restricted_mean_survival_time

    d = np.array([x.days for x in lives], dtype=float)
    e = np.array([x.failed for x in lives], dtype=bool)
    failures = int(e.sum())
    ttt = float(d.sum() / failures) if failures else math.inf
    shape = scale = mean = km_med = km_rmst = None
    if failures >= MIN_FAILURES:
        wf = WeibullFitter().fit(d, e)
        shape, scale = float(wf.rho_), float(wf.lambda_)
        mean = scale * math.gamma(1.0 + 1.0 / shape)
        km = KaplanMeierFitter().fit(d, e)
        med = float(km.median_survival_time_)
        km_med = med if math.isfinite(med) else None
        km_rmst = float(restricted_mean_survival_time(km, t=float(d.max())))
    mttr = float(np.mean(repairs_hours)) if len(repairs_hours) else None
    return GroupStats(tuple(group), len(lives), failures, shape, scale, mean, ttt, km_med, km_rmst, mttr)


def repair_hours(orders: Iterable[dict]) -> list[tuple[dict, float]]:
    """(order, hours from failure to service restored) of every closed order on a failure."""
    latest: dict[str, dict] = {}
    for o in orders:
        if o.get("version", 0) >= latest.get(o["order_id"], {}).get("version", 0):
            latest[o["order_id"]] = o
    return [(o, (o["closed_ms"] - o["failure_ms"]) / HOUR_MS) for o in latest.values()
            if o["status"] == "closed" and o.get("failure_ms") is not None]


GROUPINGS = {"type": ("asset_type",), "model": ("asset_type", "model"), "region": ("asset_type", "region")}


def reliability(register: Sequence[dict], orders: Sequence[dict], now_ms: int, by: str = "type") -> list[GroupStats]:
    """``fit_group`` per asset type (``by="type"``), type and model, or type and region."""
    keys = GROUPINGS[by]
    lives = unit_lives(register, orders, now_ms)
    groups: dict[tuple, list[Life]] = {}
    for x in lives:
        groups.setdefault(tuple(getattr(x, k) for k in keys), []).append(x)
    where = {a["asset_id"]: a for a in register}
    rep: dict[tuple, list[float]] = {}
    for o, h in repair_hours(orders):
        a = where.get(o["asset_id"])
        if a is not None:
            rep.setdefault(tuple(a[k] for k in keys), []).append(h)
    return [fit_group(v, rep.get(k, ()), k) for k, v in sorted(groups.items())]


def weibull_residual_days(age_days: float, shape: float, scale: float) -> float:
    """Expected remaining life of a unit of age ``age_days`` that has not failed:
    E[T - a | T > a] for T ~ Weibull(scale, shape).

    >>> round(weibull_residual_days(0.0, 1.0, 10.0), 6)   # exponential: memoryless
    10.0
    >>> round(weibull_residual_days(50.0, 1.0, 10.0), 6)
    10.0
    >>> weibull_residual_days(30.0, 3.0, 10.0) < weibull_residual_days(0.0, 3.0, 10.0)  # wear-out
    True
    """
    from scipy.special import gamma, gammaincc

    x = (age_days / scale) ** shape
    if x > 700:  # far past the scale: the tail's asymptotic residual
        return scale / shape * (age_days / scale) ** (1.0 - shape)
    tail = scale / shape * gamma(1.0 / shape) * gammaincc(1.0 / shape, x)  # integral of S from a to inf
    return float(tail / math.exp(-x))


def next_failures(register: Sequence[dict], orders: Sequence[dict], now_ms: int,
                  fits: Sequence[GroupStats], by: str = "model") -> list[dict]:
    """Per asset, the expected time of its next failure from its group's Weibull fit and
    its current unit's age (soonest first). Assets of groups without a fit are left out;
    a failed asset waiting for repair has ``next_failure_ms == failed_ms``."""
    keys = GROUPINGS[by]
    fit = {f.group: f for f in fits if f.weibull_shape is not None}
    lives = unit_lives(register, orders, now_ms)
    current: dict[str, Life] = {}
    for x in lives:
        if x.asset_id not in current or x.start_ms >= current[x.asset_id].start_ms:
            current[x.asset_id] = x
    out = []
    for a in register:
        f = fit.get(tuple(a[k] for k in keys))
        x = current.get(a["asset_id"])
        if f is None or x is None:
            continue
        if x.failed:
            when = x.start_ms + int(x.days * DAY_MS)
            out.append({"asset_id": a["asset_id"], "asset_type": a["asset_type"], "model": a["model"],
                        "age_days": x.days, "expected_remaining_days": 0.0, "next_failure_ms": when})
            continue
        rem = weibull_residual_days(x.days, f.weibull_shape, f.weibull_scale_days)
        out.append({"asset_id": a["asset_id"], "asset_type": a["asset_type"], "model": a["model"],
                    "age_days": x.days, "expected_remaining_days": rem,
                    "next_failure_ms": now_ms + int(rem * DAY_MS)})
    out.sort(key=lambda r: r["next_failure_ms"])
    return out
