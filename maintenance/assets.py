"""The components of a home (its bill of materials) and how each kind wears out.

Pure data and arithmetic, no I/O. Every home has a heat pump, an electrical
panel/inverter, a meter and an envelope; homes with a water system also have a
circulation pump, a UV lamp, a water filter and a water heater. Each component's
lives follow a Weibull distribution with shape > 1 (wear-out: the hazard grows with
age), scaled per model. The last ``degrade_days`` of every life show in telemetry,
differently per type (``AssetType.signature``); then the component fails.

A home's components are drawn from the city seed by hashing, like the home itself, so
a home's bill of materials does not depend on the size of the city.

>>> spec = ASSET_TYPES["circulation_pump"]
>>> spec.code, spec.water_only, spec.shape > 1
('CP', True, True)
>>> round(weibull_mean(spec.scale_days, spec.shape))
1941
>>> weibull_life_days(0.5, scale_days=100.0, shape=2.0) == 100.0 * math.log(2) ** 0.5
True
>>> asset_id("H000042", "uv_lamp")
'H000042-UV'
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
YEAR_DAYS = 365.25


@dataclass(frozen=True)
class FailureMode:
    """One way a component fails, with the codes a technician reports."""

    failure_code: str  # what was observed
    cause_code: str  # why
    resolution_code: str  # what the technician did


@dataclass(frozen=True)
class AssetType:
    name: str
    code: str  # suffix of the asset id
    water_only: bool  # only in homes with a water system
    models: tuple[tuple[str, float], ...]  # (model, scale multiplier): models differ in life
    shape: float  # Weibull shape (> 1: wear-out)
    scale_days: float  # Weibull scale of the reference model (multiplier 1.0)
    rated_life_days: float  # the manufacturer's nominal life (what the register shows)
    degrade_days: float  # how long before failure the wear shows in telemetry
    repair_hours: float  # hands-on time of a technician's visit
    part_cost: float  # replacement part, EUR
    failure_cost: float  # extra cost of a failure (call-out, collateral damage), EUR
    failure_modes: tuple[FailureMode, ...]
    signature: str  # how wear and failure show in telemetry (documentation)


ASSET_TYPES: dict[str, AssetType] = {
    t.name: t
    for t in (
        AssetType(
            "heat_pump", "HP", False, (("HP-AW8", 1.0), ("HP-AW12", 0.85)), 2.5, 15 * YEAR_DAYS, 15 * YEAR_DAYS,
            60, 8.0, 2500.0, 1500.0,
            (FailureMode("NO_HEAT", "COMPRESSOR_WEAR", "REPLACE_COMPRESSOR"),
             FailureMode("NO_HEAT", "REFRIGERANT_LEAK", "REPAIR_LEAK_RECHARGE")),
            "COP falls (up to -40%): more power per heating degree-day; at failure heating stops",
        ),
        AssetType(
            "circulation_pump", "CP", True, (("CP-25", 1.0), ("CP-32", 0.75)), 2.2, 6 * YEAR_DAYS, 5 * YEAR_DAYS,
            30, 3.0, 350.0, 400.0,
            (FailureMode("NOISE_VIBRATION", "BEARING_WEAR", "REPLACE_BEARINGS"),
             FailureMode("NO_FLOW", "SEIZED_BEARING", "REPLACE_PUMP")),
            "bearing wear: vibration up (to 4x), pressure down (-0.6 bar); at failure the pump "
            "stops: no recirculation flow, pressure near zero",
        ),
        AssetType(
            "uv_lamp", "UV", True, (("UV-40", 1.0), ("UV-55", 1.25)), 3.5, 1.2 * YEAR_DAYS, 1.0 * YEAR_DAYS,
            60, 1.0, 90.0, 150.0,
            (FailureMode("LOW_UV", "LAMP_AGEING", "REPLACE_LAMP"),),
            "lamp ageing: UV intensity down (to -55%); at failure the lamp goes out",
        ),
        AssetType(
            "water_filter", "WF", True, (("WF-10", 1.0), ("WF-20", 1.4)), 3.0, 180.0, 150.0,
            30, 1.0, 40.0, 120.0,
            (FailureMode("LOW_FLOW", "FILTER_CLOGGED", "REPLACE_CARTRIDGE"),),
            "clogging: flow down (to -35%), pressure up (+0.5 bar); at failure flow drops to 20%",
        ),
        AssetType(
            "water_heater", "WH", True, (("WH-150", 1.0), ("WH-200", 0.9)), 2.8, 12 * YEAR_DAYS, 10 * YEAR_DAYS,
            45, 4.0, 900.0, 700.0,
            (FailureMode("NO_HOT_WATER", "ELEMENT_SCALING", "REPLACE_ELEMENT"),
             FailureMode("NO_HOT_WATER", "THERMOSTAT_FAULT", "REPLACE_THERMOSTAT")),
            "element scaling: hot-water temperature down (to -10 C); at failure water runs cold",
        ),
        AssetType(
            "inverter", "INV", False, (("INV-5K", 1.0),), 1.8, 10 * YEAR_DAYS, 10 * YEAR_DAYS,
            20, 3.0, 800.0, 500.0,
            (FailureMode("VOLTAGE_FAULT", "CAPACITOR_AGEING", "REPLACE_INVERTER"),),
            "capacitor ageing: supply voltage sags (to -8 V); at failure voltage drops 15%",
        ),
        AssetType(
            "meter", "MTR", False, (("MTR-S1", 1.0),), 1.3, 15 * YEAR_DAYS, 15 * YEAR_DAYS,
            0, 1.0, 120.0, 60.0,
            (FailureMode("NO_READINGS", "METER_FAULT", "REPLACE_METER"),),
            "no warning; at failure the meter stops sending readings",
        ),
        AssetType(
            "envelope", "ENV", False, (("ENV-RETROFIT", 1.0),), 4.0, 30 * YEAR_DAYS, 30 * YEAR_DAYS,
            365, 16.0, 6000.0, 2000.0,
            (FailureMode("HEAT_LOSS", "SEAL_DEGRADATION", "RESEAL_ENVELOPE"),),
            "insulation degrades over a year: heat loss UA up (to +60%); at failure +80%",
        ),
    )
}
TYPE_NAMES: tuple[str, ...] = tuple(ASSET_TYPES)


def asset_id(home_id: str, type_name: str) -> str:
    """``<home_id>-<type code>``: one component of each type per home."""
    return f"{home_id}-{ASSET_TYPES[type_name].code}"


def weibull_life_days(u: float, scale_days: float, shape: float) -> float:
    """Inverse CDF of Weibull(scale, shape) at ``u`` in [0, 1)."""
    return scale_days * (-math.log1p(-u)) ** (1.0 / shape)


def weibull_mean(scale: float, shape: float) -> float:
    """Mean of Weibull(scale, shape): ``scale * Gamma(1 + 1/shape)``."""
    return scale * math.gamma(1.0 + 1.0 / shape)


@dataclass(frozen=True)
class Asset:
    """One component in one home. ``install_ms`` is the current unit's install time;
    ``commissioned_ms`` when the home's first unit of this type went in."""

    asset_id: str
    home_id: str
    region: str
    asset_type: str
    model: str
    commissioned_ms: int
    install_ms: int
    rated_life_days: float

    def as_record(self) -> dict:
        return {
            "asset_id": self.asset_id, "home_id": self.home_id, "region": self.region,
            "asset_type": self.asset_type, "model": self.model, "commissioned_ms": self.commissioned_ms,
            "install_ms": self.install_ms, "rated_life_days": self.rated_life_days,
        }
