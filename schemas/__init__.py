"""Avro contracts of every topic, as .avsc files beside this module.

Other teams depend on these: evolve them only compatibly (new fields optional with a
default; never remove or retype a field).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

# topic value schema name -> file
TELEMETRY_READING = "telemetry_reading"
ANOMALY_EVENT = "anomaly_event"
ALERT_EVENT = "alert_event"
WORK_ORDER = "work_order"
MAINTENANCE_PREDICTION = "maintenance_prediction"


@lru_cache(maxsize=None)
def schema_text(name: str) -> str:
    """The schema's JSON text, exactly as shipped (what gets registered)."""
    return resources.files(__name__).joinpath(f"{name}.avsc").read_text()


# TelemetryReading fields that detectors score, in schema order. energy_kwh is a
# cumulative meter (its derivative, power_w, is scored); the last four are the
# optional water-system fields.
SCORED_METRICS = (
    "indoor_temp_c",
    "power_w",
    "voltage_v",
    "vibration_mm_s",
    "water_flow_lpm",
    "water_temp_c",
    "uv_intensity_mw_cm2",
    "pump_pressure_bar",
)
WATER_METRICS = SCORED_METRICS[4:]


def schema_dict(name: str) -> dict:
    return json.loads(schema_text(name))


def field_names(name: str) -> list[str]:
    return [f["name"] for f in schema_dict(name)["fields"]]


def available() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".avsc"))
