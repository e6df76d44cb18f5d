"""The maintenance worker's checkpoint: one SQLite file (stdlib ``sqlite3``), never a
pickle. A row per tracked asset holds that asset's predictor state (its indicators and
the buffer of readings awaiting a label: nearly all of the state) as zlib-compressed
JSON (level 1: about as fast to write as plain JSON, half its size); one ``meta`` row
holds everything else (per-type models, offsets, open orders, episodes, half-filled
windows). ``save`` writes the meta row and only the assets that
changed since the last save, in one transaction: a checkpoint is whole or absent, and
between two closes of the 6-hour health windows (most checkpoints of a live worker)
no asset row is written at all.

>>> import tempfile, pathlib
>>> store = CheckpointStore(pathlib.Path(tempfile.mkdtemp()) / "state.sqlite")
>>> store.save({"offsets": {"t": {"0": 5}}}, {"A-CP": ("circulation_pump", {"n": 3}),
...                                           "B-CP": ("circulation_pump", None)})
>>> store.save({"offsets": {"t": {"0": 9}}}, {"B-CP": ("circulation_pump", {"n": 1})})
>>> meta, assets = store.load()
>>> meta["offsets"], sorted(assets), assets["B-CP"]
({'t': {'0': 9}}, ['A-CP', 'B-CP'], ('circulation_pump', {'n': 1}))
>>> store.save({}, {"A-CP": ("circulation_pump", None)})  # None: the asset's state is gone
>>> sorted(store.load()[1]), store.last_assets
(['B-CP'], 1)
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from pathlib import Path

FORMAT = 2


def _pack(obj) -> bytes:
    return zlib.compress(json.dumps(obj, separators=(",", ":")).encode(), 1)


def _unpack(blob: bytes):
    return json.loads(zlib.decompress(blob))


class CheckpointStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.last_bytes = 0  # bytes of the rows the last save wrote
        self.last_assets = 0  # asset rows it wrote or deleted
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB NOT NULL)")
            self.db.execute("CREATE TABLE IF NOT EXISTS assets (asset_id TEXT PRIMARY KEY, asset_type TEXT NOT NULL, "
                            "state BLOB NOT NULL)")
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"{self.path}: not a maintenance checkpoint ({exc}); an older JSON checkpoint "
                             f"cannot be resumed: start from a new file") from None

    def empty(self) -> bool:
        return self.db.execute("SELECT count() FROM meta").fetchone()[0] == 0

    def save(self, meta: dict, assets: dict[str, tuple[str, dict | None]]) -> None:
        """Write ``meta`` and the given assets' states (``None``: delete the row), atomically."""
        rows = [(aid, t, _pack(st)) for aid, (t, st) in assets.items() if st is not None]
        gone = [(aid,) for aid, (_t, st) in assets.items() if st is None]
        blob = _pack({**meta, "format": FORMAT})
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('state', ?)", (blob,))
            db.executemany("INSERT OR REPLACE INTO assets VALUES (?, ?, ?)", rows)
            db.executemany("DELETE FROM assets WHERE asset_id = ?", gone)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.last_bytes = len(blob) + sum(len(r[2]) for r in rows)
        self.last_assets = len(assets)

    def load(self) -> tuple[dict, dict[str, tuple[str, dict]]]:
        """(meta, {asset: (type, state)}) of the last save; ({}, {}) if there was none."""
        row = self.db.execute("SELECT v FROM meta WHERE k = 'state'").fetchone()
        if row is None:
            return {}, {}
        meta = _unpack(row[0])
        if meta.get("format") != FORMAT:
            raise ValueError(f"{self.path}: checkpoint format {meta.get('format')!r}, expected {FORMAT}")
        assets = {aid: (t, _unpack(blob)) for aid, t, blob in self.db.execute("SELECT asset_id, asset_type, state "
                                                                             "FROM assets")}
        return meta, assets

    def close(self) -> None:
        self.db.close()
