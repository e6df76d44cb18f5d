"""Devices publishing through the gateway while things break: the broker restarted, the
bridge SIGKILLed, the HTTPS gateway down, devices offline for a minute, a device process
SIGKILLed and restarted on its buffer. Afterwards every reading the devices generated is
in Kafka and ClickHouse, each once, with the timestamp it was taken at."""

from __future__ import annotations

import json
import signal
import ssl
import time

import httpx
import pytest

from conftest import ingest_mode, spawn, stop
from gateway.tls import tls_files
from gateway_helpers import stored, telemetry_for
from helpers import wait_for
from producers.device_buffer import DeviceBuffer
from producers.simulator import home_id


def start_bridge(settings, name="fault-bridge"):
    proc = spawn(settings, "gateway", "bridge", "--client-id", name, log_name=name)
    return proc


def start_https(settings):
    proc = spawn(settings, "gateway", "serve", log_name="fault-https")
    ca = ssl.create_default_context(cafile=str(tls_files(settings).ca))

    def up():
        assert proc.running(), "gateway exited; see logs/fault-https.log"
        try:
            return httpx.get(f"{settings.gateway_url}/healthz", verify=ca, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 60, what="the HTTPS gateway")
    return proc


def devices(settings, transport, first, homes, duration, buffer, log_name, *extra):
    return spawn(settings, "simulate", "--devices", transport, "--homes", str(homes), "--first-home", str(first),
                 "--duration", str(duration), "--buffer", str(buffer), "--drain", "120", *extra, log_name=log_name)


def result(proc, timeout=300) -> dict:
    proc.popen.wait(timeout)
    lines = [line for line in proc.log_path.read_text().splitlines() if line.startswith("{")]
    assert lines, f"no summary in {proc.log_path}"
    return json.loads(lines[-1])


def assert_stored_once(counts: dict) -> None:
    """Every generated reading stored once. The telemetry sink (ECO_TELEMETRY_INGEST=sink)
    stores a reading the bridge or gateway wrote to Kafka twice once (a bridge SIGKILLed
    between Kafka's ack and its PUBACK does: README, Device gateway); the Kafka engine
    stores every copy, so there Kafka must hold none."""
    if ingest_mode() == "sink":
        assert counts["stored_rows"] == counts["generated"], counts
    else:
        assert counts["stored_rows"] == counts["generated"] + counts["kafka_duplicates"], counts
        assert counts["kafka_duplicates"] == 0, counts


def check_stored_once(settings, buffer_path, homes: list[str]) -> dict:
    """Kafka and ClickHouse hold, per home, exactly seq 0..generated-1, each once, with
    timestamps one step apart within each run of the device process."""
    buf = DeviceBuffer(buffer_path)
    generated = buf.totals()["generated"]
    buf_next = {h: buf.next_seq(h) for h in homes}
    assert buf.totals()["buffered"] == 0
    buf.close()
    got = telemetry_for(settings, set(homes), idle_s=5)
    keys = [(r["home_id"], r["seq"]) for r in got]
    duplicates_in_kafka = len(keys) - len(set(keys))
    missing = sorted({(h, s) for h in homes for s in range(buf_next[h])} - set(keys))
    assert len(set(keys)) == generated, (len(set(keys)), generated, "missing from Kafka:", missing[:50])
    for h in homes:
        seqs = sorted({s for hh, s in keys if hh == h})
        assert seqs == list(range(len(seqs))), h
        ts = [t for _, t in sorted({(r["seq"], r["ts"]) for r in got if r["home_id"] == h})]
        assert len(ts) == len(seqs)  # one timestamp per reading: a resend kept its original one
        assert all(b > a for a, b in zip(ts, ts[1:])), h
    wait_for(lambda: stored(settings, set(homes))[1] >= generated, 180, what="every reading in ClickHouse")
    time.sleep(3)
    rows, distinct = stored(settings, set(homes))
    assert distinct == generated
    return {"generated": generated, "kafka_duplicates": duplicates_in_kafka, "stored_rows": rows}


def test_mqtt_devices_through_broker_restart_bridge_kill_and_a_minute_offline(stack, stack_settings, tmp_path):
    s = stack_settings
    first, n = 700_000, 12
    homes = [home_id(first + i) for i in range(n)]
    bridge = start_bridge(s)
    wait_for(lambda: "subscribed to" in bridge.log_path.read_text(), 60, what="the bridge")
    buffer = tmp_path / "mqtt-devices.sqlite"
    # 4 devices lose their link from t=5 s for 60 s
    sim = devices(s, "mqtt", first, n, 80, buffer, "mqtt-devices",
                  "--offline-homes", "4", "--offline-at", "5", "--offline-for", "60")
    try:
        time.sleep(10)
        stack.restart("mqtt")  # the broker goes down and comes back on its persistence
        time.sleep(10)
        bridge.kill()  # SIGKILL: unacknowledged messages wait in the broker for its session
        time.sleep(5)
        bridge = start_bridge(s)
        summary = result(sim)
    finally:
        stop(sim)
        stop(bridge)
    assert summary["buffered"] == 0 and summary["refused"] == {}, summary
    assert summary["generated"] >= n * 75
    counts = check_stored_once(s, buffer, homes)
    print("mqtt faults:", summary, counts)
    assert_stored_once(counts)


def test_mqtt_devices_keep_readings_no_bridge_subscription_took(stack, stack_settings, tmp_path):
    """Mosquitto 2.0.11 does not restore shared subscriptions from its store: after a
    restart, until a bridge subscribes again, it answers a device's publish with PUBACK
    "no matching subscribers" and drops the message. Here that window lasts seconds
    instead of the few milliseconds the fault test above hits by chance: the devices must
    keep those readings and deliver them once a bridge is back."""
    s = stack_settings
    first, n = 720_000, 3
    homes = [home_id(first + i) for i in range(n)]
    stack.restart("mqtt")  # no subscription now, whatever sessions earlier tests left
    buffer = tmp_path / "no-bridge-devices.sqlite"
    sim = devices(s, "mqtt", first, n, 10, buffer, "no-bridge-devices")
    bridge = None
    try:
        time.sleep(8)
        bridge = start_bridge(s, "late-bridge")
        summary = result(sim)
    finally:
        stop(sim)
        if bridge is not None:
            stop(bridge)
    assert summary["buffered"] == 0 and summary["refused"] == {}, summary
    counts = check_stored_once(s, buffer, homes)
    assert summary["retries"] > 0, summary  # the devices did publish into the gap
    assert counts["generated"] >= n * 9
    assert counts["kafka_duplicates"] == 0


def test_https_devices_through_gateway_outage_and_device_restart(stack_settings, tmp_path):
    s = stack_settings
    first, n = 710_000, 12
    homes = [home_id(first + i) for i in range(n)]
    gateway = start_https(s)
    buffer = tmp_path / "https-devices.sqlite"
    sim = devices(s, "https", first, n, 60, buffer, "https-devices")
    try:
        time.sleep(8)
        stop(gateway)  # every device's link fails for 15 s
        time.sleep(15)
        gateway = start_https(s)
        time.sleep(5)
        sim.kill()  # the device process dies; its buffer and seq counters are on disk
        sim = devices(s, "https", first, n, 10, buffer, "https-devices-2")
        summary = result(sim)
    finally:
        stop(sim)
        stop(gateway)
    assert summary["buffered"] == 0 and summary["refused"] == {}, summary
    counts = check_stored_once(s, buffer, homes)
    print("https faults:", summary, counts)
    assert_stored_once(counts)
