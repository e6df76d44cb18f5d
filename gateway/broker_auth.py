"""Mosquitto's password and ACL files, written from the device registry into the data
directory (``mqtt/``, mode 600), plus the bridge's own MQTT credentials.

Mosquitto 2.0.11 re-reads both files on SIGHUP without dropping connections (measured),
so ``devices add|revoke`` rewrites them and signals the running broker: a revocation
takes effect without a restart.
"""

from __future__ import annotations

import fcntl
import secrets
import time
from pathlib import Path
from typing import Callable

from ecoretrofit.config import create_private_once, write_private
from gateway.devices import acl_file, mosquitto_hash, password_file
from gateway.registry import DeviceRegistry, registry_path

BRIDGE_USER = "eco-bridge"


def mqtt_dir(settings) -> Path:
    return Path(settings.data_dir) / "mqtt"


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, text)  # atomic: the broker never reads a half-written file


def bridge_password(settings) -> str:
    """``ECO_MQTT_BRIDGE_PASSWORD`` if set, else generated once per data directory."""
    if settings.mqtt_bridge_password:
        return settings.mqtt_bridge_password
    return create_private_once(mqtt_dir(settings) / "bridge.secret", secrets.token_urlsafe(32)).strip()


def write_broker_auth(settings, registry: DeviceRegistry | None = None,
                      reload: Callable[[], object] | None = None, settle_s: float = 1.0) -> tuple[Path, Path]:
    """(password file, ACL file), rewritten from the registry's active devices; then
    ``reload()`` (the broker re-reads them on SIGHUP), if given.

    All of it happens under a lock on the directory, held ``settle_s`` after the
    reload: two processes adding devices at once (device simulators starting side by
    side) otherwise let the one that read the registry first write last, or signal the
    broker while it was still re-reading for the other (Mosquitto then reloads once,
    not twice), and some devices were refused ("Not authorized") for good."""
    registry = registry or DeviceRegistry(registry_path(settings))
    d = mqtt_dir(settings)
    d.mkdir(parents=True, exist_ok=True)
    passwd, acl = d / "passwd", d / "acl"
    with open(d / ".auth.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        devices = registry.all()
        _write_private(passwd, password_file(devices, {BRIDGE_USER: mosquitto_hash(bridge_password(settings))}))
        _write_private(acl, acl_file(devices, BRIDGE_USER))
        if reload is not None and reload():
            time.sleep(settle_s)  # the broker re-reads its files asynchronously
    return passwd, acl
