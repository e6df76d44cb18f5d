"""Avro encoding of a whole batch of records given as columns.

The simulator produces a tick of readings as numpy columns; encoding them one dict at
a time through fastavro costs more than the Kafka client itself (``ecoretrofit bench
--only produce`` and the README give the figures).
For flat record schemas (string, int/long, double, boolean fields, and unions of
``null`` with one of those) the Avro binary encoding is simple enough to build from
the columns directly: doubles are 8 little-endian bytes, longs zig-zag varints,
strings a length varint and UTF-8 bytes, a union its branch index then the value.
Every field is encoded for all rows at once into a byte matrix (a run of doubles is
one block; a varint, a string or a null uses a prefix of its row, marked by a mask),
the matrices side by side are compressed by their masks into one buffer, and that is
cut into one ``bytes`` per row: no Python work per field and row.

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
        self._header = np.frombuffer(self.header, dtype=np.uint8)
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
        # Read-only string arrays seen before (the simulator's home ids and regions are
        # the same array every tick): their encoding, computed once.
        self._frozen: dict[str, tuple[np.ndarray, _Piece]] = {}

    def encode(self, columns: Mapping[str, Sequence], rows: np.ndarray | None = None) -> list[bytes]:
        """One Confluent-framed Avro message per row (``rows``: indices to keep).

        Each field (or run of doubles) becomes a byte matrix, one row per message,
        with a mask of the bytes that belong to the message (a varint or a null takes
        fewer bytes than the widest value); the matrices side by side, compressed by
        the mask, are the messages end to end, cut into ``bytes`` once per row.

        A string column given as a read-only numpy array (the simulator's home ids and
        regions) is encoded once and reused while the same array comes back: it must
        not change after it was made read-only."""
        pieces: list[_Piece] = []
        fields = self.fields
        i = 0
        while i < len(fields):
            name, t, nullable = fields[i]
            if t == "double":  # a run of doubles of the same nullability: one block
                j = i
                while j < len(fields) and fields[j][1] == "double" and fields[j][2] == nullable:
                    j += 1
                block = np.column_stack([_select(np.asarray(columns[f[0]], dtype="<f8"), rows)
                                         for f in fields[i:j]]).astype("<f8", copy=False)
                pieces.append(_nullable_doubles(block) if nullable else
                              (block.view(np.uint8).reshape(len(block), 8 * (j - i)), None, None))
                i = j
                continue
            if t == "string" and not nullable:
                pieces.append(self._strings(name, columns[name], rows))
            elif t in ("long", "int") and not nullable:
                pieces.append(_varints(np.asarray(_select(columns[name], rows), dtype=np.int64)))
            elif t == "boolean" and not nullable:
                pieces.append((np.asarray(_select(columns[name], rows), dtype=bool).astype(np.uint8)[:, None],
                               None, None))
            else:  # nullable strings, longs and booleans: per value (None is null)
                col = _select(columns[name], rows)
                values = col.tolist() if isinstance(col, np.ndarray) else list(col)
                if t == "boolean":
                    parts = [b"\x00" if v is None else (b"\x02\x01" if v else b"\x02\x00") for v in values]
                else:
                    cache = self._caches[name]
                    parts = [b"\x00" if v is None else b"\x02" + cache[v] for v in values]
                pieces.append(_padded(parts))
            i += 1
        n = len(pieces[0][0]) if pieces else (0 if rows is None else len(rows))
        pieces.insert(0, (np.broadcast_to(self._header, (n, len(self._header))), None, None))
        return _assemble(pieces)

    def _strings(self, name: str, col, rows) -> _Piece:
        frozen = self._frozen.get(name)
        if frozen is None or frozen[0] is not col:
            cache = self._caches[name]
            if not (isinstance(col, np.ndarray) and not col.flags.writeable):
                values = _select(col, rows)
                return _padded([cache[v] for v in (values.tolist() if isinstance(values, np.ndarray) else values)])
            frozen = self._frozen[name] = (col, _padded([cache[v] for v in col.tolist()]))
        matrix, mask, lengths = frozen[1]
        if rows is None or mask is None:
            return (matrix, mask, lengths) if rows is None else (matrix[rows], None, None)
        return matrix[rows], mask[rows], lengths[rows]


#: A field's bytes for every row: a (rows, width) uint8 matrix, the mask of the bytes
#: each row uses and their count per row (both None when every row uses all of them).
_Piece = tuple[np.ndarray, "np.ndarray | None", "np.ndarray | None"]


def _padded(parts: list[bytes]) -> _Piece:
    """Byte strings, left-aligned in a matrix as wide as the longest."""
    lengths = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
    width = int(lengths.max(initial=0))
    if (lengths == width).all():
        return np.frombuffer(b"".join(parts), dtype=np.uint8).reshape(len(parts), width), None, None
    mask = np.arange(width) < lengths[:, None]
    matrix = np.zeros((len(parts), width), dtype=np.uint8)
    matrix[mask] = np.frombuffer(b"".join(parts), dtype=np.uint8)
    return matrix, mask, lengths


def _varints(values: np.ndarray) -> _Piece:
    """Zig-zag varints of an int64 array."""
    v = values.astype(np.int64, copy=False)
    if len(v) and v.min() == v.max():  # one value (a tick's timestamp or seq): encode it once
        one = np.frombuffer(zigzag_varint(int(v[0])), dtype=np.uint8)
        return np.broadcast_to(one, (len(v), len(one))), None, None
    z = (v.view(np.uint64) << np.uint64(1)) ^ (v >> np.int64(63)).view(np.uint64)
    lengths = np.ones(len(z), dtype=np.int64)
    for k in range(1, 10):
        more = z >= np.uint64(1 << (7 * k))
        if not more.any():
            break
        lengths += more
    width = int(lengths.max(initial=1))
    matrix = ((z[:, None] >> np.arange(0, 7 * width, 7, dtype=np.uint64)) & np.uint64(0x7F)).astype(np.uint8)
    matrix[np.arange(width) < (lengths - 1)[:, None]] |= 0x80  # continuation bits
    if (lengths == width).all():
        return matrix, None, None
    return matrix, np.arange(width) < lengths[:, None], lengths


def _nullable_doubles(block: np.ndarray) -> _Piece:
    """Fields ``["null", "double"]`` with NaN as null: per value, union branch 1
    (``\\x02``) and 8 bytes, or branch 0 (``\\x00``) alone."""
    n, k = block.shape
    null = np.isnan(block)
    framed = np.empty((n, k, 9), dtype=np.uint8)
    framed[:, :, 0] = 2
    framed[:, :, 1:] = block.view(np.uint8).reshape(n, k, 8)
    if not null.any():
        return framed.reshape(n, 9 * k), None, None
    framed[:, :, 0][null] = 0
    mask = np.ones((n, k, 9), dtype=bool)
    mask[:, :, 1:] = ~null[:, :, None]
    return framed.reshape(n, 9 * k), mask.reshape(n, 9 * k), 9 * k - 8 * np.count_nonzero(null, axis=1)


def _assemble(pieces: list[_Piece]) -> list[bytes]:
    """The pieces side by side, each row cut down to its mask, as one ``bytes`` per row."""
    matrix = np.hstack([m for m, _, _ in pieces])
    n, width = matrix.shape
    if all(mask is None for _, mask, _ in pieces):
        buf = matrix.tobytes()
        return [buf[k:k + width] for k in range(0, n * width, width)]
    keep = np.ones((n, width), dtype=bool)
    lengths = np.full(n, width, dtype=np.int64)
    at = 0
    for m, mask, used in pieces:
        w = m.shape[1]
        if mask is not None:
            keep[:, at:at + w] = mask
            lengths -= w - used
        at += w
    buf = matrix[keep].tobytes()
    ends = np.cumsum(lengths)
    return [buf[a:b] for a, b in zip((ends - lengths).tolist(), ends.tolist())]


def _select(col, rows):
    if rows is None:
        return col
    if isinstance(col, np.ndarray):
        return col[rows]
    return [col[k] for k in rows]
