"""The HTTPS device gateway against the real stack, over real TLS: who gets in, what
gets refused with which status and reason, and that what was acknowledged is in Kafka
and ClickHouse exactly once with its original timestamps."""

from __future__ import annotations

import json
import ssl
import time

import httpx
import pytest

from conftest import spawn, stop
from gateway.registry import DeviceRegistry, registry_path
from gateway.tls import tls_files
from gateway_helpers import fresh_home, readings, stored, telemetry_for
from helpers import wait_for


@pytest.fixture(scope="module")
def gateway(stack_settings):
    s = stack_settings
    proc = spawn(s, "gateway", "serve", log_name="gateway-https")
    ca = str(tls_files(s).ca)

    def up():
        assert proc.running(), "gateway exited at start-up; see logs/gateway-https.log"
        try:
            return httpx.get(f"{s.gateway_url}/healthz", verify=ssl.create_default_context(cafile=ca), timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 60, what="the HTTPS gateway")
    client = httpx.Client(base_url=s.gateway_url, verify=ssl.create_default_context(cafile=ca), timeout=30)
    yield client
    client.close()
    stop(proc)


@pytest.fixture
def device(stack_settings):
    home = fresh_home()
    created = DeviceRegistry(registry_path(stack_settings)).add(home, f"dev-{home}")
    return home, created.token


def post(client, token, body, **kw):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post("/v1/telemetry", content=content, headers={**headers, "Content-Type": "application/json"}, **kw)


def test_tokens_refused_and_revocation_is_immediate(stack_settings, gateway, device):
    home, token = device
    region = stack_settings.regions[0]
    good = {"readings": readings(home, region, [0])}
    assert post(gateway, None, good).status_code == 401
    assert post(gateway, "x" * 43, good).status_code == 401
    r = gateway.post("/v1/telemetry", content=json.dumps(good), headers={"Authorization": f"Basic {token}"})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    in_url = gateway.post(f"/v1/telemetry?access_token={token}", content=json.dumps(good))
    assert in_url.status_code == 400 and "URL" in in_url.json()["error"]
    assert post(gateway, token, good).status_code == 200
    DeviceRegistry(registry_path(stack_settings)).revoke(f"dev-{home}")
    again = post(gateway, token, {"readings": readings(home, region, [1])})
    assert again.status_code == 401 and again.json()["error"] == "unknown or revoked token"


def test_plaintext_http_refused(stack_settings, gateway):
    with pytest.raises(httpx.HTTPError):
        httpx.get(stack_settings.gateway_url.replace("https://", "http://") + "/healthz", timeout=5)
    with pytest.raises(httpx.ConnectError):  # and a client that does not trust our CA refuses us
        httpx.get(f"{stack_settings.gateway_url}/healthz", timeout=5)


def test_another_homes_readings_forbidden(stack_settings, gateway, device):
    home, token = device
    other = fresh_home()
    r = post(gateway, token, {"readings": readings(other, stack_settings.regions[0], [0])})
    assert r.status_code == 403 and other in r.json()["errors"][0]
    assert telemetry_for(stack_settings, {other}, idle_s=2) == []


def test_body_too_large_and_rate(stack_settings, gateway, device):
    _, token = device
    big = b'{"readings": [' + b" " * (stack_settings.gateway_max_body_bytes + 10) + b"]}"
    assert post(gateway, token, big).status_code == 413
    statuses = [post(gateway, token, b"{}").status_code for _ in range(200)]
    assert 429 in statuses and 400 in statuses
    limited = post(gateway, token, b"{}")
    if limited.status_code == 429:
        assert int(limited.headers["retry-after"]) >= 1


def test_malformed_refused_good_around_them_stored_once(stack_settings, gateway, device):
    s = stack_settings
    home, token = device
    region = s.regions[0]
    time.sleep(2.5)  # let the rate bucket of other tests' devices not matter: this device is fresh anyway
    first = readings(home, region, range(0, 50))
    assert post(gateway, token, {"readings": first}).json() == {"accepted": 50, "duplicates": 0}

    base = readings(home, region, [50])[0]
    cases = {
        "not JSON": (b"{oops", "body: not JSON"),
        "a list": (b"[1, 2]", "body: expected a reading"),
        "empty batch": ({"readings": []}, "non-empty list"),
        "batch too large": ({"readings": [base] * (s.gateway_max_batch + 1)}, "at most"),
        "NaN": (json.dumps(dict(base, power_w=float("nan"))), "power_w: nan is not a finite number"),
        "infinity": (json.dumps(dict(base, voltage_v=float("inf"))), "voltage_v: inf is not a finite number"),
        "string for a number": (dict(base, indoor_temp_c="warm"), "indoor_temp_c: 'warm' is not a number"),
        "float seq": (dict(base, seq=1.5), "seq: 1.5 is not an integer"),
        "missing field": ({k: v for k, v in base.items() if k != "energy_kwh"}, "energy_kwh: missing"),
        "unknown field": (dict(base, colour="red"), "colour: not a field of TelemetryReading"),
        "out of range": (dict(base, power_w=1.7e308), "power_w: 1.7e+308 is outside"),
        "year 1900": (dict(base, ts=-2208988800000), "ts: -2208988800000 is more than"),
        "year 2100": (dict(base, ts=4102444800000), "ts: 4102444800000 is more than"),
        "unknown region": (dict(base, region="mars"), "region: 'mars' is not a known region"),
        "long home id": (dict(base, home_id="H" * 10_000), "home_id: 'HHHH"),
        "bool for a number": (dict(base, voltage_v=True), "voltage_v: True is not a number"),
        "not UTF-8": (b'{"home_id": "\xff\xfe"}', "body: not JSON"),
    }
    for name, (body, reason) in cases.items():
        r = post(gateway, token, body)
        assert r.status_code == 400, (name, r.status_code, r.text[:300])
        errors = r.json()["errors"]
        assert any(reason in e for e in errors), (name, errors)
    # every bad field of a reading is named at once
    many = post(gateway, token, dict(base, power_w=-1, voltage_v=-1, region="mars"))
    assert len(many.json()["errors"]) == 3

    second = readings(home, region, range(50, 100), start_ms=first[-1]["ts"] + 1000)
    assert post(gateway, token, {"readings": second}).json() == {"accepted": 50, "duplicates": 0}
    # a retried batch (reply lost) is acknowledged, not stored again
    assert post(gateway, token, {"readings": second}).json() == {"accepted": 0, "duplicates": 50}
    single = readings(home, region, [100], start_ms=second[-1]["ts"] + 1000)[0]
    assert post(gateway, token, single).json() == {"accepted": 1, "duplicates": 0}

    sent = first + second + [single]
    got = telemetry_for(s, {home})
    assert sorted(r["seq"] for r in got) == list(range(101))
    by_seq = {r["seq"]: r for r in got}
    assert all(by_seq[r["seq"]]["ts"] == r["ts"] for r in sent)  # original timestamps
    assert all(by_seq[r["seq"]]["power_w"] == pytest.approx(r["power_w"]) for r in sent)
    assert by_seq[0]["_headers"]["source"] == b"gateway-https"
    rows = wait_for(lambda: (lambda c: c if c[0] >= 101 else None)(stored(s, {home})), 120,
                    what="the gateway's readings in ClickHouse")
    time.sleep(2)
    assert stored(s, {home}) == (101, 101)
