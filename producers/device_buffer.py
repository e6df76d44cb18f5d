"""A simulated device's on-disk state: its credentials, its own ``seq`` counter and the
readings it has not yet seen acknowledged. One sqlite file (mode 600) holds a queue per
device, so everything survives a restart of the device process: readings made while
the link or the broker was down are sent afterwards, oldest first, with the
timestamps they were taken at.

>>> import tempfile, pathlib
>>> buf = DeviceBuffer(pathlib.Path(tempfile.mkdtemp()) / "devices.sqlite")
>>> [r["seq"] for r in buf.append([{"home_id": "H000001", "ts": 5}, {"home_id": "H000001", "ts": 6}])]
[0, 1]
>>> [r["ts"] for r in buf.oldest("H000001", 10)], buf.pending("H000001")
([5, 6], 2)
>>> buf.drop_through("H000001", 0); buf.pending("H000001"), buf.totals()
(1, {'generated': 2, 'buffered': 1})
>>> buf.drop_through_many({"H000001": 1}); buf.pending("H000001")
0
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    home      TEXT PRIMARY KEY,
    device_id TEXT,
    token     TEXT,
    next_seq  INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS buffer (
    home TEXT NOT NULL,
    seq  INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (home, seq)
) WITHOUT ROWID;
"""


class DeviceBuffer:
    """Thread-safe (one connection behind a lock): devices' links report from their
    own threads."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))  # it holds tokens
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: survives a process crash
        self._db.executescript(_SCHEMA)

    def credentials(self, home: str) -> tuple[str, str] | None:
        with self._lock:
            row = self._db.execute("SELECT device_id, token FROM devices WHERE home = ?", (home,)).fetchone()
        return (row[0], row[1]) if row and row[1] else None

    def save_credentials(self, home: str, device_id: str, token: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO devices (home, device_id, token) VALUES (?, ?, ?) "
                "ON CONFLICT (home) DO UPDATE SET device_id = excluded.device_id, token = excluded.token",
                (home, device_id, token))

    def append(self, readings: list[dict]) -> list[dict]:
        """Give each reading its device's next ``seq`` and queue it; one transaction
        for the whole tick. Returns the readings as queued."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                out = []
                for r in readings:
                    home = r["home_id"]
                    db.execute("INSERT INTO devices (home) VALUES (?) ON CONFLICT DO NOTHING", (home,))
                    (seq,) = db.execute("UPDATE devices SET next_seq = next_seq + 1 WHERE home = ? "
                                        "RETURNING next_seq - 1", (home,)).fetchone()
                    r = {**r, "seq": seq}
                    db.execute("INSERT INTO buffer (home, seq, body) VALUES (?, ?, ?)", (home, seq, json.dumps(r)))
                    out.append(r)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return out

    def oldest(self, home: str, limit: int) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT body FROM buffer WHERE home = ? ORDER BY seq LIMIT ?",
                                    (home, limit)).fetchall()
        return [json.loads(b) for (b,) in rows]

    def drop_through(self, home: str, seq: int) -> None:
        """Forget the readings up to ``seq``: they were acknowledged."""
        with self._lock:
            self._db.execute("DELETE FROM buffer WHERE home = ? AND seq <= ?", (home, seq))

    def drop_through_many(self, last_acked: dict[str, int]) -> None:
        """``drop_through`` for many devices, in one transaction."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("DELETE FROM buffer WHERE home = ? AND seq <= ?", last_acked.items())
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def pending(self, home: str) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM buffer WHERE home = ?", (home,)).fetchone()[0]

    def next_seq(self, home: str) -> int:
        """The seq ``home``'s next reading gets: it has generated 0..next_seq-1."""
        with self._lock:
            row = self._db.execute("SELECT next_seq FROM devices WHERE home = ?", (home,)).fetchone()
        return int(row[0]) if row else 0

    def totals(self) -> dict[str, int]:
        with self._lock:
            generated = self._db.execute("SELECT coalesce(sum(next_seq), 0) FROM devices").fetchone()[0]
            buffered = self._db.execute("SELECT count(*) FROM buffer").fetchone()[0]
        return {"generated": int(generated), "buffered": int(buffered)}

    def close(self) -> None:
        with self._lock:
            self._db.close()
