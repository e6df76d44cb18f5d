"""Every component of every home over time: lives, wear, failures, work orders and the
technicians who act on them. Pure and deterministic, no I/O.

``Fleet`` is an event-driven model of a city's components (``maintenance.assets``):

- each unit of a component lives a Weibull-distributed time drawn by hashing
  ``(seed, home, type, life number)``, so the same unit has the same life whatever
  the policy: policies are compared on the same seed, unit for unit;
- its last ``degrade_days`` show in telemetry (``wear(ts)``: 0 healthy .. 1 failed,
  applied by ``producers.simulator.CitySimulator``); then it fails, a ground-truth
  ``Failure``;
- a failure is reported ``report_delay_ms`` later as a corrective work order (source
  ``manual``: the resident calls); fixed-interval preventive orders come from the
  schedule (source ``schedule``), and anyone may ``open_order`` (a predictor: source
  ``model:<name>@<version>``). One order is open per asset at a time: opening is
  idempotent;
- a technician arrives ``technician_delay_ms`` after an order opens and closes it
  ``repair_hours`` later, replacing the worn part: the component starts a new life, its
  wear reset. An inspection replaces only a part that shows wear.

At construction the fleet runs from each home's commissioning (1 .. ``history_years``
years before ``start_ms``) to ``start_ms`` with the history policy: years of
back-dated work orders. ``advance(ts)`` moves on; ``drain_orders()`` hands out every
new version of every order since the last call (the latest version of an order is its
state).

>>> fleet = Fleet(seed=1, home_ids=["H000000", "H000001"], regions=["north", "south"],
...               has_water=[True, False], start_ms=1_700_000_000_000)
>>> sorted(a.asset_type for a in fleet.assets if a.home_id == "H000001")
['envelope', 'heat_pump', 'inverter', 'meter']
>>> history = fleet.drain_orders()
>>> len(history) > 0 and all(o["opened_ms"] < 1_700_000_000_000 for o in history)
True
>>> o = fleet.open_order("H000000-CP", 1_700_000_000_000, "predictive", "model:demo@1")
>>> fleet.open_order("H000000-CP", 1_700_000_100_000, "predictive", "model:demo@1") == o
True
>>> fleet.advance(1_700_000_000_000 + 2 * 86_400_000)
>>> [(r["kind"], r["status"]) for r in fleet.drain_orders() if r["order_id"] == o]
[('predictive', 'open'), ('predictive', 'closed')]
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ecoretrofit.hashing import uniforms
from maintenance.assets import (
    ASSET_TYPES,
    DAY_MS,
    HOUR_MS,
    TYPE_NAMES,
    YEAR_DAYS,
    Asset,
    asset_id,
    weibull_life_days,
)

from schemas.plausibility import WORK_ORDER_KINDS as ORDER_KINDS  # the contract declares them

#: Fixed-interval preventive replacement, days, per type: what the city's history used.
DEFAULT_PREVENTIVE_DAYS: dict[str, float] = {"water_filter": 120.0, "uv_lamp": 365.0}

# hash streams (per asset index = home index * 16 + type number)
_S_MODEL, _S_REPAIR, _S_MODE, _S_LIFE = 1, 2, 3, 1000
_S_COMMISSION = 500  # per home


@dataclass(frozen=True)
class MaintenanceConfig:
    """How the city maintains its components.

    ``preventive_days``: fixed replacement intervals from ``start_ms`` on (empty:
    run to failure); ``history_preventive_days`` before it."""

    technician_delay_ms: int = 24 * HOUR_MS
    report_delay_ms: int = 2 * HOUR_MS
    history_years: float = 8.0
    preventive_days: dict = field(default_factory=lambda: dict(DEFAULT_PREVENTIVE_DAYS))
    history_preventive_days: dict = field(default_factory=lambda: dict(DEFAULT_PREVENTIVE_DAYS))
    visit_cost: float = 120.0  # a technician's call-out, EUR
    downtime_cost_per_hour: float = 5.0  # a resident without the component, EUR

    def __post_init__(self):
        if self.technician_delay_ms < 0 or self.report_delay_ms < 0:
            raise ValueError("delays must be >= 0")
        if self.history_years < 1:
            raise ValueError("history_years must be >= 1")
        for name, days in {**self.preventive_days, **self.history_preventive_days}.items():
            if name not in ASSET_TYPES:
                raise ValueError(f"unknown asset type {name!r}")
            if days <= 0:
                raise ValueError(f"preventive interval of {name} must be > 0 days")


@dataclass(frozen=True)
class Failure:
    """Ground truth: a unit of a component failed at ``ts``, aged ``age_days``."""

    asset_id: str
    asset_type: str
    ts: int
    age_days: float
    life_number: int


@dataclass
class WorkOrder:
    order_id: str
    asset_id: str
    home_id: str
    region: str
    asset_type: str
    model: str
    kind: str
    source: str
    opened_ms: int
    status: str = "open"
    closed_ms: int | None = None
    failure_ms: int | None = None  # when the asset failed (corrective, or failed while waiting)
    failure_code: str | None = None
    cause_code: str | None = None
    resolution_code: str | None = None
    replaced: bool = False  # the technician replaced the worn part (a new life began)
    version: int = 1

    def as_record(self) -> dict:
        return {k: getattr(self, k) for k in _ORDER_FIELDS}


_ORDER_FIELDS = tuple(WorkOrder.__dataclass_fields__)

# event kinds, ordered so that at one instant a completion comes before a failure
_COMPLETE, _FAIL, _OPEN, _SCHEDULE = 0, 1, 2, 3


class _TypeState:
    """The components of one type, as arrays the per-tick wear computation uses."""

    def __init__(self, name: str, home_idx: np.ndarray, asset_rows: np.ndarray):
        self.name = name
        self.spec = ASSET_TYPES[name]
        self.home_idx = home_idx
        self.rows = asset_rows
        n = len(home_idx)
        self.install_ms = np.zeros(n, dtype=np.int64)
        self.fail_ms = np.zeros(n, dtype=np.int64)
        self.failed = np.zeros(n, dtype=bool)
        self.life = np.zeros(n, dtype=np.int64)  # life number of the current unit


class Fleet:
    def __init__(
        self,
        seed: int,
        home_ids: Sequence[str],
        regions: Sequence[str],
        has_water: Sequence[bool],
        start_ms: int,
        config: MaintenanceConfig | None = None,
        home_indices: Sequence[int] | None = None,
    ):
        self.seed = int(seed)
        self.config = config or MaintenanceConfig()
        self.start_ms = int(start_ms)
        home_ids = list(home_ids)
        n = len(home_ids)
        if not (len(regions) == len(has_water) == n):
            raise ValueError("home_ids, regions and has_water differ in length")
        # The hash index of a home: its index in the city (home ids are "H" + index).
        hidx = np.asarray(home_indices if home_indices is not None else
                          [int(h[1:]) for h in home_ids], dtype=np.int64)
        water = np.asarray(has_water, dtype=bool)
        years = 1.0 + (self.config.history_years - 1.0) * uniforms(self.seed, hidx, _S_COMMISSION)
        commissioned = self.start_ms - (years * YEAR_DAYS * DAY_MS).astype(np.int64)

        self.assets: list[Asset] = []
        self._asset_key: list[tuple[int, int]] = []  # row -> (type number, position in type)
        self._hash_idx: list[int] = []
        self.types: dict[str, _TypeState] = {}
        for t, name in enumerate(TYPE_NAMES):
            spec = ASSET_TYPES[name]
            pos = np.flatnonzero(water) if spec.water_only else np.arange(n)
            keys = hidx[pos] * 16 + t
            um = uniforms(self.seed, keys, _S_MODEL)
            rows = np.arange(len(self.assets), len(self.assets) + len(pos))
            st = _TypeState(name, pos, rows)
            self.types[name] = st
            for k, (p, u) in enumerate(zip(pos.tolist(), um.tolist())):
                model = spec.models[min(int(u * len(spec.models)), len(spec.models) - 1)][0]
                self.assets.append(Asset(asset_id(home_ids[p], name), home_ids[p], regions[p], name, model,
                                         int(commissioned[p]), int(commissioned[p]), spec.rated_life_days))
                self._asset_key.append((t, k))
                self._hash_idx.append(int(keys[k]))
        self.by_id: dict[str, int] = {a.asset_id: i for i, a in enumerate(self.assets)}
        self._scale = [dict(ASSET_TYPES[a.asset_type].models)[a.model] * ASSET_TYPES[a.asset_type].scale_days
                       for a in self.assets]

        self.failures: list[Failure] = []
        self.open_orders: dict[int, WorkOrder] = {}  # asset row -> its open order
        self._orders_seen: dict[int, int] = {}  # asset row -> orders opened so far
        self._log: list[dict] = []
        self.orders_log_total = 0
        self._events: list[tuple[int, int, int, int, tuple]] = []
        self._counter = 0
        self.now_ms = int(commissioned.min()) if n else self.start_ms
        for row, a in enumerate(self.assets):
            self._install(row, a.commissioned_ms)
        self.advance(self.start_ms)

    # ------------------------------------------------------------ queries
    def asset(self, aid: str) -> Asset:
        return self.assets[self.by_id[aid]]

    def register(self) -> list[dict]:
        """The asset register now: every component with its current unit's install time."""
        out = []
        for row, a in enumerate(self.assets):
            t, k = self._asset_key[row]
            out.append({**a.as_record(), "install_ms": int(self.types[TYPE_NAMES[t]].install_ms[k])})
        return out

    def true_mean_life_days(self, type_name: str, model: str | None = None) -> float:
        """The simulator's mean life of a type (over its models' mix, or one model)."""
        from maintenance.assets import weibull_mean

        spec = ASSET_TYPES[type_name]
        if model is not None:
            return weibull_mean(spec.scale_days * dict(spec.models)[model], spec.shape)
        means = [weibull_mean(self._scale[r], spec.shape) for r in self.types[type_name].rows.tolist()]
        return float(np.mean(means)) if means else float("nan")

    def current_unit(self, aid: str) -> tuple[int, int, bool]:
        """(install_ms, ground-truth failure time, failed) of an asset's current unit."""
        t, k = self._asset_key[self.by_id[aid]]
        st = self.types[TYPE_NAMES[t]]
        return int(st.install_ms[k]), int(st.fail_ms[k]), bool(st.failed[k])

    def wear(self, ts: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per type, the components showing wear at ``ts``: (home positions, wear in
        (0, 1], failed). Wear rises from 0 to 1 over the last ``degrade_days`` of a life."""
        out = {}
        for name, st in self.types.items():
            d = st.spec.degrade_days * DAY_MS
            sel = np.flatnonzero((st.fail_ms - ts < d) | st.failed) if d > 0 else np.flatnonzero(st.failed)
            if not len(sel):
                continue
            if d > 0:
                w = np.clip(1.0 - (st.fail_ms[sel] - ts) / d, 0.0, 1.0)
            else:
                w = np.ones(len(sel))
            failed = st.failed[sel]
            w[failed] = 1.0
            keep = w > 0
            if keep.any():
                out[name] = (st.home_idx[sel[keep]], w[keep], failed[keep])
        return out

    # ------------------------------------------------------------ actions
    def open_order(self, aid: str, ts: int, kind: str, source: str, order_id: str | None = None) -> str:
        """Open a work order on an asset at ``ts`` (not before the fleet's clock), or
        return the asset's open order: one open order per asset. ``order_id``: the id
        whoever asked for it gave it (a predictor's ``PM-...``); default ``WO-<asset>-<n>``."""
        if kind not in ORDER_KINDS:
            raise ValueError(f"unknown work order kind {kind!r}")
        row = self.by_id.get(aid)
        if row is None:
            raise KeyError(f"unknown asset {aid!r}")
        self.advance(ts)
        return self._open(row, max(int(ts), self.now_ms), kind, source, order_id=order_id).order_id

    def advance(self, ts: int) -> None:
        """Process every event up to and including ``ts``."""
        ts = int(ts)
        ev = self._events
        while ev and ev[0][0] <= ts:
            t, kind, _, row, payload = heapq.heappop(ev)
            self.now_ms = max(self.now_ms, t)
            if kind == _FAIL:
                self._on_fail(row, t, payload[0])
            elif kind == _COMPLETE:
                self._on_complete(row, t, payload[0])
            elif kind == _OPEN:
                self._open(row, t, *payload)
            elif kind == _SCHEDULE:
                self._on_schedule(row, t, payload[0])
        self.now_ms = max(self.now_ms, ts)

    def drain_orders(self) -> list[dict]:
        """Every work-order version recorded since the last call, in time order."""
        out, self._log = self._log, []
        return out

    # ------------------------------------------------------------ internals
    def _push(self, t: int, kind: int, row: int, payload: tuple) -> None:
        self._counter += 1
        heapq.heappush(self._events, (int(t), kind, self._counter, row, payload))

    def _u(self, row: int, stream: int) -> float:
        return float(uniforms(self.seed, np.array([self._hash_idx[row]]), stream)[0])

    def _install(self, row: int, t: int) -> None:
        ti, k = self._asset_key[row]
        st = self.types[TYPE_NAMES[ti]]
        life_no = int(st.life[k]) + (1 if st.install_ms[k] or st.fail_ms[k] else 0)
        st.life[k] = life_no
        days = weibull_life_days(self._u(row, _S_LIFE + life_no), self._scale[row], st.spec.shape)
        st.install_ms[k] = t
        st.fail_ms[k] = t + max(1, int(days * DAY_MS))
        st.failed[k] = False
        self._push(st.fail_ms[k], _FAIL, row, (life_no,))
        interval = self._interval(st.name, t)
        if interval:
            self._push(t + int(interval * DAY_MS), _SCHEDULE, row, (life_no,))

    def _interval(self, name: str, t: int) -> float | None:
        policy = self.config.history_preventive_days if t < self.start_ms else self.config.preventive_days
        return policy.get(name)

    def _on_fail(self, row: int, t: int, life_no: int) -> None:
        ti, k = self._asset_key[row]
        st = self.types[TYPE_NAMES[ti]]
        if st.life[k] != life_no or st.failed[k]:
            return  # that unit was replaced before it failed
        st.failed[k] = True
        self.failures.append(Failure(self.assets[row].asset_id, st.name, t,
                                     (t - int(st.install_ms[k])) / DAY_MS, life_no))
        order = self.open_orders.get(row)
        if order is not None:  # failed while its order waited for a technician
            self._set_failure(row, order, t)
            self._record(order)
        else:
            self._push(t + self.config.report_delay_ms, _OPEN, row, ("corrective", "manual", t))

    def _on_schedule(self, row: int, t: int, life_no: int) -> None:
        ti, k = self._asset_key[row]
        st = self.types[TYPE_NAMES[ti]]
        if st.life[k] != life_no or st.failed[k]:
            return
        interval = self._interval(st.name, t)
        if interval is None:
            return  # the policy changed: no more scheduled replacements
        if row in self.open_orders:
            self._push(t + int(interval * DAY_MS), _SCHEDULE, row, (life_no,))
            return
        self._open(row, t, "preventive", "schedule")

    def _set_failure(self, row: int, order: WorkOrder, t: int) -> None:
        spec = ASSET_TYPES[order.asset_type]
        ti, k = self._asset_key[row]
        mode = spec.failure_modes[min(int(self._u(row, _S_MODE + 7 * int(self.types[TYPE_NAMES[ti]].life[k]))
                                          * len(spec.failure_modes)), len(spec.failure_modes) - 1)]
        order.failure_ms, order.failure_code, order.cause_code = t, mode.failure_code, mode.cause_code
        order.resolution_code = mode.resolution_code
        order.version += 1

    def _open(self, row: int, t: int, kind: str, source: str, failure_ms: int | None = None,
              order_id: str | None = None) -> WorkOrder:
        order = self.open_orders.get(row)
        if order is not None:
            return order
        a = self.assets[row]
        n = self._orders_seen.get(row, 0) + 1
        self._orders_seen[row] = n
        order = WorkOrder(order_id or f"WO-{a.asset_id}-{n:04d}", a.asset_id, a.home_id, a.region, a.asset_type, a.model,
                          kind, source, int(t))
        ti, k = self._asset_key[row]
        if self.types[TYPE_NAMES[ti]].failed[k]:
            self._set_failure(row, order, int(failure_ms if failure_ms is not None else t))
            order.version = 1
        self.open_orders[row] = order
        self._record(order)
        self._push(t + self.config.technician_delay_ms, _COMPLETE, row, (order.order_id,))
        return order

    def _on_complete(self, row: int, t: int, order_id: str) -> None:
        order = self.open_orders.get(row)
        if order is None or order.order_id != order_id:
            return
        ti, k = self._asset_key[row]
        st = self.types[TYPE_NAMES[ti]]
        spec = st.spec
        hours = spec.repair_hours * (0.5 + self._u(row, _S_REPAIR + 7 * int(st.life[k])))
        closed = t + int(hours * HOUR_MS)
        worn = bool(st.failed[k]) or (spec.degrade_days > 0 and st.fail_ms[k] - t < spec.degrade_days * DAY_MS)
        replace = order.kind != "inspection" or worn
        order.status, order.closed_ms, order.replaced = "closed", closed, replace
        if order.resolution_code is None:
            order.resolution_code = ("REPLACED_WORN_PART" if worn else "REPLACED_PREVENTIVE") if replace \
                else "NO_FAULT_FOUND"
        order.version += 1
        del self.open_orders[row]
        self._record(order)
        if replace:
            self._install(row, closed)

    def _record(self, order: WorkOrder) -> None:
        self._log.append(order.as_record())
        self.orders_log_total += 1
