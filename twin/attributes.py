"""What the city's register knows about each home: location, building, bill of
materials, compliance. Pure: derived from the city seed like the homes themselves.

The building's physics (size, insulation) is the simulator's; the register reports it
as a floor area and a U-value (``twin.model.u_value_of``). Compliance items repeat at
fixed intervals; each was last done some hashed time ago, so a city has items ok, due
soon and overdue.

>>> from producers.simulator import CitySimulator
>>> sim = CitySimulator(3, ("north", "south"), seed=1, start_ms=1_790_000_000_000)
>>> reg = register(sim)
>>> a = reg["H000000"]
>>> sorted(a)
['address', 'building', 'compliance', 'location', 'region']
>>> a["building"]["u_value_w_m2k"] == u_value_of(sim.insulation[0])
True
>>> [c["item"] for c in a["compliance"]][:2]
['electrical_inspection', 'heat_pump_service']
>>> compliance_status({"due_ms": 1_000 + 10 * DAY_MS}, now_ms=1_000)
'due_soon'
>>> compliance_status({"due_ms": 1_000}, now_ms=2_000)
'overdue'
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from ecoretrofit.hashing import uniforms
from twin.model import Building, Climate, u_value_of

DAY_MS = 86_400_000
DUE_SOON_DAYS = 30
#: Compliance items: name -> (interval days, only homes with a water system).
COMPLIANCE_ITEMS: dict[str, tuple[int, bool]] = {
    "electrical_inspection": (5 * 365, False),
    "heat_pump_service": (365, False),
    "legionella_risk_assessment": (2 * 365, True),
    "energy_certificate": (10 * 365, False),
}
STATUSES = ("ok", "due_soon", "overdue")
#: The fictional city's centre and each region's offset from it (degrees).
CITY_CENTRE = (52.0, 5.0)
REGION_OFFSETS = {"north": (0.06, 0.0), "south": (-0.06, 0.0), "east": (0.0, 0.09), "west": (0.0, -0.09),
                  "central": (0.0, 0.0)}
REGION_HALF_SIZE = (0.025, 0.04)  # half height, half width of a region's box (degrees)
BUILDING_TYPES = ("detached", "semi_detached", "terraced", "apartment")
STREETS = ("Oak Lane", "Mill Road", "Station Street", "Canal Side", "Church Way", "Market Square", "Elm Grove",
           "Harbour Road", "Willow Close", "Bridge Street", "Park Avenue", "Orchard Row")
#: A heat pump model's rated seasonal COP (what its data sheet says).
RATED_COP = {"HP-AW8": 3.2, "HP-AW12": 3.4}
DEFAULT_RATED_COP = 3.2
#: Circulation pump models' rated power, W.
PUMP_RATED_W = {"CP-25": 100.0, "CP-32": 120.0}
_S = 3000  # hash streams of the register


def region_box(region: str) -> tuple[float, float, float, float]:
    """(lat_min, lat_max, lon_min, lon_max) of a region; unknown names go on a ring."""
    if region in REGION_OFFSETS:
        dlat, dlon = REGION_OFFSETS[region]
    else:
        angle = (zlib.crc32(region.encode()) % 360) * math.pi / 180
        dlat, dlon = 0.12 * math.sin(angle), 0.18 * math.cos(angle)
    lat, lon = CITY_CENTRE[0] + dlat, CITY_CENTRE[1] + dlon
    h, w = REGION_HALF_SIZE
    return lat - h, lat + h, lon - w, lon + w


def energy_rating(u_value: float) -> str:
    """Energy label from the envelope's U-value (W/m2K)."""
    for label, limit in (("A", 0.40), ("B", 0.50), ("C", 0.60), ("D", 0.70), ("E", 0.80), ("F", 0.90)):
        if u_value < limit:
            return label
    return "G"


def compliance_status(item: dict, now_ms: int) -> str:
    due = item["due_ms"]
    if due < now_ms:
        return "overdue"
    if due - now_ms <= DUE_SOON_DAYS * DAY_MS:
        return "due_soon"
    return "ok"


def register(sim, now_ms: int | None = None) -> dict[str, dict]:
    """home id -> attributes, for every home of a ``CitySimulator``."""
    now = sim.now_ms if now_ms is None else int(now_ms)
    idx = np.arange(sim.n, dtype=np.uint64)

    def u(k: int) -> np.ndarray:
        return uniforms(sim.seed, idx, _S + k)

    lat_u, lon_u, year_u, type_u, street_u, num_u = u(0), u(1), u(2), u(3), u(4), u(5)
    out: dict[str, dict] = {}
    for i, hid in enumerate(sim.home_ids):
        region = sim.home_regions[i]
        la0, la1, lo0, lo1 = region_box(region)
        uv = u_value_of(sim.insulation[i])
        items = []
        for k, (name, (interval, water_only)) in enumerate(COMPLIANCE_ITEMS.items()):
            if water_only and not sim.has_water[i]:
                continue
            # last done between 0 and 1.15 intervals ago: ~13% overdue
            ago = float(uniforms(sim.seed, np.array([i], dtype=np.uint64), _S + 10 + k)[0]) * 1.15 * interval
            last = now - int(ago * DAY_MS)
            items.append({"item": name, "interval_days": interval, "last_done_ms": last,
                          "due_ms": last + interval * DAY_MS})
        out[hid] = {
            "region": region,
            "location": {"lat": round(la0 + (la1 - la0) * float(lat_u[i]), 6),
                         "lon": round(lo0 + (lo1 - lo0) * float(lon_u[i]), 6)},
            "address": f"{1 + int(num_u[i] * 180)} {STREETS[int(street_u[i] * len(STREETS))]}, {region.title()}",
            "building": {
                "year_built": 1930 + int(year_u[i] * 93),
                "type": BUILDING_TYPES[int(type_u[i] * len(BUILDING_TYPES))],
                "floor_area_m2": round(100.0 * float(sim.size[i]), 2),
                "insulation": "retrofitted" if sim.insulation[i] < 0.9 else
                              ("standard" if sim.insulation[i] < 1.3 else "poor"),
                "u_value_w_m2k": uv,
                "energy_rating": energy_rating(uv),
                "water_system": bool(sim.has_water[i]),
            },
            "compliance": items,
        }
    return out


def building_for_model(attrs: dict, bom: list[dict], climate: Climate) -> Building:
    """The what-if model's view of a home's register entry and bill of materials."""
    b = attrs["building"]
    models = {a["asset_type"]: a["model"] for a in bom}
    pump = PUMP_RATED_W.get(models.get("circulation_pump", ""), 100.0) if b.get("water_system") else 0.0
    return Building(
        u_value_w_m2k=float(b["u_value_w_m2k"]), size=float(b["floor_area_m2"]) / 100.0,
        cop_rated=RATED_COP.get(models.get("heat_pump", ""), DEFAULT_RATED_COP), pump_w=pump, climate=climate,
    )
