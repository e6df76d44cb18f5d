"""Per-home scoring: one detector per metric, episode logic, anomaly events.

Pure code: the Faust agent, the evaluation commands and the benchmarks all use it.

>>> model = HomeModel(ScoringConfig(detector="zscore", detector_params={"window": 60, "warmup": 20}))
>>> base = {"home_id": "H1", "region": "north", "indoor_temp_c": 21.0, "power_w": 400.0,
...         "voltage_v": 230.0, "vibration_mm_s": 0.5}
>>> events = []
>>> for i in range(60):
...     events += model.update({**base, "ts": i * 1000, "power_w": 400.0 + (i % 7)})
>>> events
[]
>>> spike = model.update({**base, "ts": 61_000, "power_w": 5000.0})
>>> [(e["metric"], e["severity"]) for e in spike]
[('power_w', 'critical')]
>>> again = model.update({**base, "ts": 62_000, "power_w": 5000.0})   # same episode: held back
>>> again
[]
>>> model.update({**base, "ts": 63_000, "indoor_temp_c": 21.3})   # below the sensor's noise floor
[]
>>> model.update({**base, "ts": 63_000 + 3_600_000})   # an hour later: models start afresh
[]
>>> model.resets, model.detectors["power_w"].evidence().count
(1, 1)
>>> gap = model.update({**base, "ts": 3_700_000, "seq": 10}) + model.update({**base, "ts": 3_710_000, "seq": 20})
>>> [(e["metric"], e["detector"], e["value"]) for e in gap]
[('seq', 'gap', 9.0)]

A copy of a reading (a producer's retry) is scored and learned once, even behind
newer readings:

>>> model.update({**base, "ts": 3_710_000, "seq": 20, "power_w": 9000.0}), model.repeats
([], 1)
>>> _ = model.update({**base, "ts": 3_711_000, "seq": 21})
>>> model.update({**base, "ts": 3_710_000, "seq": 20, "power_w": 9000.0}), model.repeats
([], 2)

A home that stops reporting is reported while it is silent (``check_silence`` with
the caller's clock), once per silence:

>>> [(e["metric"], e["detector"], e["value"]) for e in model.check_silence(now_ms=3_715_000)]
[('seq', 'gap', 3.0)]
>>> model.check_silence(now_ms=3_720_000), model.silent
([], True)

Checkpoints are JSON, never pickles:

>>> blob = model.to_bytes()
>>> blob[:1], HomeModel.restore(blob, model.config)[0].to_bytes() == blob
(b'{', True)
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from processors.detectors import load_state, make
from processors.detectors.gaps import GapDetector
from processors.detectors.state import dump, integer
from processors.detectors.zscore import z_to_score
from schemas import SCORED_METRICS


# The smallest deviation from the window mean that can count as an anomaly, per
# metric, in the metric's unit: about the sensor's resolution and noise floor. A
# smooth signal can have a window deviation so small that a change nobody would act
# on scores like a fault; the floor keeps such readings quiet whatever the detector.
MIN_DEVIATION = {
    "indoor_temp_c": 0.5,
    "power_w": 150.0,
    "voltage_v": 4.0,
    "vibration_mm_s": 0.3,
    "water_flow_lpm": 1.0,
    "water_temp_c": 1.0,
    "uv_intensity_mw_cm2": 1.0,
    "pump_pressure_bar": 0.2,
}


@dataclass(frozen=True)
class ScoringConfig:
    detector: str = "zscore"
    detector_params: dict = field(default_factory=dict)
    # Scores are in [0, 1]; thresholds are given as z so they read naturally
    # (|z| >= 4 is an anomaly, |z| >= 8 a critical one) and mapped through the same
    # function the z-score detector uses, so every detector shares one scale.
    threshold_z: float = 4.0
    critical_z: float = 8.0
    # An episode: anomalies on one home and metric closer together than this are one
    # event (the first, and any escalation to critical), not one per reading.
    cooldown_ms: int = 60_000
    # Detectors run beside the main one on every metric, each catching what value
    # detectors cannot: "stuck" flags a noisy sensor repeating one value.
    extra_detectors: tuple[str, ...] = ("stuck",)
    # A model that has not seen its home for this long describes another time (or,
    # after a re-deployment, another home): start learning again.
    stale_after_ms: int = 15 * 60_000
    # How often a home reports, and how many intervals of silence make it "silent".
    reading_interval_ms: int = 1000
    silence_intervals: float = 3.0

    @property
    def threshold(self) -> float:
        return z_to_score(self.threshold_z)

    @property
    def critical(self) -> float:
        return z_to_score(self.critical_z)

    @classmethod
    def from_settings(cls, settings) -> "ScoringConfig":
        return cls(
            detector=settings.detector,
            detector_params=detector_params(settings),
            threshold_z=settings.zscore_threshold,
            critical_z=2 * settings.zscore_threshold,
            reading_interval_ms=settings.reading_interval_ms,
        )

    def as_json(self) -> dict:
        """The configuration as JSON values (every checkpoint carries it). Computed
        once: ``asdict`` and a JSON round trip cost more than the rest of a home's
        checkpoint. The dict is shared; do not change it."""
        cached = self.__dict__.get("_as_json")
        if cached is None:
            cached = json.loads(json.dumps(dataclasses.asdict(self)))
            object.__setattr__(self, "_as_json", cached)  # frozen: not a field, not compared
        return cached


def detector_params(settings) -> dict:
    """The window settings mean the same thing to both z-score variants: a window of
    N readings, or an exponential weighting whose half-life is N/2 readings (about
    the same memory). ``seasonal_ensemble`` opens its incidents at the processor's
    threshold. Other detectors keep their own, measured defaults."""
    if settings.detector == "zscore":
        return {"window": settings.zscore_window, "warmup": settings.zscore_warmup}
    if settings.detector == "ewzscore":
        return {"halflife": settings.zscore_window / 2, "warmup": settings.zscore_warmup}
    if settings.detector == "seasonal_ensemble":
        # its incident opens at the score the processor pages at, not at a lower one
        # that would hold back the next real page
        return {"alarm": z_to_score(settings.zscore_threshold)}
    return {}


# A checkpoint larger than this is refused on read (and never written): the models of
# one home are a few KB with the default detector, ~0.7 MB with "ensemble".
MAX_CHECKPOINT_BYTES = 900_000


class HomeModel:
    """The models of one home: a detector per metric, its sequence/silence detector
    and episode bookkeeping."""

    FORMAT = "eco.home-model"
    # Bump when the state layout changes: older checkpoints are then dropped (the home
    # re-learns in a warm-up) instead of crashing the worker after an upgrade.
    VERSION = 4  # 4: JSON state (3: pickles, refused since)

    def __init__(self, config: ScoringConfig):
        self.version = self.VERSION
        self.config = config
        self.detectors: dict = {}
        self.extras: dict = {}
        self.gaps = GapDetector(config.reading_interval_ms, config.silence_intervals)
        self.home_id: str | None = None
        self.region: str | None = None
        self._last_alarm_ms: dict[str, int] = {}
        self._last_severity: dict[str, str] = {}
        self.last_ts: int | None = None
        self.resets = 0
        self.repeats = 0  # copies and late readings, not scored (see update)

    @property
    def silent(self) -> bool:
        """Whether the home was reported silent and has not spoken since."""
        return bool(self.gaps.silent())

    def update(self, reading: dict, detected_at_ms: int | None = None) -> list[dict]:
        """Score then learn every metric of ``reading``; returns anomaly events."""
        cfg = self.config
        events = []
        ts = reading["ts"]
        if reading.get("seq") is not None and self.gaps.is_behind(reading["home_id"], reading["seq"], ts):
            # a reading the models have moved past: most often a copy of one already
            # scored, from a producer's retry (Kafka producers are not idempotent on the
            # local broker, ecoretrofit/config.py); scored once, and never backwards
            self.repeats += 1
            return []
        self.home_id, self.region = reading["home_id"], reading["region"]
        # Gaps first: a dropout long enough to make the models stale is still a dropout.
        events += self._check_seq(reading, detected_at_ms)
        if self.last_ts is not None and abs(ts - self.last_ts) > cfg.stale_after_ms:
            self.detectors.clear()
            self.extras.clear()
            self.resets += 1
        self.last_ts = ts
        for metric in SCORED_METRICS:
            x = reading.get(metric)
            if x is None or not math.isfinite(x):
                continue
            det = self.detectors.get(metric)
            if det is None:
                det = self.detectors[metric] = make(cfg.detector, **cfg.detector_params)
            score = det.score_one(x)
            learn = x
            if score >= cfg.threshold:
                ev = det.evidence()
                if abs(x - ev.mean) >= MIN_DEVIATION.get(metric, 0.0):
                    severity = "critical" if score >= cfg.critical else "warning"
                    if self._new_episode(metric, ts, severity):
                        events.append(_event(reading, metric, x, score, det, severity, detected_at_ms))
                # Learn an anomalous value only up to the threshold band: learning it
                # whole inflates the deviation so much that the next fault on this
                # home goes unseen for minutes. A lasting level shift still moves the
                # model, one clipped step at a time.
                band = cfg.threshold_z * ev.std
                learn = min(max(x, ev.mean - band), ev.mean + band)
            det.learn_one(learn)
            for name in cfg.extra_detectors:
                extra = self.extras.get((metric, name))
                if extra is None:
                    extra = self.extras[(metric, name)] = make(name)
                score = extra.score_one(x)
                if score >= cfg.threshold and self._new_episode(f"{metric}/{name}", ts, "warning"):
                    events.append(_event(reading, metric, x, score, extra, "warning", detected_at_ms))
                extra.learn_one(x)
        return events

    def _check_seq(self, reading: dict, detected_at_ms: int | None) -> list[dict]:
        """Meter dropout: a jump in the per-home sequence number proves readings were
        lost at the source (there is no value to score); ``GapDetector`` decides."""
        seq = reading.get("seq")
        if seq is None:
            return []
        gap = self.gaps.observe(reading["home_id"], seq, reading["ts"])
        if gap is None:
            return []
        return [self._gap_event(gap.detected_ms, float(gap.missing), "gap",
                                detected_at_ms if detected_at_ms is not None else reading["ts"])]

    def check_silence(self, now_ms: int, detected_at_ms: int | None = None) -> list[dict]:
        """An anomaly event if the home has been silent for ``silence_intervals``
        reading intervals at ``now_ms`` (once per silence; the next reading ends it)."""
        if self.home_id is None:
            return []
        out = []
        for gap in self.gaps.check(now_ms):
            missing = max(0.0, (now_ms - gap.last_ts_ms) / self.config.reading_interval_ms - 1)
            out.append(self._gap_event(now_ms, float(int(missing)), "silence",
                                       detected_at_ms if detected_at_ms is not None else now_ms))
        return out

    def _gap_event(self, ts: int, missing: float, kind: str, detected_at: int) -> dict:
        return {
            "event_id": f"{self.home_id}/seq/{ts}/{kind}",
            "home_id": self.home_id, "region": self.region, "metric": "seq",
            "ts": ts, "detected_at": detected_at,
            "value": missing, "score": 1.0, "detector": "gap",
            "window_mean": 1.0, "window_std": 0.0, "window_count": 0, "zscore": None,
            "severity": "critical" if missing >= 60 else "warning",
        }

    def _new_episode(self, metric: str, ts: int, severity: str) -> bool:
        last = self._last_alarm_ms.get(metric)
        escalated = severity == "critical" and self._last_severity.get(metric) != "critical"
        self._last_alarm_ms[metric] = ts
        if last is None or ts - last > self.config.cooldown_ms or escalated:
            self._last_severity[metric] = severity
            return True
        return False

    # ------------------------------------------------------------- checkpoints
    # JSON of each detector's explicit state (``to_state``/``from_state``): a
    # checkpoint is read from a topic, and loading it must not be able to run code.
    def to_state(self, extra: dict | None = None) -> dict:
        """The model as JSON values; ``extra`` (the caller's per-home state, e.g. open
        alerts) rides along and comes back from ``restore``."""
        return {
            "format": self.FORMAT, "version": self.VERSION, "config": self.config.as_json(),
            "home_id": self.home_id, "region": self.region, "last_ts": self.last_ts, "resets": self.resets,
            "detectors": {m: dump(d) for m, d in self.detectors.items()},
            "extras": [[m, dump(d)] for (m, _name), d in self.extras.items()],
            "last_alarm_ms": self._last_alarm_ms, "last_severity": self._last_severity,
            "gaps": self.gaps.to_state(), "extra": extra or {},
        }

    def to_bytes(self, extra: dict | None = None) -> bytes:
        return json.dumps(self.to_state(extra), separators=(",", ":"), allow_nan=True).encode()

    @classmethod
    def from_state(cls, state: dict, config: ScoringConfig) -> "HomeModel":
        """Rebuild from ``to_state``'s output, validating every field (it may be
        hostile); raises ``ValueError``/``TypeError``/``KeyError`` if it is not usable."""
        if not isinstance(state, dict) or state.get("format") != cls.FORMAT:
            raise ValueError("not a home-model checkpoint")
        if state.get("version") != cls.VERSION:
            raise ValueError(f"checkpoint version {state.get('version')!r} != {cls.VERSION}")
        if state.get("config") != config.as_json():
            raise ValueError("checkpoint made with another detector configuration")
        model = cls(config)
        for name in ("home_id", "region"):
            value = state[name]
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a string")
            setattr(model, name, value)
        model.last_ts = None if state["last_ts"] is None else integer(state["last_ts"], -(2**62), 2**62)
        model.resets = integer(state["resets"])
        allowed = set(SCORED_METRICS)
        detectors, extras = state["detectors"], state["extras"]
        if not isinstance(detectors, dict) or not isinstance(extras, list):
            raise TypeError("detectors must be a dict and extras a list")
        for metric, blob in detectors.items():
            if metric not in allowed:
                raise ValueError(f"unknown metric {metric!r}")
            model.detectors[metric] = load_state(blob)
        for metric, blob in extras:
            if metric not in allowed:
                raise ValueError(f"unknown metric {metric!r}")
            det = load_state(blob)
            if det.name not in config.extra_detectors:
                raise ValueError(f"{det.name!r} is not an extra detector of this configuration")
            model.extras[(metric, det.name)] = det
        for name in ("last_alarm_ms", "last_severity"):
            value = state[name]
            if not isinstance(value, dict) or len(value) > 4 * len(allowed) * (1 + len(config.extra_detectors)):
                raise TypeError(f"{name} must be a small dict")
        model._last_alarm_ms = {str(k): integer(v, -(2**62), 2**62) for k, v in state["last_alarm_ms"].items()}
        model._last_severity = {str(k): str(v) for k, v in state["last_severity"].items()}
        model.gaps = GapDetector.from_state(state["gaps"])
        if len(model.gaps) > 1:
            raise ValueError("a home model tracks one home")
        return model

    @classmethod
    def restore(cls, data: bytes | None, config: ScoringConfig) -> tuple["HomeModel", dict, str | None]:
        """The checkpointed model and its ``extra`` if usable with ``config``; else a
        fresh model, ``{}`` and the reason the checkpoint was not used. Never raises
        and never executes anything from ``data``: it is parsed as JSON only."""
        if not data:
            return cls(config), {}, None
        if not isinstance(data, (bytes, bytearray)) or len(data) > MAX_CHECKPOINT_BYTES:
            return cls(config), {}, f"unusable checkpoint ({type(data).__name__} of {len(data)} bytes)"
        try:
            state = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            head = bytes(data[:2])
            kind = "a pickle (refused: pickles can run code)" if head[:1] == b"\x80" else "not JSON"
            return cls(config), {}, f"unreadable checkpoint: {kind} ({type(exc).__name__})"
        try:
            model = cls.from_state(state, config)
            extra = state.get("extra") or {}
            if not isinstance(extra, dict):
                raise TypeError("extra must be a dict")
        except (ValueError, TypeError, KeyError, IndexError, OverflowError, MemoryError) as exc:
            return cls(config), {}, f"unusable checkpoint ({type(exc).__name__}: {exc})"
        return model, extra, None


def _event(reading: dict, metric: str, value: float, score: float, det, severity: str, detected_at_ms) -> dict:
    ev = det.evidence()
    z = (value - ev.mean) / ev.std if ev.std > 0 else None
    return {
        "event_id": f"{reading['home_id']}/{metric}/{reading['ts']}/{det.name}",
        "home_id": reading["home_id"],
        "region": reading["region"],
        "metric": metric,
        "ts": reading["ts"],
        "detected_at": detected_at_ms if detected_at_ms is not None else reading["ts"],
        "value": float(value),
        "score": float(score),
        "detector": det.name,
        "window_mean": float(ev.mean),
        "window_std": float(ev.std),
        "window_count": int(ev.count),
        "zscore": z,
        "severity": severity,
    }
