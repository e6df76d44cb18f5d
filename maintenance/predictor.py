"""Online failure predictor: per-asset health indicators -> remaining useful life,
probability of failure within a horizon, and the signals behind it. Pure, no I/O; its
whole state is plain JSON (``state()`` / ``from_state()``), never a pickle.

Per asset, every reading updates health indicators of each signal: exponentially
smoothed levels at a slow and a faster rate (``alphas``; their difference is the
trend), optionally bias-corrected (``bias_correction``: a level is then the exactly
weighted mean of the readings so far, its gain starting at 1 and decaying to alpha, so
a unit seen from new does not carry its first, noisy reading in the slow level for
~1/alpha readings; a unit first seen in mid-life is better served without), optionally the least-squares slope over the last ``window`` readings, all in
units of the signal's fleet-wide spread (running mean and variance), and the asset's
age in readings. A recursive-least-squares regressor on these indicators and their
pairwise products predicts the remaining life (capped at ``cap``: early life counts as
healthy). It learns online: an asset's indicator vectors wait in a buffer until its
failure is known (``failed(asset)``: a corrective work order), then each is learned
with its now known remaining life; a repair without failure (``reset(asset)``) drops
the buffer and starts the asset's indicators afresh. ``p_fail`` within ``horizon`` is
P(true RUL <= horizon) under a normal error whose spread is the regressor's own
prequential RMSE (each label scored before it is learned). Top contributing signals:
how much the prediction rises when a signal's indicators are set to the fleet's
healthy average (occlusion).

>>> p = RulPredictor(["temp", "vib"], alphas=(0.1, 0.3), cap=50, horizon=10)
>>> for life in (60, 70, 65, 80, 55, 75):
...     for t in range(life):
...         _ = p.update("A", {"temp": 1.0 + 0.02 * max(0, t - life + 40), "vib": 0.5 + 0.01 * t / life})
...     _ = p.failed("A")
>>> for t in range(58):
...     pred = p.update("B", {"temp": 1.0 + 0.02 * max(0, t - 60 + 40), "vib": 0.5})
>>> 0 <= pred.rul <= 12, pred.p_fail > 0.5, pred.top_signals[0][0]
(True, True, 'temp')
>>> q = RulPredictor.from_state(json.loads(json.dumps(p.state())))
>>> abs(q.predict("B").rul - p.predict("B").rul) < 1e-9
True
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
import json  # noqa: F401  (used by the docstring example)

import numpy as np

NAME = "rls-quadratic"
VERSION = 2  # 2: levels' weights kept (optional bias correction); 1's states still load


@dataclass(frozen=True)
class Prediction:
    asset: str
    rul: float  # readings (cycles) of useful life left
    p_fail: float  # P(failure within the horizon)
    horizon: float
    top_signals: tuple[tuple[str, float], ...]  # (signal, contribution in readings of RUL lost)

    def as_record(self) -> dict:
        return {"asset": self.asset, "rul": self.rul, "p_fail": self.p_fail, "horizon": self.horizon,
                "top_signals": [{"signal": s, "contribution": c} for s, c in self.top_signals]}


class _AssetState:
    __slots__ = ("level", "weight", "hist", "n", "buffer", "base_sum", "base_n")

    def __init__(self, k: int, window: int, rates: int, memory: int | None):
        self.level = np.full((rates, k), np.nan)
        self.weight = np.zeros((rates, k))  # sum of the readings' decayed weights: 1/gain
        self.hist: deque = deque(maxlen=window)
        self.n = 0
        self.buffer: deque = deque(maxlen=memory)  # (ts, raw indicators) awaiting a label
        self.base_sum = np.zeros(k)  # sum and count of the unit's first readings: its own baseline
        self.base_n = np.zeros(k)


class RulPredictor:
    def __init__(self, signals, alphas=(0.03, 0.1), slope: bool = False, window: int = 30, cap: float = 125.0,
                 horizon: float = 30.0, ridge: float = 1.0, age_scale: float = 100.0, top: int = 3,
                 time_unit: float = 1.0, memory: int | None = None, baseline: int = 0,
                 explain_above: float = 0.0, bias_correction: bool = False):
        self.signals = list(signals)
        if not self.signals:
            raise ValueError("at least one signal")
        self.alphas = tuple(float(a) for a in alphas)
        if window < 3 or not self.alphas or not all(0 < a <= 1 for a in self.alphas) or cap <= 0 \
                or horizon <= 0 or ridge <= 0:
            raise ValueError("window >= 3, alphas in (0, 1], cap, horizon and ridge > 0")
        self.slope = bool(slope)
        self.bias_correction = bool(bias_correction)
        if time_unit <= 0 or (memory is not None and memory < 1):
            raise ValueError("time_unit > 0, memory >= 1")
        self.time_unit, self.memory = float(time_unit), (None if memory is None else int(memory))
        if baseline < 0:
            raise ValueError("baseline >= 0")
        self.baseline = int(baseline)
        # top signals cost one prediction per signal: only for assets at some risk
        self.explain_above = float(explain_above)
        self.frozen: tuple[np.ndarray, np.ndarray] | None = None
        self.window, self.cap, self.horizon = int(window), float(cap), float(horizon)
        self.ridge, self.age_scale, self.top = float(ridge), float(age_scale), int(top)
        k = len(self.signals)
        # running mean / M2 of each signal over every reading (Welford)
        self.count = 0
        self.mean = np.zeros(k)
        self.m2 = np.zeros(k)
        d = self.dim
        self.P = np.eye(d) / self.ridge
        self.w = np.zeros(d)
        self.w[0] = self.cap  # before any failure: everything looks healthy
        self.sq_err, self.labels = 0.0, 0
        self.assets: dict[str, _AssetState] = {}
        self._iu = np.triu_indices(self.base_dim)

    @property
    def version(self) -> str:
        return f"{NAME}@{VERSION}"

    @property
    def base_dim(self) -> int:
        return (len(self.alphas) + self.slope + (self.baseline > 0)) * len(self.signals) + 1

    @property
    def dim(self) -> int:
        b = self.base_dim
        return 1 + b + b * (b + 1) // 2

    # ------------------------------------------------------------ features
    def _std(self) -> np.ndarray:
        if self.count < 2:
            return np.ones(len(self.signals))
        s = np.sqrt(self.m2 / (self.count - 1))
        return np.where(s > 1e-12, s, 1.0)

    def _raw(self, st: _AssetState) -> np.ndarray:
        """The asset's indicators in the signals' own units (NaN: never seen)."""
        parts = [st.level.ravel()]
        if self.slope:
            slope = np.zeros(len(self.signals))
            h = len(st.hist)
            if h >= 3:
                y = np.array(st.hist)
                t = np.arange(h) - (h - 1) / 2.0
                slope = (t @ (y - y.mean(0))) / (t @ t) * self.window
            parts.append(slope)
        if self.baseline:
            with np.errstate(invalid="ignore", divide="ignore"):
                parts.append(st.level[-1] - st.base_sum / st.base_n)
        parts.append([float(st.n)])
        return np.concatenate(parts)

    def _scaler(self) -> tuple[np.ndarray, np.ndarray]:
        """(centre, scale) of the raw indicators: the signals' running mean and spread
        until the first label, then frozen, so every learned and predicted vector is in
        the same units."""
        if self.frozen is not None:
            return self.frozen
        reps = len(self.alphas)
        mean, std = self.mean, self._std()
        zero = np.zeros(len(mean))
        extra = self.slope + (self.baseline > 0)
        centre = np.concatenate([np.tile(mean, reps)] + [zero] * extra + [[0.0]])
        scale = np.concatenate([np.tile(std, reps)] + [std] * extra + [[self.age_scale]])
        return centre, scale

    def _standard(self, raw: np.ndarray) -> np.ndarray:
        centre, scale = self._scaler()
        z = (raw - centre) / scale
        return np.where(np.isfinite(z), z, 0.0)

    def _indicators(self, st: _AssetState) -> np.ndarray:
        return self._standard(self._raw(st))

    def _expand(self, base: np.ndarray) -> np.ndarray:
        return np.concatenate([[1.0], base, np.outer(base, base)[self._iu]])

    def _rul(self, base: np.ndarray) -> float:
        return float(np.clip(self._expand(base) @ self.w, 0.0, self.cap))

    # ------------------------------------------------------------ stream API
    def update(self, asset: str, reading: dict, ts: float | None = None) -> Prediction:
        """Take one reading of an asset at time ``ts`` (default: its reading count;
        missing or non-finite signals keep their last level), then predict."""
        st = self.assets.get(asset)
        if st is None:
            st = self.assets[asset] = _AssetState(len(self.signals), self.window, len(self.alphas), self.memory)
        x = np.array([float(reading.get(s, math.nan)) if reading.get(s) is not None else math.nan
                      for s in self.signals])
        x[~np.isfinite(x)] = np.nan
        ok = ~np.isnan(x)
        if ok.all():
            self.count += 1
            d = x - self.mean
            self.mean += d / self.count
            self.m2 += d * (x - self.mean)
        for r, a in enumerate(self.alphas):
            lv, wt = st.level[r], st.weight[r]
            wt[ok] = (1.0 - a) * wt[ok] + 1.0  # tends to 1/a
            fresh = np.isnan(lv) & ok
            lv[fresh] = x[fresh]
            both = ok & ~fresh
            gain = 1.0 / wt[both] if self.bias_correction else a
            lv[both] += gain * (x[both] - lv[both])
        if self.slope:
            st.hist.append(np.where(ok, x, st.level[-1]))
        if self.baseline:
            take = ok & (st.base_n < self.baseline)
            st.base_sum[take] += x[take]
            st.base_n[take] += 1
        raw = self._raw(st)
        st.buffer.append((float(st.n if ts is None else ts), raw.tolist()))
        st.n += 1
        return self._predict(asset, self._standard(raw))

    def predict(self, asset: str) -> Prediction:
        st = self.assets.get(asset)
        if st is None:
            return Prediction(asset, self.cap, self._p(self.cap), self.horizon, ())
        return self._predict(asset, self._indicators(st))

    def failed(self, asset: str, ts: float | None = None) -> int:
        """The asset failed at ``ts`` (default: its last reading): learn its buffered
        readings up to then with their true remaining life (in ``time_unit``), then
        forget the asset (a new unit starts afresh). Returns readings learned."""
        st = self.assets.pop(asset, None)
        if st is None or not st.buffer:
            return 0
        if self.frozen is None:
            self.frozen = self._scaler()
        end = st.buffer[-1][0] if ts is None else float(ts)
        n = 0
        for t, raw in st.buffer:
            if t <= end:
                self._learn(self._standard(np.asarray(raw)), min((end - t) / self.time_unit, self.cap))
                n += 1
        return n

    def reset(self, asset: str) -> None:
        """Repaired before failing: its wear is gone, its readings carry no label."""
        self.assets.pop(asset, None)

    # ------------------------------------------------------------ internals
    def _p(self, rul: float) -> float:
        sigma = math.sqrt(self.sq_err / self.labels) if self.labels else self.cap / 2
        sigma = max(sigma, 1.0)
        return 0.5 * math.erfc((rul - self.horizon) / (sigma * math.sqrt(2.0)))

    def _predict(self, asset: str, base: np.ndarray) -> Prediction:
        rul = self._rul(base)
        p_fail = self._p(rul)
        top: list[tuple[str, float]] = []
        if self.labels and p_fail >= self.explain_above:
            k = len(self.signals)
            for j, name in enumerate(self.signals):
                healthy = base.copy()
                healthy[j:-1:k] = 0.0  # every indicator of signal j
                gain = self._rul(healthy) - rul
                if gain > 0:
                    top.append((name, gain))
            top.sort(key=lambda t: -t[1])
        return Prediction(asset, rul, p_fail, self.horizon, tuple(top[: self.top]))

    def _learn(self, base: np.ndarray, y: float) -> None:
        z = self._expand(base)
        err = y - float(np.clip(z @ self.w, 0.0, self.cap))
        self.sq_err += err * err
        self.labels += 1
        Pz = self.P @ z
        g = Pz / (1.0 + z @ Pz)
        self.w += g * (y - z @ self.w)
        self.P -= np.outer(g, Pz)

    # ------------------------------------------------------------ checkpoint
    def state(self, assets: bool = True) -> dict:
        """Everything, as JSON-compatible values (``assets=False``: the model without the
        per-asset states, which ``asset_state`` gives one at a time)."""
        return {
            "name": NAME, "version": VERSION, "signals": self.signals,
            "params": {"alphas": list(self.alphas), "slope": self.slope, "baseline": self.baseline,
                       "explain_above": self.explain_above, "bias_correction": self.bias_correction,
                       "window": self.window, "cap": self.cap,
                       "horizon": self.horizon, "time_unit": self.time_unit, "memory": self.memory,
                       "ridge": self.ridge, "age_scale": self.age_scale, "top": self.top},
            "frozen": None if self.frozen is None else [self.frozen[0].tolist(), self.frozen[1].tolist()],
            "count": self.count, "mean": self.mean.tolist(), "m2": self.m2.tolist(),
            "w": self.w.tolist(), "P": self.P.tolist(), "sq_err": self.sq_err, "labels": self.labels,
            "assets": {a: self.asset_state(a) for a in self.assets} if assets else {},
        }

    def asset_state(self, asset: str) -> dict | None:
        """One asset's indicators and unlabelled buffer (None: not tracked)."""
        s = self.assets.get(asset)
        if s is None:
            return None
        return {"level": [[None if math.isnan(v) else v for v in row] for row in s.level.tolist()],
                "weight": s.weight.tolist(),
                "hist": [h.tolist() for h in s.hist], "n": s.n,
                "base_sum": s.base_sum.tolist(), "base_n": s.base_n.tolist(),
                "buffer": [[t, [None if math.isnan(v) else v for v in raw]] for t, raw in s.buffer]}

    def load_asset(self, asset: str, s: dict) -> None:
        """Restore one asset from ``asset_state``."""
        st = _AssetState(len(self.signals), self.window, len(self.alphas), self.memory)
        st.level = np.array([[math.nan if v is None else v for v in row] for row in s["level"]], float)
        if st.level.shape != (len(self.alphas), len(self.signals)):
            raise ValueError(f"asset {asset!r}: levels do not match the signals")
        if "weight" in s:
            st.weight = np.array(s["weight"], float)
        else:  # version 1: plain smoothing, so a seen level is settled (gain alpha)
            st.weight = np.where(np.isnan(st.level), 0.0, 1.0 / np.array(self.alphas)[:, None])
        if st.weight.shape != st.level.shape:
            raise ValueError(f"asset {asset!r}: weights do not match the levels")
        for h in s["hist"]:
            st.hist.append(np.array(h, float))
        st.n = int(s["n"])
        st.base_sum = np.array(s["base_sum"], float)
        st.base_n = np.array(s["base_n"], float)
        for t, raw in s["buffer"]:
            st.buffer.append((float(t), [math.nan if v is None else float(v) for v in raw]))
        self.assets[asset] = st

    @classmethod
    def from_state(cls, state: dict) -> "RulPredictor":
        if state.get("name") != NAME or state.get("version") not in (1, VERSION):
            raise ValueError(f"not a {NAME}@{VERSION} state: {state.get('name')}@{state.get('version')}")
        p = cls(state["signals"], **state["params"])
        p.count = int(state["count"])
        if state.get("frozen") is not None:
            p.frozen = (np.array(state["frozen"][0], float), np.array(state["frozen"][1], float))
        p.mean, p.m2 = np.array(state["mean"], float), np.array(state["m2"], float)
        p.w, p.P = np.array(state["w"], float), np.array(state["P"], float)
        if p.w.shape != (p.dim,) or p.P.shape != (p.dim, p.dim):
            raise ValueError("state's model does not match its signals")
        p.sq_err, p.labels = float(state["sq_err"]), int(state["labels"])
        for a, s in state["assets"].items():
            p.load_asset(a, s)
        return p
