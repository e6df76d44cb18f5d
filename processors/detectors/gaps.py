"""Missing readings: seq jumps and silent homes.

A meter dropout leaves no value to score: the readings are simply not there. Two
signs give it away, and ``GapDetector`` watches both, per home:

- **seq jump**: every reading carries a per-home ``seq`` that advances by one per
  reading slot, lost or not. A reading whose ``seq`` is more than one past the
  previous one proves ``seq - previous - 1`` readings were lost (noticed when the home
  speaks again).
- **silence**: a home whose last reading is older than ``silence_intervals`` expected
  intervals at ``check(now_ms)`` time has stopped reporting (noticed while it lasts).
  Each silence is reported once; the next reading ends it.

A seq jump larger than the elapsed time allows (more than twice the readings that fit
between the two timestamps, plus two) is not a dropout but a counter that is broken
or was reset: the detector starts over from it and reports only the readings the
elapsed time proves missing, never "a dropout of 10^15 readings".

It is not a univariate ``Detector`` (it never sees a value) and is not in the detector
registry. ``now_ms`` is whatever clock the caller trusts: event time of the newest
reading seen (a watermark) in a replay, wall-clock time live.

>>> g = GapDetector(interval_ms=1000)
>>> g.observe("H000001", 0, 0), g.observe("H000001", 1, 1000)
(None, None)
>>> g.check(now_ms=3000)                 # 2 s quiet: within 3 intervals
[]
>>> [(x.home_id, x.kind, x.last_ts_ms) for x in g.check(now_ms=5000)]
[('H000001', 'silence', 1000)]
>>> g.check(now_ms=6000)                 # reported once per silence
[]
>>> g.silent()
['H000001']
>>> gap = g.observe("H000001", 6, 6000)  # seq 2..5 never arrived
>>> gap.kind, gap.missing, gap.detected_ms, g.silent()
('seq_jump', 4, 6000, [])
>>> g.observe("H000001", 6, 6000) is None  # a duplicate is ignored
True
>>> g.observe("H000001", 10**15, 7000) is None   # implausible jump, no time for a loss
True
>>> g.observe("H000001", 10**15 + 1, 8000) is None   # counting on from the new base
True
>>> g.observe("H000001", 10**18, 12000).missing  # implausible, but 3 s went missing
3
>>> GapDetector.from_state(g.to_state()).to_state() == g.to_state()
True
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Gap:
    """Readings that did not arrive."""

    home_id: str
    kind: str  # "seq_jump" or "silence"
    last_ts_ms: int  # event time of the last reading before the gap
    detected_ms: int  # the resuming reading's ts (seq_jump) or check time (silence)
    missing: int | None  # readings lost, from seq (seq_jump only)


class GapDetector:
    """Per-home last ``seq`` and ``ts``; flags seq jumps and silent homes."""

    def __init__(self, interval_ms: int, silence_intervals: float = 3.0):
        if interval_ms <= 0:
            raise ValueError("interval_ms must be positive")
        if silence_intervals <= 1:
            raise ValueError("silence_intervals must exceed 1")
        self.interval_ms = int(interval_ms)
        self.silence_ms = silence_intervals * interval_ms
        self._last: dict[str, tuple[int, int]] = {}  # home -> (seq, ts)
        self._silent: set[str] = set()

    def is_behind(self, home_id: str, seq: int, ts_ms: int) -> bool:
        """Whether a reading is one this home has moved past: neither its ``seq`` nor
        its time is newer than the newest seen (a duplicate or a late reading)."""
        prev = self._last.get(home_id)
        return prev is not None and seq <= prev[0] and ts_ms <= prev[1]

    def observe(self, home_id: str, seq: int, ts_ms: int) -> Gap | None:
        """Record one reading; a ``Gap`` if its ``seq`` skipped some."""
        self._silent.discard(home_id)
        if self.is_behind(home_id, seq, ts_ms):
            return None
        prev = self._last.get(home_id)
        self._last[home_id] = (seq, ts_ms)
        if prev is None or seq <= prev[0]:  # the first, or the source restarted its counter
            return None
        pseq, pts = prev
        missing = seq - pseq - 1
        if missing <= 0:
            return None
        by_time = max(0, round((ts_ms - pts) / self.interval_ms) - 1)
        if missing > 2 * by_time + 2:  # implausible: trust the clock, not the counter
            missing = by_time
        return Gap(home_id, "seq_jump", pts, ts_ms, missing) if missing else None

    def check(self, now_ms: int) -> list[Gap]:
        """Homes silent for more than ``silence_intervals`` intervals at ``now_ms``
        (each silence once)."""
        limit = now_ms - self.silence_ms
        out = []
        for home, (_seq, ts) in self._last.items():
            if ts < limit and home not in self._silent:
                self._silent.add(home)
                out.append(Gap(home, "silence", ts, now_ms, None))
        return out

    def silent(self) -> list[str]:
        """Homes currently flagged silent, sorted."""
        return sorted(self._silent)

    def __len__(self) -> int:
        return len(self._last)

    def to_state(self) -> dict:
        """Plain data for checkpoints (see ``processors.detectors.state``)."""
        return {"interval_ms": self.interval_ms, "silence_intervals": self.silence_ms / self.interval_ms,
                "last": {h: [s, t] for h, (s, t) in self._last.items()}, "silent": sorted(self._silent)}

    @classmethod
    def from_state(cls, state: dict) -> "GapDetector":
        from processors.detectors.state import integer, number

        g = cls(integer(state["interval_ms"], 1), number(state["silence_intervals"], 1.0, 1e6))
        last, silent = state["last"], state["silent"]
        if not isinstance(last, dict) or not isinstance(silent, list):
            raise TypeError("last must be a dict and silent a list")
        for home, pair in last.items():
            seq, ts = pair
            g._last[str(home)] = (integer(seq, 0), integer(ts, -(2**62), 2**62))
        g._silent = {h for h in silent if h in g._last}
        return g
