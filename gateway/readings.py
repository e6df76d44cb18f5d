"""What a device sends, checked before anything reaches Kafka: pure, no I/O.

A payload (an HTTPS body or an MQTT message) is JSON: one reading, or a timestamped
batch ``{"readings": [reading, ...]}`` (what a device flushes after being offline; each
reading keeps its own ``ts``). A reading has exactly the fields of the telemetry
contract (``schemas/telemetry_reading.avsc``); on top of the contract's types, the
plausibility contract (``schemas/plausibility.py``) is enforced as it is everywhere else.

The result names every bad field of every reading, so a device (or the dead-letter
topic) learns everything wrong at once. A reading of another home than the device's is
kept apart: that is a permission problem (403), not a malformed one (400).

>>> now = 1_700_000_000_000
>>> r = {"home_id": "H000001", "region": "north", "ts": now, "seq": 3, "indoor_temp_c": 20.0,
...      "outdoor_temp_c": 5.0, "power_w": 900, "energy_kwh": 10.0, "voltage_v": 230.0,
...      "vibration_mm_s": 0.2}
>>> ok = check_payload(b'{"readings": [' + json.dumps(r).encode() + b']}', "H000001", now_ms=now, regions=["north"])
>>> ok.errors, ok.foreign, ok.readings[0]["power_w"], ok.readings[0]["water_flow_lpm"]
([], [], 900.0, None)
>>> bad = dict(r, voltage_v=-1, colour="red")
>>> bad.pop("power_w")
900
>>> for e in check_payload(json.dumps(bad).encode(), "H000001", now_ms=now, regions=["north"]).errors:
...     print(e)
readings[0].colour: not a field of TelemetryReading
readings[0].power_w: missing
readings[0].voltage_v: -1.0 is outside [0, 500]
>>> check_payload(json.dumps(r).encode(), "H000002", now_ms=now, regions=["north"]).foreign
['readings[0].home_id: H000001 is not the home of this device (H000002)']
>>> check_payload(b"{not json", "H000001", now_ms=now, regions=["north"]).errors
['body: not JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))']
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable

import schemas
from schemas import plausibility

_SCHEMA = schemas.schema_dict(schemas.TELEMETRY_READING)
_RECORD = _SCHEMA["name"]
# field -> (Avro type name, nullable), from the contract itself
_FIELDS: dict[str, tuple[str, bool]] = {}
for _f in _SCHEMA["fields"]:
    _t = _f["type"]
    _nullable = isinstance(_t, list) and "null" in _t
    if isinstance(_t, list):
        _t = next(x for x in _t if x != "null")
    _FIELDS[_f["name"]] = (_t["type"] if isinstance(_t, dict) else _t, _nullable)

MAX_ERRORS = 100  # a 10,000-reading garbage batch must not make a 10 MB reply


@dataclass
class Checked:
    readings: list[dict] = field(default_factory=list)  # contract-shaped, ready to encode
    errors: list[str] = field(default_factory=list)  # malformed or implausible: 400 / dead letter
    foreign: list[str] = field(default_factory=list)  # another home's readings: 403

    @property
    def ok(self) -> bool:
        return not self.errors and not self.foreign


def check_payload(
    body: bytes, device_home: str, *, now_ms: int, regions: Iterable[str], max_batch: int = 1000
) -> Checked:
    out = Checked()
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        out.errors.append(f"body: not JSON ({_first_line(exc)})")
        return out
    if isinstance(doc, dict) and "readings" in doc:
        if set(doc) != {"readings"}:
            out.errors.append(f"body: a batch has only the key 'readings' (got {sorted(doc)[:5]})")
            return out
        items = doc["readings"]
        if not isinstance(items, list) or not items:
            out.errors.append("body: 'readings' must be a non-empty list")
            return out
    elif isinstance(doc, dict):
        items = [doc]
    else:
        out.errors.append(f"body: expected a reading or {{\"readings\": [...]}}, got {type(doc).__name__}")
        return out
    if len(items) > max_batch:
        out.errors.append(f"body: {len(items)} readings in one batch, at most {max_batch}")
        return out
    regions = tuple(regions)
    for i, item in enumerate(items):
        reading, reasons = check_reading(item, now_ms=now_ms, regions=regions)
        where = f"readings[{i}]"
        if reasons:
            out.errors.extend(f"{where}.{r}" for r in reasons)
        elif reading["home_id"] != device_home:
            out.foreign.append(f"{where}.home_id: {reading['home_id']} is not the home of this device ({device_home})")
        else:
            out.readings.append(reading)
    if len(out.errors) > MAX_ERRORS:
        out.errors = out.errors[:MAX_ERRORS] + [f"... and {len(out.errors) - MAX_ERRORS} more"]
    return out


def check_reading(item: Any, *, now_ms: int, regions: tuple[str, ...]) -> tuple[dict, list[str]]:
    """(the reading in contract shape, every reason it is bad). The contract's checks
    come first (unknown and missing fields, types); plausibility names the rest."""
    if not isinstance(item, dict):
        return {}, [f"reading: expected an object, got {type(item).__name__}"]
    reasons: list[str] = []
    named: set[str] = set()
    for key in item:
        if key not in _FIELDS:
            reasons.append(f"{_short(key, bare=True)}: not a field of {_RECORD}")
    reading: dict[str, Any] = {}
    for name, (avro_type, nullable) in _FIELDS.items():
        value = item.get(name)
        if value is None:
            if not nullable:
                reasons.append(f"{name}: missing")
                named.add(name)
            reading[name] = None
            continue
        if avro_type == "string" and not isinstance(value, str):
            reasons.append(f"{name}: {_short(value)} is not a string")
            named.add(name)
        elif avro_type == "long" and (isinstance(value, bool) or not isinstance(value, int)):
            reasons.append(f"{name}: {_short(value)} is not an integer")
            named.add(name)
        elif avro_type == "double" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            reasons.append(f"{name}: {_short(value)} is not a number")
            named.add(name)
        elif avro_type == "double":
            value = float(value)
        reading[name] = value
    reasons += [
        r for r in plausibility.check(reading, now_ms=now_ms, regions=regions)
        if r.split(":", 1)[0] not in named
    ]
    return reading, sorted(reasons, key=_order)  # unknown fields first, then schema order


def _order(reason: str) -> int:
    name = reason.split(":", 1)[0]
    return list(_FIELDS).index(name) if name in _FIELDS else -1


def _short(value: Any, bare: bool = False) -> str:
    """repr() cut to the contract's longest string: a 10 kB value or field name stays
    short. ``bare``: a plain identifier (a field name) without quotes."""
    text = value if bare and isinstance(value, str) and value.isidentifier() else repr(value)
    limit = plausibility.MAX_STRING_CHARS
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_line(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
