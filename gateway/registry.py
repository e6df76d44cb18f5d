"""The device registry's storage: one sqlite file in the data directory (mode 600).

Every lookup reads the file, so a revocation by ``ecoretrofit devices revoke`` (another
process) takes effect on the next request without restarting anything. A lookup is one
primary-key probe (the token's SHA-256), far below an HTTPS request's own cost.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from gateway.devices import Device, DeviceError, NewDevice, new_device

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id    TEXT PRIMARY KEY,
    home_id      TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    mqtt_hash    TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    revoked_ms   INTEGER
)
"""
_COLUMNS = "device_id, home_id, token_sha256, mqtt_hash, created_ms, revoked_ms"


def registry_path(settings) -> Path:
    return Path(settings.data_dir) / "devices.sqlite"


class DeviceRegistry:
    """Thread-safe: one sqlite connection per thread."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        if not self.path.exists():
            # created 600 before sqlite writes anything into it
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        with self._conn() as c:
            c.execute(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: survives a process crash
            self._local.conn = conn
        return conn

    def add(self, home_id: str, device_id: str) -> NewDevice:
        created = new_device(home_id, device_id, now_ms=int(time.time() * 1000))
        d = created.device
        try:
            self._conn().execute(
                f"INSERT INTO devices ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (d.device_id, d.home_id, d.token_sha256, d.mqtt_hash, d.created_ms, d.revoked_ms),
            )
        except sqlite3.IntegrityError:
            raise DeviceError(f"device {device_id!r} already exists") from None
        return created

    def revoke(self, device_id: str) -> Device:
        cur = self._conn().execute(
            "UPDATE devices SET revoked_ms = ? WHERE device_id = ? AND revoked_ms IS NULL",
            (int(time.time() * 1000), device_id),
        )
        device = self.get(device_id)
        if device is None:
            raise DeviceError(f"no device {device_id!r}")
        if cur.rowcount == 0:
            raise DeviceError(f"device {device_id!r} was already revoked")
        return device

    def get(self, device_id: str) -> Device | None:
        row = self._conn().execute(f"SELECT {_COLUMNS} FROM devices WHERE device_id = ?", (device_id,)).fetchone()
        return Device(*row) if row else None

    def by_token_hash(self, token_sha256: str) -> Device | None:
        """The *active* device with this token hash, or None (unknown or revoked)."""
        row = self._conn().execute(
            f"SELECT {_COLUMNS} FROM devices WHERE token_sha256 = ? AND revoked_ms IS NULL", (token_sha256,)
        ).fetchone()
        return Device(*row) if row else None

    def all(self) -> list[Device]:
        return [Device(*r) for r in self._conn().execute(f"SELECT {_COLUMNS} FROM devices ORDER BY device_id")]
