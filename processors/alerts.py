"""Alert state per home and metric: pure bookkeeping behind the alerts topic and the
``eco_homes_in_alert`` gauge.

An anomaly on a (home, metric) that is not in alert opens an alert (a ``firing``
event); further anomalies extend it (and may raise its severity); when none came for
``hold_s`` seconds, it ``resolved``. Times are the processor's clock (seconds), so an
alert resolves even when the home stops reporting.

>>> book = AlertBook(hold_s=120)
>>> ev = {"home_id": "H1", "region": "north", "metric": "power_w", "ts": 5_000,
...       "severity": "warning", "detector": "ewzscore", "score": 0.99995}
>>> book.on_anomaly(ev, now_s=10.0)["state"]
'firing'
>>> book.on_anomaly({**ev, "ts": 6_000, "severity": "critical", "score": 1.0}, now_s=11.0) is None
True
>>> book.counts()
{('north', 'power_w', 'critical'): 1}
>>> book.expire(now_s=100.0)
[]
>>> [(a["state"], a["severity"], a["anomalies"], a["alert_id"]) for a in book.expire(now_s=131.5)]
[('resolved', 'critical', 2, 'H1/power_w/5000')]
>>> book.counts()
{}

A *sticky* alert (a silent home) does not expire; it resolves when told to (the home
spoke again). Per-home state goes into the home's checkpoint, so a restarted worker
resolves the alerts its predecessor opened:

>>> silence = {**ev, "metric": "seq", "detector": "gap", "ts": 9_000}
>>> book.on_anomaly(silence, now_s=200.0, sticky=True)["state"]
'firing'
>>> book.expire(now_s=10_000.0)
[]
>>> saved = book.home_state("H1")
>>> other = AlertBook(hold_s=120)
>>> other.load_home("H1", saved)
>>> [(a["state"], a["metric"]) for a in other.resolve("H1", "seq", now_s=10_001.0)]
[('resolved', 'seq')]
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass
class _Alert:
    region: str
    started_at: int
    severity: str
    detector: str
    score: float
    anomalies: int
    last_seen_s: float
    sticky: bool = False


class AlertBook:
    def __init__(self, hold_s: float = 120.0):
        self.hold_s = hold_s
        self._open: dict[tuple[str, str], _Alert] = {}

    def on_anomaly(self, event: dict, now_s: float, sticky: bool = False) -> dict | None:
        """Record an anomaly event; returns a ``firing`` alert if it opened one. A
        ``sticky`` alert stays open until ``resolve``."""
        key = (event["home_id"], event["metric"])
        alert = self._open.get(key)
        if alert is None:
            alert = self._open[key] = _Alert(event["region"], event["ts"], event["severity"],
                                             event["detector"], event["score"], 1, now_s, sticky)
            return self._event(key, alert, "firing", event["ts"])
        alert.sticky = alert.sticky or sticky
        alert.anomalies += 1
        alert.last_seen_s = now_s
        alert.detector = event["detector"]
        alert.score = max(alert.score, event["score"])
        if event["severity"] == "critical":
            alert.severity = "critical"
        return None

    def expire(self, now_s: float) -> list[dict]:
        """Resolve every alert with no anomaly for ``hold_s``; returns the events."""
        done = [k for k, a in self._open.items() if not a.sticky and now_s - a.last_seen_s >= self.hold_s]
        return [self._event(k, self._open.pop(k), "resolved", int(now_s * 1000)) for k in done]

    def resolve(self, home_id: str, metric: str, now_s: float) -> list[dict]:
        """Resolve the alert on (home, metric) now, if one is open."""
        alert = self._open.pop((home_id, metric), None)
        return [] if alert is None else [self._event((home_id, metric), alert, "resolved", int(now_s * 1000))]

    def home_state(self, home_id: str) -> list[list]:
        """The home's open alerts as JSON values (for its checkpoint)."""
        return [[metric, a.region, a.started_at, a.severity, a.detector, a.score, a.anomalies, a.last_seen_s, a.sticky]
                for (home, metric), a in self._open.items() if home == home_id]

    def load_home(self, home_id: str, state: object) -> None:
        """Re-open the alerts ``home_state`` saved; raises on malformed state."""
        if not isinstance(state, list) or len(state) > 64:
            raise TypeError("alert state must be a short list")
        for metric, region, started_at, severity, detector, score, anomalies, last_seen_s, sticky in state:
            if not all(isinstance(x, str) for x in (metric, region, severity, detector)):
                raise TypeError("alert fields must be strings")
            self._open[(home_id, metric)] = _Alert(region, int(started_at), severity, detector, float(score),
                                                   int(anomalies), float(last_seen_s), bool(sticky))

    def forget(self) -> None:
        """Drop every open alert (the partitions, and their homes, went to another worker)."""
        self._open.clear()

    def counts(self) -> dict[tuple[str, str, str], int]:
        """Open alerts by (region, metric, severity): the gauge's values."""
        return dict(Counter((a.region, metric, a.severity) for (_, metric), a in self._open.items()))

    @staticmethod
    def _event(key: tuple[str, str], alert: _Alert, state: str, ts: int) -> dict:
        home_id, metric = key
        return {
            "alert_id": f"{home_id}/{metric}/{alert.started_at}",
            "home_id": home_id, "region": alert.region, "metric": metric, "state": state,
            "severity": alert.severity, "started_at": alert.started_at, "ts": ts,
            "anomalies": alert.anomalies, "detector": alert.detector, "score": float(alert.score),
        }
