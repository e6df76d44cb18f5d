"""Avro encoding of a whole batch of records given as columns.

The simulator produces a tick of readings as numpy columns; encoding them one dict at
a time through fastavro costs more than the Kafka client itself (``ecoretrofit bench
--only produce`` and the README give the figures).
For flat record schemas (string, int/long, double, boolean fields, and unions of
``null`` with one of those) the Avro binary encoding is simple enough to build from
the columns directly: doubles are 8 little-endian bytes, longs zig-zag varints,
strings a length varint and UTF-8 bytes, a union its branch index then the value.
Runs of plain double fields become one numpy ``tobytes()`` block per batch.

The output is byte-identical to fastavro's ``schemaless_writer`` (tested on random
readings), prefixed with the Confluent header.

>>> import schemas, numpy as np
>>> enc = ColumnarEncoder(schemas.schema_dict("anomaly_event"), schema_id=3)
>>> cols = {"event_id": ["e1"], "home_id": ["H1"], "region": ["north"], "metric": ["power_w"],
...         "ts": np.array([5]), "detected_at": np.array([6]), "value": np.array([1.5]),
...         "score": np.array([1.0]), "detector": ["zscore"], "window_mean": np.array([0.0]),
...         "window_std": np.array([1.0]), "window_count": np.array([30]),
...         "zscore": np.array([np.nan]), "severity": ["critical"]}
>>> from ecoretrofit.serde import AvroEncoder
>>> enc.encode(cols)[0] == AvroEncoder(schemas.schema_dict("anomaly_event"), 3).encode(
...     {k: (v[0].item() if hasattr(v[0], "item") else v[0]) for k, v in cols.items()} | {"zscore": None})
True
"""

from __future__ import annotations

import json
import struct
from typing import Mapping, Sequence

import numpy as np

_PLAIN = {"string", "long", "int", "double", "boolean"}


class UnsupportedSchema(ValueError):
    pass


def zigzag_varint(value: int) -> bytes:
    """Avro's encoding of an int or long."""
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class _Cache(dict):
    """Encoded bytes per distinct value: ids, regions, timestamps and sequence
    numbers repeat across a batch, so most rows are a dictionary hit."""

    def __init__(self, encode):
        super().__init__()
        self._encode = encode

    def __missing__(self, key):
        value = self[key] = self._encode(key)
        if len(self) > 200_000:  # bound memory for high-cardinality columns
            self.clear()
        return value


def _string(s: str) -> bytes:
    b = s.encode()
    return zigzag_varint(len(b)) + b


class ColumnarEncoder:
    def __init__(self, schema: dict | str, schema_id: int):
        schema = json.loads(schema) if isinstance(schema, str) else schema
        if schema.get("type") != "record":
            raise UnsupportedSchema("only record schemas")
        self.header = struct.pack(">bI", 0, schema_id)
        self.fields: list[tuple[str, str, bool]] = []  # (name, base type, nullable)
        for f in schema["fields"]:
            t = f["type"]
            nullable = False
            if isinstance(t, list):
                if len(t) != 2 or t[0] != "null":
                    raise UnsupportedSchema(f"{f['name']}: only [\"null\", T] unions")
                nullable, t = True, t[1]
            if isinstance(t, dict):
                t = t["type"]  # logical types: encoded as their base type
            if t not in _PLAIN:
                raise UnsupportedSchema(f"{f['name']}: type {t!r}")
            self.fields.append((f["name"], t, nullable))
        self._caches = {name: _Cache(_string if t == "string" else zigzag_varint)
                        for name, t, _ in self.fields if t in ("string", "long", "int")}
        self._run_caches: dict[tuple[str, ...], _Cache] = {}

    def encode(self, columns: Mapping[str, Sequence], rows: np.ndarray | None = None) -> list[bytes]:
        """One Confluent-framed Avro message per row (``rows``: indices to keep)."""
        parts: list[list[bytes]] = []
        i = 0
        fields = self.fields
        while i < len(fields):
            name, t, nullable = fields[i]
            if t == "double" and not nullable:
                j = i
                while j < len(fields) and fields[j][1] == "double" and not fields[j][2]:
                    j += 1
                parts.append(self._double_block([columns[f[0]] for f in fields[i:j]], rows))
                i = j
                continue
            if t in ("string", "long", "int") and not nullable:
                # A run of plain strings and longs is encoded as one piece per distinct
                # combination: (home_id, region) repeats per home, (ts, seq) per tick,
                # so most rows are a single dictionary hit for the whole run.
                j = i
                while j < len(fields) and fields[j][1] in ("string", "long", "int") and not fields[j][2]:
                    j += 1
                parts.append(self._cached_run([f[0] for f in fields[i:j]], columns, rows))
                i = j
                continue
            if t == "double":  # nullable doubles, NaN meaning null: fuse the run
                j = i
                while j < len(fields) and fields[j][1] == "double" and fields[j][2]:
                    j += 1
                parts.append(self._nullable_double_run([columns[f[0]] for f in fields[i:j]], rows))
                i = j
                continue
            col = _select(columns[name], rows)
            if t == "boolean":
                parts.append([b"\x01" if v else b"\x00" for v in col] if not nullable else
                             [b"\x00" if v is None else (b"\x02\x01" if v else b"\x02\x00") for v in col])
            else:
                cache = self._caches[name]
                values = col.tolist() if isinstance(col, np.ndarray) else list(col)
                parts.append([b"\x00" if v is None else b"\x02" + cache[v] for v in values])
            i += 1
        header = self.header
        join = b"".join
        return [join((header, *row)) for row in zip(*parts)]

    def _cached_run(self, names: list[str], columns: Mapping[str, Sequence], rows) -> list[bytes]:
        cols = [_select(columns[n], rows) for n in names]
        cols = [c.tolist() if isinstance(c, np.ndarray) else list(c) for c in cols]
        if len(cols) == 1:
            cache = self._caches[names[0]]
            return [cache[v] for v in cols[0]]
        run_cache = self._run_caches.get(tuple(names))
        if run_cache is None:
            single = [self._caches[n] for n in names]
            run_cache = self._run_caches[tuple(names)] = _Cache(
                lambda key: b"".join(c[v] for c, v in zip(single, key)))
        return [run_cache[key] for key in zip(*cols)]

    @staticmethod
    def _double_block(cols: list, rows) -> list[bytes]:
        block = np.column_stack([_select(np.asarray(c, dtype="<f8"), rows) for c in cols]).astype("<f8")
        width = 8 * block.shape[1]
        buf = block.tobytes()
        return [buf[k:k + width] for k in range(0, len(buf), width)]

    @staticmethod
    def _nullable_double_run(cols: list, rows) -> list[bytes]:
        """Per row: union branch 1 (``\\x02``) and 8 bytes per present value, branch 0
        (``\\x00``) per null. Rows with all values present (a home with a water system)
        or all null (one without) are one slice or one constant."""
        a = np.column_stack([_select(np.asarray(c, dtype="<f8"), rows) for c in cols]).astype("<f8")
        n, k = a.shape
        null = np.isnan(a)
        framed = np.empty((n, k, 9), dtype=np.uint8)
        framed[:, :, 0] = 2
        framed[:, :, 1:] = a.view(np.uint8).reshape(n, k, 8)
        buf = framed.tobytes()
        width = 9 * k
        all_null = b"\x00" * k
        out = []
        for r, (none, some) in enumerate(zip(null.all(axis=1).tolist(), null.any(axis=1).tolist())):
            if not some:
                out.append(buf[r * width:(r + 1) * width])
            elif none:
                out.append(all_null)
            else:  # mixed: field by field
                out.append(b"".join(b"\x00" if null[r, f] else buf[r * width + 9 * f:r * width + 9 * f + 9]
                                    for f in range(k)))
        return out


def _select(col, rows):
    if rows is None:
        return col
    if isinstance(col, np.ndarray):
        return col[rows]
    return [col[k] for k in rows]
