"""Device registry and `ecoretrofit devices`: tokens shown once, stored only as hashes,
one home per device, revocation effective without restarting the reader."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from ecoretrofit.config import Settings
from gateway.broker_auth import BRIDGE_USER, write_broker_auth
from gateway.devices import DeviceError, token_sha256, verify_mosquitto_hash
from gateway.registry import DeviceRegistry, registry_path


def _settings(tmp_path) -> Settings:
    return Settings.from_env({"ECO_DATA_DIR": str(tmp_path), "ECO_PORT_BASE": "39000"})


def test_add_lookup_revoke(tmp_path):
    reg = DeviceRegistry(tmp_path / "devices.sqlite")
    a = reg.add("H000001", "meter-a")
    b = reg.add("H000002", "meter-b")
    assert reg.by_token_hash(token_sha256(a.token)).home_id == "H000001"
    assert reg.by_token_hash(token_sha256(b.token)).device_id == "meter-b"
    assert reg.by_token_hash(token_sha256("not-a-token")) is None
    # the clear token is nowhere in the file
    raw = (tmp_path / "devices.sqlite").read_bytes() + (tmp_path / "devices.sqlite-wal").read_bytes()
    assert a.token.encode() not in raw and b.token.encode() not in raw
    assert stat.S_IMODE(os.stat(tmp_path / "devices.sqlite").st_mode) == 0o600

    other_reader = DeviceRegistry(tmp_path / "devices.sqlite")  # e.g. the running gateway
    assert other_reader.by_token_hash(token_sha256(a.token)) is not None
    reg.revoke("meter-a")
    assert other_reader.by_token_hash(token_sha256(a.token)) is None
    assert other_reader.by_token_hash(token_sha256(b.token)) is not None
    with pytest.raises(DeviceError, match="already revoked"):
        reg.revoke("meter-a")
    with pytest.raises(DeviceError, match="no device"):
        reg.revoke("nobody")
    with pytest.raises(DeviceError, match="already exists"):
        reg.add("H000003", "meter-b")


@pytest.mark.parametrize("home,device", [
    ("H1", "ok"), ("", "ok"), ("H000001", "has:colon"), ("H000001", "has space"), ("H000001", "x" * 65),
    ("H000001", ""), ("H000001\nuser eco-bridge", "ok"),
])
def test_bad_ids_refused(tmp_path, home, device):
    reg = DeviceRegistry(tmp_path / "devices.sqlite")
    with pytest.raises(DeviceError):
        reg.add(home, device)
    assert reg.all() == []


def test_broker_files_follow_registry(tmp_path):
    settings = _settings(tmp_path)
    reg = DeviceRegistry(registry_path(settings))
    a = reg.add("H000001", "meter-a")
    reg.add("H000002", "meter-b")
    reg.revoke("meter-b")
    passwd, acl = write_broker_auth(settings, reg)
    users = dict(line.split(":", 1) for line in passwd.read_text().splitlines())
    assert set(users) == {BRIDGE_USER, "meter-a"}
    assert verify_mosquitto_hash(a.token, users["meter-a"])
    assert "topic write eco/H000001/telemetry" in acl.read_text()
    assert "H000002" not in acl.read_text()
    for path in (passwd, acl):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_cli_shows_token_once_and_revokes(tmp_path):
    settings = _settings(tmp_path)
    env = {**os.environ, **settings.env()}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "ecoretrofit.cli", "devices", *args],
                              env=env, capture_output=True, text=True, timeout=60)

    added = cli("add", "--home", "H000042", "--device", "meter-42")
    assert added.returncode == 0, added.stderr
    token = next(line.split()[1] for line in added.stdout.splitlines() if line.startswith("token"))
    reader = DeviceRegistry(registry_path(settings))
    assert reader.by_token_hash(token_sha256(token)).home_id == "H000042"

    listed = cli("list")
    assert "meter-42" in listed.stdout and token not in listed.stdout

    assert cli("add", "--home", "bogus").returncode == 1
    assert cli("revoke", "meter-42").returncode == 0
    assert reader.by_token_hash(token_sha256(token)) is None
    assert "meter-42" not in cli("list").stdout
    assert "meter-42" in cli("list", "--all").stdout
    assert cli("revoke", "meter-42").returncode == 1
