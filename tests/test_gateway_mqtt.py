"""The MQTT path against the real stack: Debian's Mosquitto (TLS only, per-device
passwords and ACL from the device registry) and the bridge into Kafka."""

from __future__ import annotations

import json
import socket
import ssl
import struct
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from conftest import spawn, stop
from gateway.devices import telemetry_topic
from gateway.registry import DeviceRegistry, registry_path
from gateway.tls import tls_files
from gateway_helpers import dead_letters_for, fresh_home, readings, stored, telemetry_for
from helpers import wait_for


@pytest.fixture(scope="module")
def bridge(stack_settings):
    proc = spawn(stack_settings, "gateway", "bridge", "--client-id", "test-bridge", log_name="bridge")
    wait_for(lambda: not proc.running() or "subscribed to" in proc.log_path.read_text(), 60, what="the bridge")
    assert proc.running(), "bridge exited at start-up; see logs/bridge.log"
    yield proc
    stop(proc)


def add_device(settings, home: str | None = None) -> tuple[str, str, str]:
    """(home, device id, token): registered through the CLI, as an operator would, so the
    broker's files are rewritten and the broker reloaded."""
    import subprocess
    import sys

    home = home or fresh_home()
    device = f"dev-{home}"
    out = subprocess.run([sys.executable, "-m", "ecoretrofit.cli", "devices", "add", "--home", home, "--device", device],
                         env={**__import__("os").environ, **settings.env()}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    token = next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("token"))
    return home, device, token


class Device:
    """A bare MQTT v5 client as a device: TLS, its own credentials, QoS 1."""

    def __init__(self, settings, user: str | None, password: str | None, tls: bool = True):
        self.connack = threading.Event()
        self.disconnected = threading.Event()
        self.reason = None
        self.pubacks: dict[int, object] = {}
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{user}-{time.monotonic_ns()}", protocol=mqtt.MQTTv5)
        if user is not None:
            c.username_pw_set(user, password)
        if tls:
            c.tls_set(ca_certs=str(tls_files(settings).ca))
        c.on_connect = lambda _c, _u, _f, rc, _p: (setattr(self, "reason", rc), self.connack.set())
        c.on_disconnect = lambda *_: self.disconnected.set()
        c.on_publish = lambda _c, _u, mid, rc, _p: self.pubacks.__setitem__(mid, rc)
        self.client = c
        c.connect(settings.mqtt_host, settings.mqtt_port, keepalive=10)
        c.loop_start()
        self.connack.wait(10)

    @property
    def accepted(self) -> bool:
        return self.reason is not None and not self.reason.is_failure

    def publish(self, topic: str, payload: bytes | str) -> object:
        """Publish QoS 1 and return the PUBACK's reason code."""
        info = self.client.publish(topic, payload, qos=1)
        wait_for(lambda: info.mid in self.pubacks, 10, interval=0.05, what="PUBACK")
        return self.pubacks[info.mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_listener_is_tls_only(stack_settings):
    s = stack_settings
    conf = (s.data_dir / "mqtt" / "mosquitto.conf").read_text()
    assert "certfile" in conf and "keyfile" in conf  # the known trap: cafile alone stays plaintext
    # A plaintext MQTT CONNECT (v3.1.1, no credentials) gets no CONNACK: the TLS listener
    # reads it as a broken handshake and closes.
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack(">H", 4) + b"test"
    with socket.create_connection((s.mqtt_host, s.mqtt_port), timeout=5) as sock:
        sock.sendall(bytes([0x10, len(body)]) + body)
        try:
            answer = sock.recv(4)
        except (ConnectionResetError, socket.timeout):
            answer = b""
    assert not answer.startswith(b"\x20"), f"plaintext CONNECT got a CONNACK: {answer!r}"
    home, device, token = add_device(s)
    with pytest.raises((OSError, ssl.SSLError, AssertionError)):
        plain = Device(s, device, token, tls=False)
        try:
            assert plain.accepted
        finally:
            plain.close()


def test_wrong_missing_and_revoked_credentials_refused(stack_settings, bridge):
    import subprocess
    import sys

    s = stack_settings
    home, device, token = add_device(s)
    for user, password in ((device, "wrong-token"), (None, None), ("nobody", token)):
        d = Device(s, user, password)
        assert not d.accepted and d.reason is not None and d.reason.is_failure, (user, d.reason)
        d.close()
    ok = Device(s, device, token)
    assert ok.accepted
    good = readings(home, s.regions[0], [0, 1])
    assert ok.publish(telemetry_topic(home), json.dumps(good[0])) == 0
    assert subprocess.run([sys.executable, "-m", "ecoretrofit.cli", "devices", "revoke", device],
                          env={**__import__("os").environ, **s.env()}, timeout=60).returncode == 0
    time.sleep(0.5)
    # the connected session is dropped at once: Mosquitto re-checks every client on SIGHUP ...
    assert ok.disconnected.wait(10)
    ok.client.publish(telemetry_topic(home), json.dumps(good[1]), qos=1)  # queued, never delivered
    time.sleep(1.0)
    ok.close()
    # ... and a new connection is refused
    again = Device(s, device, token)
    assert not again.accepted
    again.close()
    got = telemetry_for(s, {home})
    assert [r["seq"] for r in got] == [0]


def test_device_cannot_publish_as_another_home(stack_settings, bridge):
    s = stack_settings
    home_a, dev_a, token_a = add_device(s)
    home_b, _, _ = add_device(s)
    a = Device(s, dev_a, token_a)
    # B's topic: the broker refuses (MQTT 5 PUBACK "not authorized")
    assert a.publish(telemetry_topic(home_b), json.dumps(readings(home_b, s.regions[0], [0])[0])) == 135
    # B's readings on A's own topic: the bridge dead-letters them
    assert a.publish(telemetry_topic(home_a), json.dumps(readings(home_b, s.regions[0], [1])[0])) == 0
    a.close()
    dead = wait_for(lambda: dead_letters_for(s, {home_a}, idle_s=2), 30, what="the foreign reading's dead letter")
    assert [d["reason"] for d in dead] == ["foreign_home"] and home_b in dead[0]["error"]
    assert telemetry_for(s, {home_b}, idle_s=2) == []


def test_malformed_messages_dead_lettered_good_ones_stored(stack_settings, bridge):
    s = stack_settings
    home, device, token = add_device(s)
    region = s.regions[0]
    first = readings(home, region, range(0, 20))
    base = readings(home, region, [20])[0]
    bad = {
        b"{oops": "body: not JSON",
        b"": "body: not JSON",
        b"\xff\xfe\x00garbage": "body: not JSON",
        json.dumps(dict(base, power_w="high")).encode(): "power_w: 'high' is not a number",
        json.dumps(dict(base, voltage_v=float("nan"))).encode(): "voltage_v: nan is not a finite number",
        json.dumps(dict(base, ts=0)).encode(): "ts: 0 is more than",
        json.dumps(dict(base, region="atlantis")).encode(): "region: 'atlantis' is not a known region",
        json.dumps({k: v for k, v in base.items() if k != "seq"}).encode(): "seq: missing",
        json.dumps(dict(base, extra=1)).encode(): "extra: not a field",
        json.dumps({"readings": [base] * (s.gateway_max_batch + 1)}).encode(): "at most",
        json.dumps([base]).encode(): "expected a reading",
    }
    second = readings(home, region, range(20, 40), start_ms=first[-1]["ts"] + 1000)
    d = Device(s, device, token)
    topic = telemetry_topic(home)
    assert d.publish(topic, json.dumps({"readings": first[:10]})) == 0
    for r in first[10:]:
        assert d.publish(topic, json.dumps(r)) == 0
    for payload in bad:
        assert d.publish(topic, payload) == 0
    assert d.publish(topic, json.dumps({"readings": second})) == 0
    d.close()

    got = telemetry_for(s, {home})
    assert sorted(r["seq"] for r in got) == list(range(40))
    by_seq = {r["seq"]: r for r in got}
    assert all(by_seq[r["seq"]]["ts"] == r["ts"] for r in first + second)
    assert got[0]["_headers"]["source"] == b"gateway-mqtt"
    dead = dead_letters_for(s, {home})
    assert len(dead) == len(bad)
    for d_, (payload, reason) in zip(dead, bad.items()):
        assert d_["value"] == payload and d_["reason"] == "invalid" and reason in d_["error"], (payload[:60], d_)
    wait_for(lambda: stored(s, {home})[0] >= 40, 120, what="MQTT readings in ClickHouse")
    time.sleep(2)
    assert stored(s, {home}) == (40, 40)
