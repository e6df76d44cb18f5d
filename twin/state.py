"""The twins of a city: attributes (versioned, updated by JSON merge patch) and live
state kept from the topics. Pure: no I/O; the service feeds it and serves it.

Live state is by **event time**: a metric keeps the value of the reading with the
newest ``ts``, so a late reading never overwrites a newer one. A home is ``silent``
when its newest reading is older than ``silent_after_ms``. Work orders keep their
newest ``version``; alerts their latest state (``firing`` until ``resolved``).

>>> store = TwinStore({"H1": {"region": "north", "address": "1 Oak Lane", "location": {"lat": 52.0, "lon": 5.0},
...     "building": {"year_built": 1990, "type": "terraced", "floor_area_m2": 90.0, "insulation": "standard",
...                  "u_value_w_m2k": 0.6, "energy_rating": "C", "water_system": False}, "compliance": []}})
>>> t = store.get("H1")
>>> t.apply_reading({"ts": 2000, "power_w": 500.0, "seq": 2}); t.apply_reading({"ts": 1000, "power_w": 9.0, "seq": 1})
True
False
>>> t.metrics["power_w"]
{'ts': 2000, 'value': 500.0}
>>> etag = t.etag
>>> store.patch("H1", {"building": {"u_value_w_m2k": 0.3}}, if_match=etag).attributes["building"]["u_value_w_m2k"]
0.3
>>> store.patch("H1", {"address": "2 Oak Lane"}, if_match=etag)
Traceback (most recent call last):
...
twin.state.PreconditionFailed: If-Match "H1-1" does not match the current ETag "H1-2"
"""

from __future__ import annotations

import copy
import threading
from collections import deque
from typing import Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from twin.attributes import BUILDING_TYPES, COMPLIANCE_ITEMS, compliance_status

METRICS = ("indoor_temp_c", "outdoor_temp_c", "power_w", "energy_kwh", "voltage_v", "vibration_mm_s",
           "water_flow_lpm", "water_temp_c", "uv_intensity_mw_cm2", "pump_pressure_bar")
SILENT_AFTER_MS = 60_000
RECENT_ANOMALIES = 200


class PatchError(ValueError):
    """An invalid patch; ``field`` is the dotted path of the first bad field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class PreconditionFailed(Exception):
    pass


class PreconditionRequired(Exception):
    pass


# ------------------------------------------------------------------ attribute schema
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Location(_Strict):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class BuildingAttrs(_Strict):
    year_built: int = Field(ge=1600, le=2100)
    type: Literal[BUILDING_TYPES]  # type: ignore[valid-type]
    floor_area_m2: float = Field(gt=5, le=5000)
    insulation: Literal["retrofitted", "standard", "poor"]
    u_value_w_m2k: float = Field(ge=0.05, le=5.0)
    energy_rating: Literal["A", "B", "C", "D", "E", "F", "G"]
    water_system: bool


class ComplianceItem(_Strict):
    item: Literal[tuple(COMPLIANCE_ITEMS)]  # type: ignore[valid-type]
    interval_days: int = Field(ge=1, le=36500)
    last_done_ms: int = Field(ge=0)
    due_ms: int = Field(ge=0)


class Attributes(_Strict):
    region: str
    address: str = Field(min_length=1, max_length=200)
    location: Location
    building: BuildingAttrs
    compliance: list[ComplianceItem]


READ_ONLY = ("region",)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def validate_attributes(doc: Any) -> dict:
    try:
        return Attributes.model_validate(doc).model_dump()
    except ValidationError as e:
        err = e.errors()[0]
        path = ".".join(str(p) for p in err["loc"]) or "(document)"
        raise PatchError(path, err["msg"]) from None


# ------------------------------------------------------------------ one twin
class Twin:
    def __init__(self, home_id: str, attributes: dict, bom: list[dict] | None = None):
        self.home_id = home_id
        self.attributes = validate_attributes(attributes)
        self.version = 1
        self.bom = list(bom or [])
        self.metrics: dict[str, dict] = {}
        self.last_ts: int | None = None  # newest event time seen
        self.late_readings = 0
        self.anomalies: deque[dict] = deque(maxlen=RECENT_ANOMALIES)
        self.alerts: dict[str, dict] = {}  # alert_id -> latest event
        self.work_orders: dict[str, dict] = {}  # order_id -> newest version
        self.predictions: dict[str, dict] = {}  # asset -> latest prediction

    @property
    def region(self) -> str:
        return self.attributes["region"]

    @property
    def etag(self) -> str:
        return f'"{self.home_id}-{self.version}"'

    # ---- live state
    def apply_reading(self, r: dict) -> bool:
        """Take a TelemetryReading; False if it was older than what we hold (late)."""
        ts = int(r["ts"])
        newer = self.last_ts is None or ts >= self.last_ts
        if newer:
            self.last_ts = ts
        else:
            self.late_readings += 1
        for m in METRICS:
            v = r.get(m)
            if v is None:
                continue
            cur = self.metrics.get(m)
            if cur is None or ts >= cur["ts"]:
                self.metrics[m] = {"ts": ts, "value": float(v)}
        return newer

    def apply_anomaly(self, a: dict) -> None:
        self.anomalies.append(dict(a))

    def apply_alert(self, a: dict) -> None:
        cur = self.alerts.get(a["alert_id"])
        if cur is None or cur["state"] != "resolved":  # resolved is final
            self.alerts[a["alert_id"]] = dict(a)

    def apply_work_order(self, o: dict) -> None:
        cur = self.work_orders.get(o["order_id"])
        if cur is None or int(o["version"]) >= int(cur["version"]):
            self.work_orders[o["order_id"]] = dict(o)

    def apply_prediction(self, p: dict) -> None:
        """The latest prediction per asset, by event time."""
        asset = p.get("asset_id") or p["asset"]
        cur = self.predictions.get(asset)
        if cur is None or int(p.get("ts", 0)) >= int(cur.get("ts", 0)):
            self.predictions[asset] = dict(p)

    def open_alerts(self) -> list[dict]:
        return [a for a in self.alerts.values() if a["state"] == "firing"]

    def open_work_orders(self) -> list[dict]:
        return [o for o in self.work_orders.values() if o["status"] == "open"]

    def status(self, now_ms: int) -> str:
        if self.last_ts is None or now_ms - self.last_ts > SILENT_AFTER_MS:
            return "silent"
        return "alert" if self.open_alerts() else "online"

    def compliance_overdue(self, now_ms: int) -> bool:
        return any(c["due_ms"] < now_ms for c in self.attributes["compliance"])

    def compliance(self, now_ms: int) -> list[dict]:
        return [dict(c, status=compliance_status(c, now_ms)) for c in self.attributes["compliance"]]

    def summary(self, now_ms: int) -> dict:
        comp = self.compliance(now_ms)
        return {
            "home_id": self.home_id, "region": self.region, "status": self.status(now_ms),
            "address": self.attributes["address"], "location": self.attributes["location"],
            "energy_rating": self.attributes["building"]["energy_rating"], "last_ts": self.last_ts,
            "open_alerts": len(self.open_alerts()), "open_work_orders": len(self.open_work_orders()),
            "compliance_overdue": sum(c["status"] == "overdue" for c in comp),
        }

    def document(self, now_ms: int) -> dict:
        return {
            **self.summary(now_ms), "version": self.version, "attributes": self.attributes,
            "compliance": self.compliance(now_ms), "bill_of_materials": self.bom, "metrics": self.metrics,
            "late_readings": self.late_readings, "alerts": self.open_alerts(),
            "recent_anomalies": list(self.anomalies)[-20:], "work_orders": self.open_work_orders(),
            "predictions": list(self.predictions.values()),
        }


# ------------------------------------------------------------------ the city
class TwinStore:
    """Every twin, with search and a lock that makes check-and-patch atomic."""

    def __init__(self, attributes: dict[str, dict], boms: dict[str, list[dict]] | None = None):
        boms = boms or {}
        self.twins: dict[str, Twin] = {h: Twin(h, a, boms.get(h)) for h, a in attributes.items()}
        self._lock = threading.Lock()
        self.readings = 0

    def get(self, home_id: str) -> Twin | None:
        return self.twins.get(home_id)

    def patch(self, home_id: str, patch: Any, if_match: str | None) -> Twin:
        if not isinstance(patch, dict):
            raise PatchError("(document)", "a merge patch must be a JSON object")
        for k in READ_ONLY:
            if k in patch:
                raise PatchError(k, "is read-only")
        with self._lock:
            twin = self.twins[home_id]
            if if_match is None:
                raise PreconditionRequired("If-Match is required: GET the twin and send its ETag")
            if if_match.strip() not in (twin.etag, "*"):
                raise PreconditionFailed(f"If-Match {if_match.strip()} does not match the current ETag {twin.etag}")
            twin.attributes = validate_attributes(merge_patch(twin.attributes, patch))
            twin.version += 1
            return twin

    # ---- feeding
    def apply(self, kind: str, record: dict) -> bool:
        """Route one record from a topic; False for an unknown home (counted by caller)."""
        twin = self.twins.get(record.get("home_id") or str(record.get("asset_id", "")).split("-")[0])
        if twin is None:
            return False
        if kind == "telemetry":
            self.readings += 1
            twin.apply_reading(record)
        elif kind == "anomalies":
            twin.apply_anomaly(record)
        elif kind == "alerts":
            twin.apply_alert(record)
        elif kind == "work_orders":
            twin.apply_work_order(record)
        elif kind == "predictions":
            twin.apply_prediction(record)
        else:
            raise ValueError(f"unknown record kind {kind!r}")
        return True

    # ---- reading
    def search(self, now_ms: int, region: str | None = None, status: str | None = None,
               in_alert: bool | None = None, compliance_overdue: bool | None = None, q: str | None = None,
               offset: int = 0, limit: int = 50) -> tuple[int, list[dict]]:
        # cheap predicates on every twin; the summary only for the page returned
        hits = []
        needle = q.lower() if q else None
        for twin in self._candidates(region):
            if status is not None and twin.status(now_ms) != status:
                continue
            if in_alert is not None and bool(twin.open_alerts()) != in_alert:
                continue
            if compliance_overdue is not None and twin.compliance_overdue(now_ms) != compliance_overdue:
                continue
            if needle and needle not in (twin.home_id + " " + twin.attributes["address"]).lower():
                continue
            hits.append(twin)
        return len(hits), [t.summary(now_ms) for t in hits[offset:offset + limit]]

    def _candidates(self, region: str | None) -> Iterable[Twin]:
        if region is None:
            return self.twins.values()
        return (t for t in self.twins.values() if t.region == region)

    def city(self, now_ms: int, window_ms: int = 300_000) -> dict:
        regions: dict[str, dict] = {}
        homes = []
        open_orders: list[dict] = []
        for t in self.twins.values():
            s = t.status(now_ms)
            r = regions.setdefault(t.region, {"homes": 0, "online": 0, "silent": 0, "in_alert": 0,
                                              "anomalies_recent": 0, "power_kw": 0.0, "open_work_orders": 0})
            r["homes"] += 1
            r["silent" if s == "silent" else "online"] += 1
            r["in_alert"] += s == "alert"
            r["anomalies_recent"] += sum(1 for a in t.anomalies if now_ms - int(a["ts"]) <= window_ms)
            orders = t.open_work_orders()
            r["open_work_orders"] += len(orders)
            open_orders += orders
            if s != "silent" and "power_w" in t.metrics:
                r["power_kw"] += t.metrics["power_w"]["value"] / 1000.0
            loc = t.attributes["location"]
            homes.append([t.home_id, loc["lat"], loc["lon"], s, t.region])
        for r in regions.values():
            r["power_kw"] = round(r["power_kw"], 2)
        total = {k: sum(r[k] for r in regions.values()) for k in ("homes", "online", "silent", "in_alert",
                                                                  "anomalies_recent", "open_work_orders")}
        open_orders.sort(key=lambda o: o["opened_ms"], reverse=True)
        latest = [{k: o[k] for k in ("order_id", "home_id", "region", "asset_type", "kind", "opened_ms")}
                  for o in open_orders[:8]]
        return {"now_ms": now_ms, "readings_total": self.readings, "regions": regions, "total": total,
                "homes": homes, "latest_open_orders": latest}
