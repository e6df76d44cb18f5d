"""Builds the twins of the configured city: the register and bill of materials from the
city seed, the work-order history of its maintenance model, and each home's model
``Building``. Used by the service and the benchmark alike."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from maintenance.fleet import Fleet
from producers.simulator import CitySimulator
from twin.attributes import building_for_model, register
from twin.model import Building, Climate, sim_climate
from twin.state import TwinStore


@dataclass
class City:
    sim: CitySimulator
    store: TwinStore
    building_of: Callable[[str], Building]


def build_city(homes: int, regions, seed: int, now_ms: int | None = None, work_orders: bool = True) -> City:
    now = int(time.time() * 1000) if now_ms is None else int(now_ms)
    sim = CitySimulator(homes, regions, seed, now)
    boms: dict[str, list[dict]] = {}
    fleet = Fleet(seed, sim.home_ids, sim.home_regions, sim.has_water, now) if work_orders else None
    if fleet is not None:
        for a in fleet.register():
            boms.setdefault(a["home_id"], []).append(a)
    store = TwinStore(register(sim, now), boms)
    if fleet is not None:
        for o in fleet.drain_orders():
            store.apply("work_orders", o)
    cm, cs, cd = sim_climate(sim)

    def building_of(home_id: str) -> Building:
        i = sim.home_index[home_id]
        t = store.get(home_id)
        return building_for_model(t.attributes, t.bom, Climate(float(cm[i]), float(cs[i]), float(cd[i])))

    return City(sim, store, building_of)
