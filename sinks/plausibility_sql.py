"""The plausibility contract of schemas/plausibility.py as ClickHouse SQL (pure: text in,
text out).

The warehouse enforces the same contract as the stream processor, at its own edge: the
telemetry materialized views store a reading only when :func:`reasons_sql` is empty and
send it to ``dead_letters`` with those reasons otherwise. Nothing here is written by
hand twice: ranges, the home-id pattern, the time window and the regions all come from
:mod:`schemas.plausibility` and ``Settings.known_regions``; tests/test_plausibility_sql.py
runs this SQL in ClickHouse beside :func:`schemas.plausibility.check` on the same
readings and requires the same verdict, field by field.

>>> sql = reasons_sql(("north", "south"), now_ms="1700000000000")
>>> "match(home_id, '^H[0-9]{6,9}$')" in sql and "region NOT IN ('north', 'south')" in sql
True
>>> literal("it's")
"'it\\\\'s'"
"""

from __future__ import annotations

from typing import Iterable

from schemas import plausibility as contract

# "Now" in milliseconds, evaluated by ClickHouse for each inserted block.
NOW_MS = "toUnixTimestamp64Milli(now64(3, 'UTC'))"
# What a reason quotes of a string value at most (a 10 kB home id makes a short reason).
_QUOTED_CHARS = contract.MAX_STRING_CHARS - 3


def literal(value: str) -> str:
    """A ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _number(x: float) -> str:
    """A float literal ClickHouse parses back to the same double."""
    return repr(float(x))


def _quoted(column: str) -> str:
    """concat() arguments quoting the start of a string column."""
    return f"'\\'', leftUTF8({column}, {_QUOTED_CHARS}), '\\''"


def _reason(condition: str, *parts: str) -> str:
    return f"if({condition}, concat({', '.join(parts)}), '')"


def reasons_sql(regions: Iterable[str], now_ms: str = NOW_MS, max_past_ms: int = contract.MAX_PAST_MS,
                max_future_ms: int = contract.MAX_FUTURE_MS) -> str:
    """A ClickHouse expression of type Array(String): every reason the reading in the
    current row is implausible, in the field order of :func:`schemas.plausibility.check`
    (each reason starts with ``<field>:``); ``[]`` for a plausible reading.

    Expects the columns of TelemetryReading (``ts`` a DateTime64(3), the water metrics
    Nullable). ``now_ms`` is an SQL expression of the current time in milliseconds.
    """
    regions = tuple(regions)
    if not regions:
        raise ValueError("at least one region is needed")
    ts_ms = "toUnixTimestamp64Milli(ts)"
    checks = [
        _reason(f"NOT match(home_id, {literal(contract.HOME_ID_PATTERN)})",
                "'home_id: ', " + _quoted("home_id"),
                literal(f" does not match {contract.HOME_ID_PATTERN}")),
        _reason(f"region NOT IN ({', '.join(literal(r) for r in regions)})",
                "'region: ', " + _quoted("region"),
                "' is not a known region'"),
        _reason(f"{ts_ms} > {now_ms} + {int(max_future_ms)}",
                f"'ts: ', toString({ts_ms})", literal(f" is more than {max_future_ms // 60_000} minutes after now")),
        _reason(f"{ts_ms} < {now_ms} - {int(max_past_ms)}",
                f"'ts: ', toString({ts_ms})", literal(f" is more than {max_past_ms // 86_400_000} days before now")),
        _reason(f"seq < 0 OR seq > {contract.SEQ_MAX}", "'seq: ', toString(seq)", "' is outside [0, 2**53]'"),
    ]
    for name, rng in contract.METRIC_RANGES.items():
        value = f"assumeNotNull({name})" if name in contract.NULLABLE else name
        present = f"{name} IS NOT NULL AND " if name in contract.NULLABLE else ""
        checks.append(_reason(f"{present}NOT isFinite({value})",
                              f"'{name}: ', toString({value})", "' is not a finite number'"))
        checks.append(_reason(
            f"{present}isFinite({value}) AND ({value} < {_number(rng.lo)} OR {value} > {_number(rng.hi)})",
            f"'{name}: ', toString({value})", literal(f" is outside [{rng.lo:g}, {rng.hi:g}]")))
    return "arrayFilter(r -> r != '', [\n        " + ",\n        ".join(checks) + "])"


def work_order_reasons_sql(regions: Iterable[str], now_ms: str = NOW_MS) -> str:
    """Array(String) of every reason the WorkOrder in the current row is implausible, in
    the field order of :func:`schemas.plausibility.check_work_order`; ``[]`` if fine.

    Expects the columns of WorkOrder (times as DateTime64(3), the optional ones Nullable).
    """
    regions = tuple(regions)
    if not regions:
        raise ValueError("at least one region is needed")

    def text(name: str, optional: bool = False) -> str:
        value = f"assumeNotNull({name})" if optional else name
        check = _reason(f"NOT match({value}, {literal(contract.TEXT_PATTERN)})", f"'{name}: ', " + _quoted(value),
                        "' is not 1 to 64 printable ASCII characters'")
        return f"if({name} IS NULL, '', {check})" if optional else check

    def time(name: str, *more: str) -> str:
        """The time-window reasons of a Nullable time column; ``more``: further
        (condition, reason) arguments of the same multiIf, tried after the window."""
        ms = f"toUnixTimestamp64Milli(assumeNotNull({name}))"
        years = contract.ORDER_MAX_PAST_MS // (365 * 86_400_000)
        return (f"if({name} IS NULL, '', multiIf("
                f"{ms} > {now_ms} + {contract.MAX_FUTURE_MS}, concat('{name}: ', toString({ms}), "
                f"{literal(f' is more than {contract.MAX_FUTURE_MS // 60_000} minutes after now')}), "
                f"{ms} < {now_ms} - {contract.ORDER_MAX_PAST_MS}, concat('{name}: ', toString({ms}), "
                f"{literal(f' is more than {years} years before now')}), {''.join(m + ', ' for m in more)}''))")

    def one_of(name: str, allowed: tuple[str, ...]) -> str:
        return _reason(f"{name} NOT IN ({', '.join(literal(a) for a in allowed)})", f"'{name}: ', " + _quoted(name),
                       literal(f" is not one of {', '.join(allowed)}"))

    home_ok = f"match(home_id, {literal(contract.HOME_ID_PATTERN)})"
    closed_ms = "toUnixTimestamp64Milli(assumeNotNull(closed_ms))"
    checks = [
        text("order_id"),
        f"multiIf(NOT match(asset_id, {literal(contract.ASSET_ID_PATTERN)}), concat('asset_id: ', {_quoted('asset_id')}, "
        f"{literal(f' does not match {contract.ASSET_ID_PATTERN}')}), "
        f"{home_ok} AND NOT startsWith(asset_id, concat(home_id, '-')), concat('asset_id: ', {_quoted('asset_id')}, "
        f"' is not a component of home ', {_quoted('home_id')}), '')",
        _reason(f"NOT {home_ok}", "'home_id: ', " + _quoted("home_id"),
                literal(f" does not match {contract.HOME_ID_PATTERN}")),
        _reason(f"region NOT IN ({', '.join(literal(r) for r in regions)})", "'region: ', " + _quoted("region"),
                "' is not a known region'"),
        text("asset_type"),
        text("model"),
        one_of("kind", contract.WORK_ORDER_KINDS),
        text("source"),
        time("opened_ms"),
        one_of("status", contract.WORK_ORDER_STATUSES),
        f"if(closed_ms IS NULL, if(status = 'closed', 'closed_ms: missing on a closed order', ''), "
        + time("closed_ms", f"{closed_ms} < toUnixTimestamp64Milli(opened_ms)",
               f"concat('closed_ms: ', toString({closed_ms}), ' is before opened_ms')") + ")",
        time("failure_ms"),
        *(text(name, optional=True) for name in contract.ORDER_CODE_FIELDS),
        _reason(f"version < 1 OR version > {contract.SEQ_MAX}", "'version: ', toString(version)",
                "' is outside [1, 2**53]'"),
    ]
    return "arrayFilter(r -> r != '', [\n        " + ",\n        ".join(checks) + "])"


def dead_letter_error_sql(reasons: str) -> str:
    """The ``error`` of a dead letter for an implausible reading: the contract's version
    and every reason, so a reader knows which rules rejected it."""
    return f"concat('implausible (contract v{contract.VERSION}): ', arrayStringConcat({reasons}, '; '))"


def dead_letter_raw_sql(raw: str) -> str:
    """The payload a dead letter keeps of ``raw`` (an SQL String expression): at most
    ``DEAD_LETTER_MAX_BYTES``, as the processor and the sink keep."""
    return f"substring({raw}, 1, {contract.DEAD_LETTER_MAX_BYTES})"


def dead_letter_cut_error_sql(raw: str, error: str) -> str:
    """``error`` plus the truncation note of :func:`schemas.plausibility.truncation_note`
    when ``raw`` is longer than a dead letter keeps.

    >>> print(dead_letter_cut_error_sql("r", "e"))
    if(length(r) > 65536, concat(e, ' (raw payload truncated to the first 65536 of ', toString(length(r)), ' bytes)'), e)
    """
    before, after = contract.TRUNCATION_NOTE.format(limit=contract.DEAD_LETTER_MAX_BYTES, size="{size}").split("{size}")
    limit = contract.DEAD_LETTER_MAX_BYTES
    return f"if(length({raw}) > {limit}, concat({error}, {literal(before)}, toString(length({raw})), {literal(after)}), {error})"
