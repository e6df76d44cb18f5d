"""The plausibility contract of a telemetry reading: what a reading must look like to be
stored and scored, declared once and enforced at the edge of every path (the stream
processor, the warehouse's materialized views, the device gateway).

A reading can be valid Avro and still be nonsense: NaN, a negative voltage, 1.7e308 W,
a timestamp in 1900, a region nobody declared (which would also multiply the
warehouse's partitions). Such a reading is not dropped: it goes to the dead letters with
every reason it failed, and no detector ever scores it.

Everything is pure: the caller passes "now" and the known regions, so the same check
runs in a test, in the processor and (as SQL derived from :data:`METRIC_RANGES` and the
limits below) in ClickHouse.

>>> now = 1_700_000_000_000
>>> good = {"home_id": "H000042", "region": "north", "ts": now, "seq": 7,
...         "indoor_temp_c": 20.5, "outdoor_temp_c": 3.0, "power_w": 850.0,
...         "energy_kwh": 1234.5, "voltage_v": 231.0, "vibration_mm_s": 0.4,
...         "water_flow_lpm": None, "water_temp_c": None,
...         "uv_intensity_mw_cm2": None, "pump_pressure_bar": None}
>>> check(good, now_ms=now, regions=("north", "south"))
[]
>>> bad = dict(good, voltage_v=-5.0, power_w=float("nan"), region="mars", ts=-2208988800000)
>>> for reason in check(bad, now_ms=now, regions=("north", "south")):
...     print(reason)
region: 'mars' is not a known region
ts: -2208988800000 is more than 400 days before now
power_w: nan is not a finite number
voltage_v: -5.0 is outside [0, 500]
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

# The contract's version: goes into each dead-letter reason's context so a reader knows
# which rules rejected a record.
VERSION = 1


@dataclass(frozen=True)
class Range:
    """Closed interval of physically possible values (not of normal ones: a detector
    judges what is normal; this only refuses what no real sensor can report)."""

    lo: float
    hi: float

    def __contains__(self, x: float) -> bool:
        return self.lo <= x <= self.hi


# Per numeric field of TelemetryReading. Wide on purpose: a fault (a voltage surge, a
# pump at 3x vibration) must still be stored and scored; a broken sensor sending
# 1.7e308 must not.
METRIC_RANGES: dict[str, Range] = {
    "indoor_temp_c": Range(-40.0, 70.0),
    "outdoor_temp_c": Range(-70.0, 60.0),
    "power_w": Range(0.0, 200_000.0),
    "energy_kwh": Range(0.0, 1e9),
    "voltage_v": Range(0.0, 500.0),
    "vibration_mm_s": Range(0.0, 500.0),
    "water_flow_lpm": Range(0.0, 1_000.0),
    "water_temp_c": Range(-10.0, 120.0),
    "uv_intensity_mw_cm2": Range(0.0, 1_000.0),
    # gauge pressure: the suction side of a pump may read below ambient, never below vacuum
    "pump_pressure_bar": Range(-1.0, 40.0),
}
# Fields that may be null (homes without a water system).
NULLABLE = frozenset({"water_flow_lpm", "water_temp_c", "uv_intensity_mw_cm2", "pump_pressure_bar"})

# Home ids as the simulator and the device registry issue them: H + 6 to 9 digits.
HOME_ID_PATTERN = r"^H[0-9]{6,9}$"
_HOME_ID = re.compile(HOME_ID_PATTERN)
# seq is a per-home counter from 0; a 32-bit device counter wraps long before this.
SEQ_MAX = 2**53
# Event time: at most this far in the future (device clock skew) or in the past
# (history replayed by a device or a backfill; the hourly roll-ups keep 400 days).
MAX_FUTURE_MS = 10 * 60 * 1000
MAX_PAST_MS = 400 * 24 * 3600 * 1000
# One Avro-encoded reading is ~100 bytes; anything larger than this is not a reading.
MAX_MESSAGE_BYTES = 4096
# A dead-letter record keeps at most this much of the rejected message (and says how
# much it cut), so re-sending a dead letter never exceeds a producer's 1 MB limit.
DEAD_LETTER_MAX_BYTES = 64 * 1024
# What a dead letter's error adds when its payload was cut (every path says it alike).
TRUNCATION_NOTE = " (raw payload truncated to the first {limit} of {size} bytes)"
# Longest string field we accept (regions are declared, home ids match the pattern).
MAX_STRING_CHARS = 64


def valid_home_id(home: Any) -> bool:
    """Whether ``home`` is a home id (the whole string matches HOME_ID_PATTERN).

    >>> valid_home_id("H000042"), valid_home_id("H42"), valid_home_id('"H000042"')
    (True, False, False)
    """
    return isinstance(home, str) and _HOME_ID.fullmatch(home) is not None


def check(
    reading: Mapping[str, Any],
    *,
    now_ms: int,
    regions: Iterable[str],
    max_past_ms: int = MAX_PAST_MS,
    max_future_ms: int = MAX_FUTURE_MS,
) -> list[str]:
    """Every reason ``reading`` is implausible, in field order; ``[]`` if it is fine.

    ``reading`` is a decoded TelemetryReading (a dict with the schema's fields)."""
    reasons: list[str] = []
    home = reading.get("home_id")
    if not valid_home_id(home):
        reasons.append(f"home_id: {_short(home)} does not match {HOME_ID_PATTERN}")
    region = reading.get("region")
    if region not in set(regions):
        reasons.append(f"region: {_short(region)} is not a known region")
    ts = reading.get("ts")
    if not isinstance(ts, int) or isinstance(ts, bool):
        reasons.append(f"ts: {_short(ts)} is not an integer of milliseconds")
    elif ts > now_ms + max_future_ms:
        reasons.append(f"ts: {ts} is more than {max_future_ms // 60_000} minutes after now")
    elif ts < now_ms - max_past_ms:
        reasons.append(f"ts: {ts} is more than {max_past_ms // 86_400_000} days before now")
    seq = reading.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= SEQ_MAX:
        reasons.append(f"seq: {_short(seq)} is outside [0, 2**53]")
    for name, rng in METRIC_RANGES.items():
        x = reading.get(name)
        if x is None:
            if name not in NULLABLE:
                reasons.append(f"{name}: missing")
            continue
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            reasons.append(f"{name}: {_short(x)} is not a number")
        elif not math.isfinite(x):
            reasons.append(f"{name}: {x} is not a finite number")
        elif x not in rng:
            reasons.append(f"{name}: {x} is outside [{rng.lo:g}, {rng.hi:g}]")
    return reasons


# ---------------------------------------------------------------- work orders
# A work order is written by technicians, planners and predictors, not by a sensor, but
# it reaches the same consumers (the maintenance worker learns from it, the twin shows
# it, the warehouse keeps it): the same rule, refused with its reasons, never trusted.
WORK_ORDER_KINDS = ("corrective", "preventive", "predictive", "inspection")
WORK_ORDER_STATUSES = ("open", "closed")
# <home_id>-<type code>: one component of each type per home (maintenance/assets.py)
ASSET_ID_PATTERN = r"^H[0-9]{6,9}-[A-Z]{2,4}$"
_ASSET_ID = re.compile(ASSET_ID_PATTERN)
# ids, names and codes: 1 to 64 printable ASCII characters (no control characters)
TEXT_PATTERN = r"^[ -~]{1,64}$"
_TEXT = re.compile(TEXT_PATTERN)
# A city's order history goes back years (back-dated when a fleet is registered).
ORDER_MAX_PAST_MS = 30 * 365 * 24 * 3600 * 1000
ORDER_CODE_FIELDS = ("failure_code", "cause_code", "resolution_code")


def check_work_order(order: Mapping[str, Any], *, now_ms: int, regions: Iterable[str]) -> list[str]:
    """Every reason a decoded WorkOrder is implausible, in field order; ``[]`` if fine.

    >>> now = 1_700_000_000_000
    >>> order = {"order_id": "WO-H000042-CP-1", "asset_id": "H000042-CP", "home_id": "H000042",
    ...          "region": "north", "asset_type": "circulation_pump", "model": "CP-X", "kind": "corrective",
    ...          "source": "manual", "opened_ms": now - 5_000, "status": "closed", "closed_ms": now,
    ...          "failure_ms": now - 9_000, "failure_code": "NOISE", "cause_code": None,
    ...          "resolution_code": None, "replaced": True, "version": 3}
    >>> check_work_order(order, now_ms=now, regions=("north",))
    []
    >>> for reason in check_work_order(dict(order, asset_id="H000043-CP", kind="urgent", closed_ms=None,
    ...                                     version=0), now_ms=now, regions=("north",)):
    ...     print(reason)
    asset_id: 'H000043-CP' is not a component of home 'H000042'
    kind: 'urgent' is not one of corrective, preventive, predictive, inspection
    closed_ms: missing on a closed order
    version: 0 is outside [1, 2**53]
    """
    reasons: list[str] = []
    _check_text(order, "order_id", reasons)
    home = order.get("home_id")
    asset = order.get("asset_id")
    if not isinstance(asset, str) or _ASSET_ID.fullmatch(asset) is None:
        reasons.append(f"asset_id: {_short(asset)} does not match {ASSET_ID_PATTERN}")
    elif valid_home_id(home) and not asset.startswith(home + "-"):
        reasons.append(f"asset_id: {_short(asset)} is not a component of home {_short(home)}")
    if not valid_home_id(home):
        reasons.append(f"home_id: {_short(home)} does not match {HOME_ID_PATTERN}")
    region = order.get("region")
    if region not in set(regions):
        reasons.append(f"region: {_short(region)} is not a known region")
    _check_text(order, "asset_type", reasons)
    _check_text(order, "model", reasons)
    kind = order.get("kind")
    if kind not in WORK_ORDER_KINDS:
        reasons.append(f"kind: {_short(kind)} is not one of {', '.join(WORK_ORDER_KINDS)}")
    _check_text(order, "source", reasons)
    opened = order.get("opened_ms")
    _check_time(opened, "opened_ms", now_ms, reasons)
    status = order.get("status")
    if status not in WORK_ORDER_STATUSES:
        reasons.append(f"status: {_short(status)} is not one of {', '.join(WORK_ORDER_STATUSES)}")
    closed = order.get("closed_ms")
    if closed is None:
        if status == "closed":
            reasons.append("closed_ms: missing on a closed order")
    elif _check_time(closed, "closed_ms", now_ms, reasons) and isinstance(opened, int) and closed < opened:
        reasons.append(f"closed_ms: {closed} is before opened_ms")
    if order.get("failure_ms") is not None:
        _check_time(order.get("failure_ms"), "failure_ms", now_ms, reasons)
    for name in ORDER_CODE_FIELDS:
        if order.get(name) is not None:
            _check_text(order, name, reasons)
    version = order.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SEQ_MAX:
        reasons.append(f"version: {_short(version)} is outside [1, 2**53]")
    return reasons


def _check_text(record: Mapping[str, Any], name: str, reasons: list[str]) -> None:
    value = record.get(name)
    if not isinstance(value, str) or _TEXT.fullmatch(value) is None:
        reasons.append(f"{name}: {_short(value)} is not 1 to 64 printable ASCII characters")


def _check_time(ts: Any, name: str, now_ms: int, reasons: list[str]) -> bool:
    """Appends the reason ``ts`` is not a plausible order time; True if it is one."""
    if not isinstance(ts, int) or isinstance(ts, bool):
        reasons.append(f"{name}: {_short(ts)} is not an integer of milliseconds")
    elif ts > now_ms + MAX_FUTURE_MS:
        reasons.append(f"{name}: {ts} is more than {MAX_FUTURE_MS // 60_000} minutes after now")
    elif ts < now_ms - ORDER_MAX_PAST_MS:
        reasons.append(f"{name}: {ts} is more than {ORDER_MAX_PAST_MS // (365 * 86_400_000)} years before now")
    else:
        return True
    return False


def _short(value: Any) -> str:
    """repr() of a value, cut so a 10 kB home id cannot make a 10 kB reason."""
    text = repr(value)
    return text if len(text) <= MAX_STRING_CHARS else text[: MAX_STRING_CHARS - 3] + "..."


def truncation_note(size: int) -> str:
    """The note a dead letter's error carries when its ``size``-byte payload was cut.

    >>> truncation_note(100_000)
    ' (raw payload truncated to the first 65536 of 100000 bytes)'
    """
    return TRUNCATION_NOTE.format(limit=DEAD_LETTER_MAX_BYTES, size=size)
