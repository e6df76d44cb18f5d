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
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, field

from processors.detectors import make
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
        )


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


class HomeModel:
    """The models of one home: a detector per metric plus episode bookkeeping."""

    # Bump when the pickled layout changes: older checkpoints are then dropped (the
    # home re-learns in a warm-up) instead of crashing the worker after an upgrade.
    VERSION = 3  # 3: anomalies learned clipped to the threshold band

    def __init__(self, config: ScoringConfig):
        self.version = self.VERSION
        self.config = config
        self.detectors: dict = {}
        self.extras: dict = {}
        self.last_seq: int | None = None
        self._last_alarm_ms: dict[str, int] = {}
        self._last_severity: dict[str, str] = {}
        self.last_ts: int | None = None
        self.resets = 0

    def update(self, reading: dict, detected_at_ms: int | None = None) -> list[dict]:
        """Score then learn every metric of ``reading``; returns anomaly events."""
        cfg = self.config
        events = []
        ts = reading["ts"]
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
        lost at the source (there is no value to score)."""
        seq = reading.get("seq")
        last, self.last_seq = self.last_seq, seq if seq is not None else self.last_seq
        if seq is None or last is None or seq <= last + 1:
            return []
        missing = seq - last - 1
        return [{
            "event_id": f"{reading['home_id']}/seq/{reading['ts']}/gap",
            "home_id": reading["home_id"], "region": reading["region"], "metric": "seq",
            "ts": reading["ts"],
            "detected_at": detected_at_ms if detected_at_ms is not None else reading["ts"],
            "value": float(missing), "score": 1.0, "detector": "gap",
            "window_mean": 1.0, "window_std": 0.0, "window_count": 0, "zscore": None,
            "severity": "critical" if missing >= 60 else "warning",
        }]

    def _new_episode(self, metric: str, ts: int, severity: str) -> bool:
        last = self._last_alarm_ms.get(metric)
        escalated = severity == "critical" and self._last_severity.get(metric) != "critical"
        self._last_alarm_ms[metric] = ts
        if last is None or ts - last > self.config.cooldown_ms or escalated:
            self._last_severity[metric] = severity
            return True
        return False

    # Checkpoints: the whole model as bytes (Faust Tables store bytes).
    def to_bytes(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def from_bytes(data: bytes) -> "HomeModel":
        model = pickle.loads(data)
        if not isinstance(model, HomeModel):
            raise TypeError(f"checkpoint holds {type(model).__name__}, not HomeModel")
        return model

    @classmethod
    def restore(cls, data: bytes | None, config: ScoringConfig) -> tuple["HomeModel", str | None]:
        """The checkpointed model if it is usable with ``config``, else a fresh one
        and the reason the checkpoint was not used."""
        if not data:
            return cls(config), None
        try:
            model = cls.from_bytes(data)
        except Exception as exc:  # unreadable: a class that moved, a corrupt blob
            return cls(config), f"unreadable checkpoint ({type(exc).__name__}: {exc})"
        if getattr(model, "version", None) != cls.VERSION:
            return cls(config), f"checkpoint version {getattr(model, 'version', None)} != {cls.VERSION}"
        if model.config != config:
            return cls(config), "checkpoint made with another detector configuration"
        return model, None


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
