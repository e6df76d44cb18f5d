"""What the assistant can do, as plain methods returning JSON-able values: the MCP
server (``assistant.mcp_server``) exposes each as a tool, ``ecoretrofit explain`` calls
them directly. Thin adapters: SQL to the warehouse, HTTP to the twin service; the
reasoning is in ``assistant.analysis``.

Read-only SQL is enforced by ClickHouse: every query of this module carries
``readonly=2`` (reads only; settings may still be set, so the caps below go with each
query), never by looking at the SQL text. Caps: ``max_rows`` rows, ``max_seconds``
(``max_execution_time``), ``max_bytes`` of JSON result; a cut result says so in
``note``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from assistant.analysis import HOUR_MS, analyse, baseline
from assistant.evidence import evidence, hourly_series, intensity, register_of
from sinks.named_queries import QUERIES_DIR, describe_queries, load_named
from twin.model import Climate, Observations

#: Read-only: reads only, but the per-query caps may still be set (readonly=1 forbids that).
READONLY = "2"
METRICS = ("indoor_temp_c", "outdoor_temp_c", "power_w", "voltage_v", "vibration_mm_s", "water_flow_lpm",
           "water_temp_c", "uv_intensity_mw_cm2", "pump_pressure_bar")


class ToolError(ValueError):
    """A request the tool refuses (unknown home, bad parameter): the caller's fault."""


@dataclass(frozen=True)
class Caps:
    max_rows: int = 1000
    max_seconds: float = 10.0
    max_bytes: int = 200_000


def _jsonable(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (np.floating, np.integer)):
        return _jsonable(v.item())
    if isinstance(v, (str, int, bool)) or v is None:
        return v
    return str(v)


class AssistantTools:
    """``warehouse``: a clickhouse-connect client; ``twin``: an httpx.Client whose base
    URL is the twin service and whose headers carry its read token."""

    def __init__(self, warehouse, twin, database: str = "eco", caps: Caps = Caps(), days: float = 7.0):
        self.warehouse, self.twin, self.database, self.caps, self.days = warehouse, twin, database, caps, days

    # ------------------------------------------------------------------ warehouse
    def _settings(self, rows: int) -> dict:
        return {"readonly": READONLY, "max_execution_time": self.caps.max_seconds, "max_result_rows": rows + 1,
                "result_overflow_mode": "break"}

    def _select(self, sql: str, params: dict | None = None, rows: int | None = None) -> tuple[list[str], list]:
        cap = rows or self.caps.max_rows
        r = self.warehouse.query(sql, parameters=params or {}, settings=self._settings(cap))
        return list(r.column_names), [list(row) for row in r.result_rows]

    def sql(self, query: str) -> dict:
        """Run one read-only query; at most ``max_rows`` rows and ``max_bytes`` of JSON."""
        t0 = time.monotonic()
        cols, rows = self._select(query)
        notes = []
        if len(rows) > self.caps.max_rows:
            rows = rows[: self.caps.max_rows]
            notes.append(f"cut at {self.caps.max_rows} rows (the row cap); there are more")
        rows = _jsonable(rows)
        size = len(json.dumps(rows))
        if size > self.caps.max_bytes:
            kept, total = [], 2
            for row in rows:
                n = len(json.dumps(row)) + 1
                if total + n > self.caps.max_bytes:
                    break
                kept.append(row)
                total += n
            notes.append(f"cut at {len(kept)} rows: the result exceeded {self.caps.max_bytes} bytes (the size cap)")
            rows = kept
        return {"columns": cols, "rows": rows, "row_count": len(rows), "truncated": bool(notes),
                "note": "; ".join(notes) or None, "seconds": round(time.monotonic() - t0, 3)}

    def list_tables(self) -> dict:
        cols, rows = self._select(
            "SELECT name, engine, comment, total_rows FROM system.tables WHERE database = {db:String} ORDER BY name",
            {"db": self.database})
        return {"database": self.database, "tables": [dict(zip(cols, _jsonable(r))) for r in rows]}

    def describe_table(self, table: str) -> dict:
        cols, rows = self._select(
            "SELECT name, type, comment, default_expression FROM system.columns "
            "WHERE database = {db:String} AND table = {t:String} ORDER BY position", {"db": self.database, "t": table})
        if not rows:
            raise ToolError(f"no table {table!r} in {self.database}")
        return {"table": table, "columns": [dict(zip(cols, _jsonable(r))) for r in rows]}

    def named_queries(self) -> dict:
        return {"queries": [{"name": p.stem, "about": load_named(p.stem).summary,
                             "parameters": [vars(q) for q in load_named(p.stem).params]}
                            for p in sorted(QUERIES_DIR.glob("*.sql"))],
                "text": describe_queries()}

    def run_named_query(self, name: str, params: dict | None = None) -> dict:
        try:
            q = load_named(name)
            values = q.bind({k: str(v) for k, v in (params or {}).items()})
        except Exception as e:  # CommandError: unknown query or parameter
            raise ToolError(str(e)) from None
        sql = q.path.read_text().replace("{database}", self.database).strip().rstrip(";")
        cols, rows = self._select(sql, values)
        cut = len(rows) > self.caps.max_rows
        return {"query": name, "params": values, "columns": cols, "rows": _jsonable(rows[: self.caps.max_rows]),
                "truncated": cut, "note": f"cut at {self.caps.max_rows} rows" if cut else None}

    # ------------------------------------------------------------------ twin
    def _twin(self, method: str, path: str, **kw) -> Any:
        r = self.twin.request(method, path, **kw)
        if r.status_code == 404:
            raise ToolError(r.json().get("detail", f"not found: {path}"))
        if r.status_code == 422:
            raise ToolError(f"invalid request: {r.text[:500]}")
        r.raise_for_status()
        return r.json()

    def home_profile(self, home_id: str) -> dict:
        return self._twin("GET", f"/twins/{home_id}")

    def anomalies_and_alerts(self, home_id: str) -> dict:
        return {"anomalies": self._twin("GET", f"/twins/{home_id}/anomalies"),
                "alerts": self._twin("GET", f"/twins/{home_id}/alerts")}

    def maintenance(self, home_id: str) -> dict:
        return {"work_orders": self._twin("GET", f"/twins/{home_id}/work-orders"),
                "predictions": self._twin("GET", f"/twins/{home_id}/predictions")}

    def what_if(self, home_id: str, scenario: dict) -> dict:
        return self._twin("POST", f"/twins/{home_id}/what-if", json=scenario)

    def retrofit_savings(self, home_id: str, horizon_days: int = 30) -> dict:
        """What-if savings of the usual candidate retrofits, each run by the twin."""
        prof = self.home_profile(home_id)
        b = prof["attributes"]["building"]
        candidates = {
            "insulation_upgrade": {"u_value_w_m2k": round(max(0.1, float(b["u_value_w_m2k"]) * 0.5), 3)},
            "new_heat_pump": {"cop": 4.0},
            "thermostat_20c_with_setback": {"setpoint_c": 20.0, "night_setback_c": 2.0},
            "pv_4kwp": {"pv_kwp": 4.0},
        }
        out = {}
        for name, s in candidates.items():
            out[name] = {"scenario": s, "result": self.what_if(home_id, {**s, "horizon_days": horizon_days})}
        return {"home_id": home_id, "horizon_days": horizon_days, "candidates": out}

    # ------------------------------------------------------------------ evidence
    def _home_rows(self, home_id: str, region: str, until_ms: int | None) -> dict:
        until = until_ms if until_ms is not None else self._latest_ms(home_id)
        since = until - int(self.days * 24 * HOUR_MS)
        cols = ", ".join(f"avg({m}) AS {m}" for m in METRICS)
        sql = (f"SELECT intDiv(toUnixTimestamp64Milli(ts), 300000) * 300000 AS t, {cols} "
               f"FROM {self.database}.telemetry WHERE region = {{region:String}} AND home_id = {{home:String}} "
               f"AND ts >= fromUnixTimestamp64Milli({{since:Int64}}) AND ts < fromUnixTimestamp64Milli({{until:Int64}}) "
               f"GROUP BY t ORDER BY t")
        names, rows = self._select(sql, {"region": region, "home": home_id, "since": since, "until": until},
                                   rows=int(self.days * 24 * 12) + 10)
        a = np.array(rows, dtype=float).reshape(-1, len(names))
        return {n: a[:, i] for i, n in enumerate(names)}

    def _latest_ms(self, home_id: str) -> int:
        _, rows = self._select(f"SELECT toUnixTimestamp64Milli(max(ts)) FROM {self.database}.telemetry "
                               f"WHERE home_id = {{home:String}}", {"home": home_id})
        if not rows or not rows[0][0]:
            raise ToolError(f"no telemetry for home {home_id!r}")
        return int(rows[0][0]) + 1

    def _peer_intensity(self, region: str, until_ms: int) -> list[float]:
        """kWh per degree-day per 100 m2 of every home in the region, same window."""
        since = until_ms - int(self.days * 24 * HOUR_MS)
        sql = (f"SELECT home_id, sum(p) / 1000 AS kwh, sum(greatest(0, {15.5} - o)) / 24 AS hdd FROM ("
               f"SELECT home_id, toStartOfHour(ts) AS h, avg(power_w) AS p, avg(outdoor_temp_c) AS o "
               f"FROM {self.database}.telemetry WHERE region = {{region:String}} "
               f"AND ts >= fromUnixTimestamp64Milli({{since:Int64}}) AND ts < fromUnixTimestamp64Milli({{until:Int64}}) "
               f"GROUP BY home_id, h) GROUP BY home_id")
        _, rows = self._select(sql, {"region": region, "since": since, "until": until_ms}, rows=100_000)
        areas = {}
        out = []
        for home, kwh, hdd in rows:
            if hdd <= 0:
                continue
            if home not in areas:
                try:
                    areas[home] = float(self.home_profile(home)["attributes"]["building"]["floor_area_m2"])
                except ToolError:
                    continue
            out.append(kwh / hdd / (areas[home] / 100.0))
        return out

    def evidence(self, home_id: str, until_ms: int | None = None):
        prof = self.home_profile(home_id)
        attrs, bom = prof["attributes"], prof.get("bill_of_materials", [])
        region = prof["region"]
        until = until_ms if until_ms is not None else self._latest_ms(home_id)
        m = self._home_rows(home_id, region, until)
        if len(m["t"]) < 24 * 12:
            raise ToolError(f"home {home_id}: need at least a day of telemetry, have {len(m['t']) / 12:.1f} h")
        # the climate only drives what-if horizons, not the calibration (observed weather)
        climate = Climate(10.0, 9.0, 4.5)
        reg, building = register_of(attrs, bom, climate)
        flow = m["water_flow_lpm"] if reg.water_system else None
        ts = m["t"].astype(np.int64)
        series = hourly_series(ts, m["indoor_temp_c"], m["outdoor_temp_c"], m["power_w"], m["vibration_mm_s"], flow)
        obs = Observations(ts + 150_000, m["indoor_temp_c"], m["outdoor_temp_c"], m["power_w"], flow)
        return evidence(home_id, region, reg, building, series, obs, self._peer_intensity(region, until))

    def energy_baseline(self, home_id: str) -> dict:
        ev = self.evidence(home_id)
        return {"home_id": home_id, "region": ev.region, **baseline(ev.hourly, ev.register, ev.peer_intensity),
                "own_intensity": round(intensity(ev.hourly, ev.register), 3)}

    def decompose(self, home_id: str, metric: str = "power_w", period_hours: int = 24) -> dict:
        """Trend, daily pattern and residual of a home's hourly series
        (ClickHouse's seriesDecomposeSTL), and the weekly pattern from the hourly roll-up."""
        if metric not in METRICS:
            raise ToolError(f"metric must be one of {', '.join(METRICS)}")
        until = self._latest_ms(home_id)
        since = until - int(self.days * 24 * HOUR_MS)
        series_sql = (f"SELECT groupArray(h), groupArray(v) FROM ("
                      f"SELECT toStartOfHour(ts) AS h, avg({metric}) AS v FROM {self.database}.telemetry "
                      f"WHERE home_id = {{home:String}} AND ts >= fromUnixTimestamp64Milli({{since:Int64}}) "
                      f"AND ts < fromUnixTimestamp64Milli({{until:Int64}}) GROUP BY h ORDER BY h)")
        _, rows = self._select(series_sql, {"home": home_id, "since": since, "until": until})
        hours, values = rows[0]
        if len(values) < 2 * int(period_hours):
            raise ToolError(f"decompose needs at least two periods ({2 * int(period_hours)} hours) of {metric}; "
                            f"home {home_id} has {len(values)} hours in the window")
        sql = "SELECT seriesDecomposeSTL({v:Array(Float64)}, {p:UInt32})"
        _, rows = self._select(sql, {"v": [float(x) if x == x else 0.0 for x in values], "p": int(period_hours)})
        parts = rows[0][0]
        seasonal, trend, resid = (np.asarray(p, dtype=float) for p in parts[:3])
        hod = np.array([h.hour for h in hours]) if hours and hasattr(hours[0], "hour") else np.arange(len(seasonal)) % 24
        daily = [round(float(seasonal[hod == k].mean()), 3) if (hod == k).any() else None for k in range(24)]
        _, wk = self._select(
            f"SELECT toDayOfWeek(hour) AS dow, avg(energy_kwh) FROM {self.database}.energy_hourly_by_home_v "
            f"WHERE home_id = {{home:String}} GROUP BY dow ORDER BY dow", {"home": home_id})
        return {"home_id": home_id, "metric": metric, "hours": len(seasonal),
                "trend_start": round(float(trend[0]), 3) if len(trend) else None,
                "trend_end": round(float(trend[-1]), 3) if len(trend) else None,
                "daily_pattern_by_hour": daily,
                "residual_sd": round(float(resid.std()), 3) if len(resid) else None,
                "weekly_pattern_kwh_per_hour_by_weekday": {int(d): _jsonable(v) for d, v in wk},
                "check": series_sql + f" -- then seriesDecomposeSTL(values, {int(period_hours)})"}

    def explain(self, home_id: str) -> dict:
        """The deterministic analysis: ranked findings with numbers and checks."""
        return _jsonable(analyse(self.evidence(home_id)).as_dict())


def from_settings(settings, twin_url: str | None = None) -> AssistantTools:
    """Tools over the configured warehouse and the twin service (its read token from the
    data directory, as ``ecoretrofit twin`` writes it)."""
    import httpx

    from sinks.warehouse import connect
    from twin.auth import Tokens

    url = twin_url or f"http://{settings.bind_host}:{settings.port('twin')}"
    token = Tokens.for_data_dir(settings.data_dir).read
    twin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60.0)
    return AssistantTools(connect(settings), twin, database=settings.clickhouse_database)
