"""What the stream processor accepts, and what it sends to the dead letters instead.

Pure code (no Kafka): the Faust agent calls ``screen`` on every message and
``dead_letter`` for every refusal. The rules are the plausibility contract of
``schemas.plausibility``, applied in this order so that no expensive or unbounded
work is done on a message that is already refused:

1. size: a message over ``MAX_MESSAGE_BYTES`` is refused before it is decoded;
2. Avro: it must decode against the registered schemas (``DecodeError``);
3. plausibility: ``plausibility.check``; every reason it fails is kept.

>>> from ecoretrofit.serde import DecodeError
>>> def decode(raw):
...     return {"home_id": "H000001", "region": "north", "ts": 1_700_000_000_000, "seq": 1,
...             "indoor_temp_c": 20.0, "outdoor_temp_c": 5.0, "power_w": float("nan"),
...             "energy_kwh": 1.0, "voltage_v": -3.0, "vibration_mm_s": 0.1}
>>> try:
...     screen(b"x" * 5_000_000, decode, now_ms=1_700_000_000_000, regions=("north",))
... except DecodeError as exc:
...     print(exc.reason, "|", exc)
oversized | message of 5000000 bytes exceeds 4096 bytes
>>> try:
...     screen(b"\\0" * 100, decode, now_ms=1_700_000_000_000, regions=("north",))
... except DecodeError as exc:
...     print(exc.reason, "|", exc)
implausible | power_w: nan is not a finite number; voltage_v: -3.0 is outside [0, 500]
>>> key, value, headers = dead_letter(b"k" * 10, b"v" * 2_000_000, DecodeError("too big", "oversized"),
...                                   "eco.telemetry.v1", 3, 42)
>>> len(value), headers["truncated"], headers["original_bytes"]
(65536, b'true', b'2000000')
>>> headers["error"].decode()
'too big (raw payload truncated to the first 65536 of 2000000 bytes)'

A tombstone without a key still makes a record (Kafka needs a key or a value):
>>> key, value, headers = dead_letter(None, None, DecodeError("no payload", "truncated"), "eco.telemetry.v1", 0, 7)
>>> key, value, headers["null_value"]
(None, b'', b'true')
"""

from __future__ import annotations

from typing import Callable, Iterable

from ecoretrofit.serde import DecodeError
from schemas import plausibility

# Header values are bounded too: an error message can quote parts of the message.
MAX_ERROR_CHARS = 2048


def screen(value: bytes | None, decode: Callable[[bytes], dict], *, now_ms: int, regions: Iterable[str]) -> dict:
    """The decoded reading, or ``DecodeError`` (``reason``: ``oversized``, a decode
    reason, or ``implausible`` with every failed rule in the message)."""
    return _screened(value, decode, plausibility.check, now_ms, regions)


def screen_work_order(value: bytes | None, decode: Callable[[bytes], dict], *, now_ms: int,
                      regions: Iterable[str]) -> dict:
    """The decoded work order, or ``DecodeError`` as :func:`screen` raises it, by the
    work-order rules of the contract (``plausibility.check_work_order``)."""
    return _screened(value, decode, plausibility.check_work_order, now_ms, regions)


def _screened(value: bytes | None, decode: Callable[[bytes], dict], check: Callable[..., list[str]],
              now_ms: int, regions: Iterable[str]) -> dict:
    """Size, then Avro, then ``check`` of the contract, in that order."""
    size = 0 if value is None else len(value)
    if size > plausibility.MAX_MESSAGE_BYTES:
        raise DecodeError(f"message of {size} bytes exceeds {plausibility.MAX_MESSAGE_BYTES} bytes", "oversized")
    record = decode(value)
    reasons = check(record, now_ms=now_ms, regions=regions)
    if reasons:
        raise DecodeError("; ".join(reasons), "implausible")
    return record


def dead_letter(
    key: bytes | None, value: bytes | None, error: DecodeError, topic: str, partition: int, offset: int,
    refused_by: str | None = None,
) -> tuple[bytes | None, bytes | None, dict[str, bytes]]:
    """(key, value, headers) of the dead-letter record for a refused message: the raw
    payload cut to ``DEAD_LETTER_MAX_BYTES`` (the headers say so and give the original
    size), the reason label and the full reason text. ``refused_by`` names the consumer
    that refused it: two consumers of one topic (the anomaly processor and the
    maintenance worker both read telemetry) each dead-letter a bad message once."""
    limit = plausibility.DEAD_LETTER_MAX_BYTES
    size = 0 if value is None else len(value)
    message = str(error)
    headers = {
        "source_topic": topic.encode(),
        "source_partition": str(partition).encode(),
        "source_offset": str(offset).encode(),
        "reason": error.reason.encode(),
        "contract_version": str(plausibility.VERSION).encode(),
    }
    if refused_by is not None:
        headers["refused_by"] = refused_by.encode()
    if value is None:
        # The original was a tombstone. A record needs a key or a value (a keyless
        # tombstone cannot be sent at all: it crashed the worker), and a dead letter
        # that is itself a tombstone reads as a deletion: send it empty, and say so.
        value = b""
        headers["null_value"] = b"true"
    elif size > limit:
        value = value[:limit]
        message += plausibility.truncation_note(size)
        headers["truncated"] = b"true"
        headers["original_bytes"] = str(size).encode()
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 3] + "..."
    headers["error"] = message.encode()
    if key is not None and len(key) > plausibility.MAX_STRING_CHARS * 4:
        key = key[: plausibility.MAX_STRING_CHARS * 4]
        headers["key_truncated"] = b"true"
    return key, value, headers
