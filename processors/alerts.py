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


class AlertBook:
    def __init__(self, hold_s: float = 120.0):
        self.hold_s = hold_s
        self._open: dict[tuple[str, str], _Alert] = {}

    def on_anomaly(self, event: dict, now_s: float) -> dict | None:
        """Record an anomaly event; returns a ``firing`` alert if it opened one."""
        key = (event["home_id"], event["metric"])
        alert = self._open.get(key)
        if alert is None:
            alert = self._open[key] = _Alert(event["region"], event["ts"], event["severity"],
                                             event["detector"], event["score"], 1, now_s)
            return self._event(key, alert, "firing", event["ts"])
        alert.anomalies += 1
        alert.last_seen_s = now_s
        alert.detector = event["detector"]
        alert.score = max(alert.score, event["score"])
        if event["severity"] == "critical":
            alert.severity = "critical"
        return None

    def expire(self, now_s: float) -> list[dict]:
        """Resolve every alert with no anomaly for ``hold_s``; returns the events."""
        done = [k for k, a in self._open.items() if now_s - a.last_seen_s >= self.hold_s]
        return [self._event(k, self._open.pop(k), "resolved", int(now_s * 1000)) for k in done]

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
