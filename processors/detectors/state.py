"""Detector state as plain data: what checkpoints hold instead of pickles.

A checkpoint is read back from a topic anyone with broker access can write, so it must
be data that cannot execute anything when loaded: JSON of each detector's explicit
state. Every detector implements two methods:

- ``to_state() -> dict``: its constructor parameters (``"params"``) and whatever it
  learned, as JSON values (str, int, float, bool, None, lists, dicts with str keys).
  Long runs of floats go through ``pack_floats`` (base64 of little-endian float64:
  ~11 characters per value instead of ~20, and NaN/inf survive).
- ``from_state(state) -> detector`` (a classmethod): rebuild it, *validating* what it
  reads. It is called on hostile input: anything malformed must raise (``ValueError``,
  ``TypeError``, ``KeyError``), never build a detector that fails later.

To add a detector: implement the two methods (``tests/test_detectors.py`` checks
every registered detector round-trips to identical scores through ``dump``/``load``).

>>> from processors.detectors import load_state, make
>>> d = make("ewzscore", halflife=10, warmup=5)
>>> for x in (1.0, 2.0, 3.0, 2.0, 1.0, 2.0):
...     d.learn_one(x)
>>> blob = dump(d)
>>> blob["name"], sorted(blob["state"])
('ewzscore', ['count', 'mean', 'params', 'var'])
>>> load_state(blob).score_one(9.0) == d.score_one(9.0)
True
>>> unpack_floats(pack_floats([1.5, float("inf")]))
[1.5, inf]
>>> load({"name": "os.system", "state": {}})
Traceback (most recent call last):
...
ValueError: unknown detector 'os.system' in checkpoint
"""

from __future__ import annotations

import base64
import math
import struct
from typing import Any, Mapping, Sequence

from processors.detectors.base import detector_class

# One detector's state must stay far below the producer's message limit (1 MB): a
# home's checkpoint holds a few detectors per metric.
MAX_FLOATS = 100_000


def pack_floats(values: Sequence[float]) -> str:
    """A float sequence as base64 of little-endian float64 (exact, compact)."""
    return base64.b64encode(struct.pack(f"<{len(values)}d", *values)).decode("ascii")


def unpack_floats(text: object, max_len: int = MAX_FLOATS) -> list[float]:
    """Inverse of ``pack_floats``; refuses anything that is not such a string."""
    if not isinstance(text, str) or len(text) > (max_len * 8 * 4) // 3 + 4:
        raise ValueError("packed floats: not a string of bounded length")
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    if len(raw) % 8:
        raise ValueError("packed floats: length is not a multiple of 8 bytes")
    return list(struct.unpack(f"<{len(raw) // 8}d", raw))


def number(value: object, lo: float = -math.inf, hi: float = math.inf) -> float:
    """A float from state (ints accepted), within ``[lo, hi]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    x = float(value)
    if not lo <= x <= hi and not (x != x and lo == -math.inf):
        raise ValueError(f"{x} outside [{lo}, {hi}]")
    return x


def integer(value: object, lo: int = 0, hi: int = 2**63) -> int:
    """An int from state, within ``[lo, hi]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{value} outside [{lo}, {hi}]")
    return value


def params_of(state: Mapping[str, Any], allowed: Sequence[str]) -> dict[str, Any]:
    """The ``params`` dict of a state, restricted to ``allowed`` keys of scalar values
    (the constructor validates the values themselves)."""
    params = state["params"]
    if not isinstance(params, dict):
        raise TypeError("params must be a dict")
    out = {}
    for k, v in params.items():
        if k not in allowed:
            raise ValueError(f"unexpected parameter {k!r}")
        if v is not None and not isinstance(v, (int, float, str, bool)):
            raise TypeError(f"parameter {k!r} is not a scalar")
        out[k] = v
    return out


def dump(det: Any) -> dict:
    """``{"name": ..., "state": ...}`` of a registered detector."""
    return {"name": det.name, "state": det.to_state()}


def load(blob: object) -> Any:
    """The detector a ``dump`` describes, rebuilt through its class's ``from_state``
    (its module must have been imported; ``processors.detectors.load_state`` imports
    every detector module first)."""

    if not isinstance(blob, dict) or not isinstance(blob.get("state"), dict):
        raise TypeError("a detector checkpoint is {'name': str, 'state': dict}")
    cls = detector_class(blob.get("name"))
    if cls is None:
        raise ValueError(f"unknown detector {blob.get('name')!r} in checkpoint")
    return cls.from_state(blob["state"])
