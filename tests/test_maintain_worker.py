"""The maintenance worker's own logic, without Kafka: homes registered from their
readings, work orders held until their home's telemetry catches up (event-time join),
and the JSON checkpoint it resumes from."""

from __future__ import annotations

import json

from ecoretrofit.config import Settings
from maintenance.assets import DAY_MS, HOUR_MS
from maintenance.worker import MaintenanceWorker

T0 = 1_735_689_600_000


def _reading(home: str, ts: int, water: bool = True) -> dict:
    w = (lambda v: v) if water else (lambda v: None)
    return {"home_id": home, "region": "north", "ts": ts, "seq": 0, "indoor_temp_c": 21.0,
            "outdoor_temp_c": 5.0, "power_w": 900.0, "energy_kwh": 1.0, "voltage_v": 230.0,
            "vibration_mm_s": 1.0, "water_flow_lpm": w(6.0), "water_temp_c": w(55.0),
            "uv_intensity_mw_cm2": w(40.0), "pump_pressure_bar": w(3.0)}


def _order(home: str, failure_ms: int, status: str, version: int) -> dict:
    return {"order_id": f"WO-{home}-CP-0001", "asset_id": f"{home}-CP", "home_id": home, "region": "north",
            "asset_type": "circulation_pump", "model": "CP-25", "kind": "corrective", "source": "manual",
            "opened_ms": failure_ms + HOUR_MS, "status": status, "closed_ms": None if status == "open"
            else failure_ms + DAY_MS, "failure_ms": failure_ms, "failure_code": None, "cause_code": None,
            "resolution_code": None, "replaced": status == "closed", "version": version}


def test_homes_register_from_their_readings_and_orders_wait_for_telemetry(tmp_path):
    w = MaintenanceWorker(Settings(), tmp_path / "state.json")
    w.on_reading(_reading("H1", T0))
    w.on_reading(_reading("H2", T0, water=False))
    assert sorted(a for a, _ in w.workflow.home_assets["H1"]) == [
        "H1-CP", "H1-ENV", "H1-HP", "H1-INV", "H1-UV", "H1-WF", "H1-WH"]
    assert "H2-CP" not in w.workflow.asset_type  # no water system, no pump

    # a failure at T0 + 2 days: its orders wait until H1's readings get there
    fail = T0 + 2 * DAY_MS
    w.on_order(_order("H1", fail, "open", 1), now=0.0)
    w.on_order(_order("H1", fail, "closed", 2), now=0.0)
    w.release(now=1.0)
    assert len(w.held) == 2 and "H1-CP" not in w.workflow.open_orders
    for k in range(1, 4 * 24):
        w.on_reading(_reading("H1", T0 + k * HOUR_MS))
    w.release(now=2.0)
    assert w.held == [] and w.workflow.episode["H1-CP"] == 1  # both applied, in order
    assert w.facts["H1-CP"] == ("north", "CP-25")

    # orders also go when the wait is over, or when every topic has been read
    w.on_order(_order("H2", T0 + 30 * DAY_MS, "open", 1), now=10.0)
    w.release(now=10.0 + w.hold_s - 1)
    assert len(w.held) == 1
    w.release(now=10.0 + w.hold_s)
    assert w.held == []
    w.on_order(_order("H2", T0 + 31 * DAY_MS, "open", 1), now=20.0)
    w.release(now=20.0, telemetry_drained=True)
    assert w.held == []


def test_checkpoint_resumes_the_same_state_and_writes_only_changed_assets(tmp_path):
    class Flushed:
        def flush(self, timeout):
            return 0

    path = tmp_path / "state.sqlite"
    w = MaintenanceWorker(Settings(), path)
    for k in range(30):  # five 6-hour windows closed: every asset of H1 has a state
        w.on_reading(_reading("H1", T0 + k * HOUR_MS))
    w.on_order(_order("H1", T0 + 40 * DAY_MS, "open", 1), now=0.0)  # still held
    w.offsets = {"t": {0: 17, 3: 4}}
    w.checkpoint(Flushed())
    assert w.store.last_assets == 7  # H1's components

    def everything(worker):
        return json.loads(json.dumps({**worker.state(), "workflow": worker.workflow.state()}))

    again = MaintenanceWorker(Settings(), path)
    assert everything(again) == everything(w)
    assert again.offsets == {"t": {0: 17, 3: 4}} and len(again.held) == 1

    # a window closes: H1's assets are written again; readings inside the next window
    # change no asset: the checkpoint after them writes none
    for hour, written in ((30, 7), (31, 0), (35, 0), (36, 7)):
        w.on_reading(_reading("H1", T0 + hour * HOUR_MS))
        w.checkpoint(Flushed())
        assert w.store.last_assets == written, hour
    assert everything(MaintenanceWorker(Settings(), path)) == everything(w)


def test_an_old_json_checkpoint_is_refused_with_a_reason(tmp_path):
    import pytest

    path = tmp_path / "state.json"
    path.write_text('{"format": 1}')
    with pytest.raises(ValueError, match="not a maintenance checkpoint"):
        MaintenanceWorker(Settings(), path)
