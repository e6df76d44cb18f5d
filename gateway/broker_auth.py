"""Mosquitto's password and ACL files, written from the device registry into the data
directory (``mqtt/``, mode 600), plus the bridge's own MQTT credentials.

Mosquitto 2.0.11 re-reads both files on SIGHUP without dropping connections (measured),
so ``devices add|revoke`` rewrites them and signals the running broker: a revocation
takes effect without a restart.
"""

from __future__ import annotations

import secrets
from pathlib import Path

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


def write_broker_auth(settings, registry: DeviceRegistry | None = None) -> tuple[Path, Path]:
    """(password file, ACL file), rewritten from the registry's active devices."""
    registry = registry or DeviceRegistry(registry_path(settings))
    devices = registry.all()
    d = mqtt_dir(settings)
    passwd, acl = d / "passwd", d / "acl"
    _write_private(passwd, password_file(devices, {BRIDGE_USER: mosquitto_hash(bridge_password(settings))}))
    _write_private(acl, acl_file(devices, BRIDGE_USER))
    return passwd, acl
