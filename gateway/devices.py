"""Device identities and their tokens: pure, no I/O.

A device belongs to exactly one home. Its token is 256 random bits, shown once when the
device is added; only hashes of it are kept:

- ``token_sha256``: what the HTTPS gateway looks a bearer token up by. An unsalted fast
  hash is enough for a 256-bit random secret (nobody can enumerate 2**256 candidates),
  and it makes the lookup one index probe instead of a scan.
- ``mqtt_hash``: the same token in Mosquitto's own password-file format (PBKDF2-SHA512,
  ``$7$iterations$salt$hash``), so the broker checks MQTT logins itself.

The Mosquitto password and ACL files are derived from the active devices here, so the
two transports can never disagree on who may write what.

>>> d = new_device("H000042", "meter-1", now_ms=0)
>>> d.device.home_id, d.device.active, len(d.token) >= 43
('H000042', True, True)
>>> d.device.token_sha256 == token_sha256(d.token)
True
>>> verify_mosquitto_hash(d.token, d.device.mqtt_hash), verify_mosquitto_hash("guess", d.device.mqtt_hash)
(True, False)
>>> print(acl_file([d.device], bridge_user="eco-bridge"), end="")
# generated from the device registry: do not edit
user eco-bridge
topic read eco/+/telemetry
<BLANKLINE>
user meter-1
topic write eco/H000042/telemetry
<BLANKLINE>
>>> telemetry_topic("H000042"), home_of_topic("eco/H000042/telemetry"), home_of_topic("eco/x/y/telemetry")
('eco/H000042/telemetry', 'H000042', None)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Iterable

from schemas.plausibility import HOME_ID_PATTERN

# Device ids go into Mosquitto's password file (``user:hash``) and ACL file (``user ID``):
# no colon, no whitespace, bounded.
DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)
_HOME_ID = re.compile(HOME_ID_PATTERN)

# The one MQTT topic a device may publish to, and what the bridge subscribes to.
TOPIC_PREFIX = "eco/"
TOPIC_SUFFIX = "/telemetry"
TOPIC_FILTER = TOPIC_PREFIX + "+" + TOPIC_SUFFIX

TOKEN_BYTES = 32  # 256 bits
# Mosquitto's own default for mosquitto_passwd: the broker pays this per CONNECT only.
MOSQUITTO_PBKDF2_ITERATIONS = 101
_SALT_BYTES = 12


class DeviceError(ValueError):
    """A device id or home id that cannot be registered; the message says why."""


@dataclass(frozen=True)
class Device:
    device_id: str
    home_id: str
    token_sha256: str
    mqtt_hash: str
    created_ms: int
    revoked_ms: int | None = None

    @property
    def active(self) -> bool:
        return self.revoked_ms is None


@dataclass(frozen=True)
class NewDevice:
    device: Device
    token: str  # the only time the clear token exists


def telemetry_topic(home_id: str) -> str:
    return f"{TOPIC_PREFIX}{home_id}{TOPIC_SUFFIX}"


def home_of_topic(topic: str) -> str | None:
    """The home a telemetry topic belongs to, or None if it is not one."""
    if not (topic.startswith(TOPIC_PREFIX) and topic.endswith(TOPIC_SUFFIX)):
        return None
    home = topic[len(TOPIC_PREFIX):-len(TOPIC_SUFFIX)]
    return home if _HOME_ID.match(home) else None


def check_ids(home_id: str, device_id: str) -> None:
    if not _HOME_ID.match(home_id or ""):
        raise DeviceError(f"home id {home_id!r} does not match {HOME_ID_PATTERN}")
    if not _DEVICE_ID.match(device_id or ""):
        raise DeviceError(f"device id {device_id!r} does not match {DEVICE_ID_PATTERN}")


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def mosquitto_hash(token: str, salt: bytes | None = None, iterations: int = MOSQUITTO_PBKDF2_ITERATIONS) -> str:
    """The token in Mosquitto 2.0's password-file format (what ``mosquitto_passwd``
    writes): ``$7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512>``."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", token.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_mosquitto_hash(token: str, stored: str) -> bool:
    try:
        _, kind, iterations, salt, digest = stored.split("$")
        if kind != "7":
            return False
        got = hashlib.pbkdf2_hmac("sha512", token.encode(), base64.b64decode(salt), int(iterations))
        return hmac.compare_digest(got, base64.b64decode(digest))
    except ValueError:
        return False


def new_device(home_id: str, device_id: str, *, now_ms: int) -> NewDevice:
    check_ids(home_id, device_id)
    token = new_token()
    device = Device(device_id, home_id, token_sha256(token), mosquitto_hash(token), now_ms)
    return NewDevice(device, token)


def password_file(devices: Iterable[Device], extra: dict[str, str] | None = None) -> str:
    """Mosquitto ``password_file`` text: one ``user:hash`` line per active device, plus
    ``extra`` service users (the bridge) given as ``{user: mosquitto_hash}``."""
    lines = [f"{user}:{h}" for user, h in (extra or {}).items()]
    lines += [f"{d.device_id}:{d.mqtt_hash}" for d in devices if d.active]
    return "".join(line + "\n" for line in lines)


def acl_file(devices: Iterable[Device], bridge_user: str) -> str:
    """Mosquitto ``acl_file`` text: the bridge reads every home's telemetry topic; each
    active device may write its own home's topic and nothing else (no read either)."""
    out = ["# generated from the device registry: do not edit", f"user {bridge_user}", f"topic read {TOPIC_FILTER}", ""]
    for d in devices:
        if d.active:
            out += [f"user {d.device_id}", f"topic write {telemetry_topic(d.home_id)}", ""]
    return "\n".join(out) + "\n"
