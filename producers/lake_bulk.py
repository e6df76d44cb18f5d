"""Simulated readings as lake objects, in bulk: ``CitySimulator.tick_columns`` ->
Arrow -> one Parquet object per (UTC date, region) per chunk of ticks.

What ``ecoretrofit demo --readings N`` writes to the lake's landing prefix, where the
lake ingester (sinks/lake_ingest.py) stores each object once. Pure: no I/O; the caller
puts the objects. Columns and types are the lake's (:func:`sinks.lake.arrow_schema`);
``kafka_partition`` is 0 and ``kafka_offset`` numbers the run's readings from 0, so every
reading of a run has its own lineage value.

>>> from producers.simulator import CitySimulator
>>> sim = CitySimulator(20, ["north", "south"], 1, 1_700_000_000_000)
>>> chunks = LakeChunks(sim, run_id="r1", ticks_per_chunk=3, limit=50)
>>> objs = [o for chunk in chunks for o in chunk]
>>> sum(t.num_rows for _, t in objs), chunks.produced
(50, 50)
>>> objs[0][0]
'landing/telemetry/date=2023-11-14/region=north/bulk-r1-000000.parquet'
>>> sorted(o for _, t in objs for o in t.column("kafka_offset").to_pylist()) == list(range(50))
True
"""

from __future__ import annotations

import io
from typing import Iterator

import numpy as np

from sinks.lake import DAY_MS, LANDING_PREFIX, arrow_schema, day_of, path_value


def object_key(prefix: str, day: str, region: str, run_id: str, chunk: int) -> str:
    """The key of one chunk's readings of one (date, region).

    >>> object_key("landing/telemetry", "2026-01-02", "a/b", "x", 7)
    'landing/telemetry/date=2026-01-02/region=a%2Fb/bulk-x-000007.parquet'
    """
    return f"{prefix.strip('/')}/date={day}/region={path_value(region)}/bulk-{run_id}-{chunk:06d}.parquet"


class LakeChunks:
    """Iterates chunks of ``ticks_per_chunk`` ticks; each chunk is a list of
    ``(key, pyarrow.Table)``, one per (date, region), until ``limit`` readings."""

    def __init__(self, sim, run_id: str, ticks_per_chunk: int, limit: int, prefix: str = LANDING_PREFIX):
        import pyarrow as pa

        if limit < 0 or ticks_per_chunk < 1:
            raise ValueError("limit must be >= 0 and ticks_per_chunk >= 1")
        self.sim = sim
        self.run_id = run_id
        self.ticks_per_chunk = int(ticks_per_chunk)
        self.limit = int(limit)
        self.prefix = prefix
        self.produced = 0
        self.chunks = 0
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.schema = arrow_schema()
        self._home_ids = pa.array(sim.home_ids, pa.string())
        self._regions = pa.array(list(sim.regions), pa.string())
        self._region_of_home = np.asarray(sim.region_idx, dtype=np.int64)

    def __iter__(self) -> Iterator[list[tuple[str, object]]]:
        while self.produced < self.limit:
            yield self._chunk()

    def _chunk(self) -> list[tuple[str, object]]:
        import pyarrow as pa

        n = self.sim.n
        ts_list, cols = [], []
        for _ in range(self.ticks_per_chunk):
            ts_list.append(self.sim.now_ms)
            cols.append(self.sim.tick_columns())
        keep = np.concatenate([c["emitted"] for c in cols])
        home = np.tile(np.arange(n, dtype=np.int64), len(cols))[keep]
        ts = np.repeat(np.asarray(ts_list, dtype=np.int64), n)[keep]
        left = self.limit - self.produced
        if len(home) > left:  # exactly ``limit`` readings in all
            keep_idx = slice(0, left)
            home, ts = home[keep_idx], ts[keep_idx]
        else:
            keep_idx = slice(None)
        rows = len(home)
        arrays = []
        for f in self.schema:
            name = f.name
            if name == "home_id":
                arrays.append(self._home_ids.take(pa.array(home)))
            elif name == "region":
                arrays.append(self._regions.take(pa.array(self._region_of_home[home])))
            elif name == "ts":
                arrays.append(pa.array(ts, pa.int64()).cast(f.type))
            elif name == "kafka_partition":
                arrays.append(pa.array(np.zeros(rows, dtype=np.uint32)))
            elif name == "kafka_offset":
                arrays.append(pa.array(np.arange(self.produced, self.produced + rows, dtype=np.uint64)))
            else:
                col = np.concatenate([c[name] for c in cols])[keep][keep_idx]
                # NaN marks an absent water reading: null in the file
                arrays.append(pa.array(col, f.type, from_pandas=f.nullable))
        table = pa.Table.from_arrays(arrays, schema=self.schema)
        if rows:
            self.first_ts = int(ts[0]) if self.first_ts is None else self.first_ts
            self.last_ts = int(ts[-1])
        # one object per (UTC date, region), rows in simulator order within each
        group = (ts // DAY_MS) * len(self.sim.regions) + self._region_of_home[home]
        out = []
        for g in np.unique(group):
            idx = np.flatnonzero(group == g)
            day, region = day_of(int(g // len(self.sim.regions)) * DAY_MS), self.sim.regions[int(g % len(self.sim.regions))]
            out.append((object_key(self.prefix, day, region, self.run_id, self.chunks),
                        table.take(pa.array(idx))))
        self.produced += rows
        self.chunks += 1
        return out


def parquet_bytes(table) -> bytes:
    """A table as a zstd Parquet object (the lake's compression)."""
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()
