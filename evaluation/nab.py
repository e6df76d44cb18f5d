"""Numenta Anomaly Benchmark (NAB) scoring, as published, plus a streaming runner.

The method (NAB v1.x, ``nab/sweeper.py``; re-implemented here, not copied):

- The first ``min(floor(0.15 * N), 750)`` rows of a file are a probationary period:
  they are neither counted nor scored.
- A row is a *detection* when its anomaly score is ``>= threshold``.
- Inside a labelled window only the earliest detection counts. With the row's
  relative position ``y = -(right - i + 1) / width`` it earns
  ``tpWeight * S(y) / S(-1)`` where ``S(y) = 2 * sigmoid(-5 y) - 1`` (= ``-tanh(2.5 y)``).
  A window without a detection costs ``-fnWeight``.
- A detection outside every window costs ``fpWeight * S(y)`` with
  ``y = |i - prev_right| / (prev_width - 1)`` measured from the previous window, and
  ``S = -1`` when ``y > 3`` or no window precedes it. (FPs just after a window are
  cheap; FPs far from any window cost the full ``fpWeight``.)
- One threshold per detector and profile is swept to maximise the summed raw score
  over the whole corpus (ties go to the highest threshold, as NAB's stable sort does).
- ``normalised = 100 * (raw - null) / (perfect - null)``: ``null`` is what the null
  detector (never fires) gets, ``-fnWeight`` per scorable window; ``perfect`` is
  ``tpWeight`` per labelled window (a detection at each window's left edge).

Counts (TP/TN/FP/FN) are per *row* after the probationary period, as in NAB's
``*_scores.csv`` files; ``total`` is the file's row count.

>>> round(scaled_sigmoid(-1.0), 5), abs(scaled_sigmoid(0.0)), scaled_sigmoid(3.5)
(0.98661, 0.0, -1.0)
>>> probation_length(1000), probation_length(22695)
(150, 750)
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

PROBATIONARY_PERCENT = 0.15
PROFILE_NAMES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")

#: NAB v1.x scoreboard on all 58 files (standard, reward_low_FP_rate, reward_low_FN_rate),
#: from the NAB README.
PUBLISHED_SCOREBOARD: dict[str, tuple[float, float, float]] = {
    "ARTime": (74.9, 65.1, 80.4),
    "Numenta HTM": (70.5, 62.6, 75.2),
    "CAD OSE": (69.9, 67.0, 73.2),
    "earthgecko Skyline": (58.2, 46.2, 63.9),
    "KNN CAD": (58.0, 43.4, 64.8),
    "Relative Entropy": (54.6, 47.6, 58.8),
    "Random Cut Forest": (51.7, 38.4, 59.7),
    "Twitter ADVec": (47.1, 33.6, 53.5),
    "Windowed Gaussian": (39.6, 20.9, 47.4),
    "Etsy Skyline": (35.7, 27.1, 44.5),
    "Bayesian Changepoint": (17.7, 3.2, 32.2),
    "EXPoSE": (16.4, 3.2, 26.9),
    "Random": (11.0, 1.2, 19.5),
}


class NabError(Exception):
    """Malformed NAB directory or results."""


# --------------------------------------------------------------------------- basics


def scaled_sigmoid(y: float) -> float:
    """NAB's reward curve ``2 * sigmoid(-5 y) - 1``, and -1 beyond ``y > 3``.

    (NAB's published results use ``> 3``: a row exactly 3 window-widths after a
    window costs 0.99999939, not 1, of the FP weight.)
    """
    if y > 3.0:
        return -1.0
    return -math.tanh(2.5 * y)


def _scaled_sigmoid_array(y: np.ndarray) -> np.ndarray:
    out = -np.tanh(2.5 * y)
    out[y > 3.0] = -1.0
    return out


MAX_TP = scaled_sigmoid(-1.0)


def probation_length(n_rows: int, percent: float = PROBATIONARY_PERCENT) -> int:
    """Rows at the start of a file that are not scored: ``min(floor(p*N), p*5000)``."""
    return int(min(math.floor(percent * n_rows), percent * 5000))


@dataclass(frozen=True)
class CostMatrix:
    tp: float
    fp: float
    fn: float
    tn: float = 1.0

    @classmethod
    def from_json(cls, d: Mapping[str, float]) -> "CostMatrix":
        return cls(tp=float(d["tpWeight"]), fp=float(d["fpWeight"]), fn=float(d["fnWeight"]),
                   tn=float(d.get("tnWeight", 1.0)))


#: NAB's config/profiles.json, used when a data directory has none.
DEFAULT_PROFILES: dict[str, CostMatrix] = {
    "standard": CostMatrix(tp=1.0, fp=0.11, fn=1.0),
    "reward_low_FP_rate": CostMatrix(tp=1.0, fp=0.22, fn=1.0),
    "reward_low_FN_rate": CostMatrix(tp=1.0, fp=0.11, fn=2.0),
}


@dataclass
class NabFile:
    """One data file with its windows and the per-row reward curves.

    ``window_id[i]`` is the index of the window row ``i`` lies in, or -1; rows before
    ``probation`` are not scorable. ``tp_curve`` holds ``S(y)/S(-1)`` for rows inside
    windows and ``fp_curve`` holds ``S(y)`` for rows outside them (both unweighted).
    """

    name: str  # "category/file.csv"
    timestamps: np.ndarray  # datetime64[s]
    values: np.ndarray  # float64
    windows: list[tuple[int, int]]  # inclusive row indices
    probation: int = 0
    window_id: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    tp_curve: np.ndarray = field(default_factory=lambda: np.zeros(0))
    fp_curve: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        self._prepare()

    def __len__(self) -> int:
        return len(self.values)

    def _prepare(self) -> None:
        n = len(self.values)
        self.probation = probation_length(n)
        wid = np.full(n, -1, dtype=np.int64)
        tp = np.zeros(n)
        fp = np.full(n, -1.0)  # before any window: full FP cost
        idx = np.arange(n)
        prev_right: int | None = None
        prev_width = 0
        cursor = 0
        for k, (start, end) in enumerate(self.windows):
            if start < cursor or end < start:
                raise NabError(f"{self.name}: windows overlap or are out of order")
            # rows between the previous window (or file start) and this window
            if prev_right is not None:
                seg = idx[cursor:start]
                fp[cursor:start] = self._after_window(seg, prev_right, prev_width)
            width = end - start + 1
            seg = idx[start:end + 1]
            wid[start:end + 1] = k
            tp[start:end + 1] = _scaled_sigmoid_array(-(end - seg + 1) / width) / MAX_TP
            fp[start:end + 1] = 0.0
            prev_right, prev_width, cursor = end, width, end + 1
        if prev_right is not None:
            fp[cursor:] = self._after_window(idx[cursor:], prev_right, prev_width)
        self.window_id, self.tp_curve, self.fp_curve = wid, tp, fp

    @staticmethod
    def _after_window(seg: np.ndarray, right: int, width: int) -> np.ndarray:
        if width <= 1:  # NAB divides by zero here; a one-row window gives full FP cost
            return np.full(len(seg), -1.0)
        return _scaled_sigmoid_array(np.abs(seg - right) / float(width - 1))

    def scorable_windows(self) -> int:
        """Windows with at least one row after the probationary period."""
        return sum(1 for _, end in self.windows if end >= self.probation)


# --------------------------------------------------------------------------- loading


def _read_csv_columns(path: Path, columns: Sequence[str]) -> dict[str, list[str]]:
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise NabError(f"{path}: empty file") from None
        try:
            pos = [header.index(c) for c in columns]
        except ValueError:
            raise NabError(f"{path}: expected columns {list(columns)}, found {header}") from None
        out: dict[str, list[str]] = {c: [] for c in columns}
        for row in reader:
            if not row:
                continue
            for c, p in zip(columns, pos):
                out[c].append(row[p])
    return out


def _to_datetimes(strings: Sequence[str]) -> np.ndarray:
    return np.array([s.strip() for s in strings], dtype="datetime64[s]")


def load_profiles(data_dir: str | os.PathLike) -> dict[str, CostMatrix]:
    """``DIR/config/profiles.json`` (NAB's three profiles if the file is absent)."""
    path = Path(data_dir) / "config" / "profiles.json"
    if not path.exists():
        return dict(DEFAULT_PROFILES)
    with open(path) as fh:
        raw = json.load(fh)
    return {name: CostMatrix.from_json(p["CostMatrix"]) for name, p in raw.items()}


def load_corpus(data_dir: str | os.PathLike, only: Iterable[str] | None = None) -> list[NabFile]:
    """Every ``DIR/data/<category>/<file>.csv`` that ``DIR/labels/combined_windows.json`` labels.

    ``only`` restricts to the given relative names ("category/file.csv").
    """
    root = Path(data_dir)
    labels_path = root / "labels" / "combined_windows.json"
    if not (root / "data").is_dir():
        raise NabError(f"{root}: no data/ directory (expected NAB's layout)")
    if not labels_path.exists():
        raise NabError(f"{labels_path}: missing")
    with open(labels_path) as fh:
        labels: dict[str, list[list[str]]] = json.load(fh)
    wanted = set(only) if only is not None else None
    files = []
    for name in sorted(labels):
        if wanted is not None and name not in wanted:
            continue
        path = root / "data" / name
        if not path.exists():
            continue  # a labelled file that is not in this (sub)corpus
        cols = _read_csv_columns(path, ("timestamp", "value"))
        ts = _to_datetimes(cols["timestamp"])
        values = np.array([float(v) for v in cols["value"]], dtype=np.float64)
        windows = []
        for start_s, end_s in labels[name]:
            start, end = np.datetime64(start_s.strip(), "s"), np.datetime64(end_s.strip(), "s")
            i = int(np.searchsorted(ts, start, side="left"))
            j = int(np.searchsorted(ts, end, side="right")) - 1
            if i > j:
                raise NabError(f"{name}: window {start_s}..{end_s} holds no rows")
            windows.append((i, j))
        files.append(NabFile(name=name, timestamps=ts, values=values, windows=windows))
    if not files:
        raise NabError(f"{root}: no labelled data files found")
    return files


def load_results(results_dir: str | os.PathLike, detector: str,
                 files: Sequence[NabFile]) -> dict[str, np.ndarray]:
    """Anomaly scores in NAB's results layout:
    ``RESULTS_DIR/<detector>/<category>/<detector>_<file>.csv`` (column ``anomaly_score``)."""
    root = Path(results_dir) / detector
    out = {}
    for f in files:
        category, fname = f.name.split("/", 1)
        path = root / category / f"{detector}_{fname}"
        if not path.exists():
            raise NabError(f"{path}: missing results for {f.name}")
        scores = np.array([float(v) for v in _read_csv_columns(path, ("anomaly_score",))["anomaly_score"]])
        if len(scores) != len(f):
            raise NabError(f"{path}: {len(scores)} rows, the data file has {len(f)}")
        out[f.name] = scores
    return out


def result_detectors(results_dir: str | os.PathLike) -> list[str]:
    """Detector names with a directory under ``RESULTS_DIR``."""
    root = Path(results_dir)
    if not root.is_dir():
        raise NabError(f"{root}: not a directory")
    return sorted(p.name for p in root.iterdir() if p.is_dir())


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class FileScore:
    name: str
    threshold: float
    score: float
    tp: int
    tn: int
    fp: int
    fn: int
    total: int


def score_file(f: NabFile, scores: np.ndarray, threshold: float, cost: CostMatrix) -> FileScore:
    """Raw NAB score and row counts of one file at a fixed threshold."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) != len(f):
        raise ValueError(f"{f.name}: {len(scores)} scores for {len(f)} rows")
    p = f.probation
    det = scores[p:] >= threshold
    wid = f.window_id[p:]
    inside = wid >= 0
    tp = int(np.count_nonzero(det & inside))
    fn = int(np.count_nonzero(~det & inside))
    fp_mask = det & ~inside
    fp = int(np.count_nonzero(fp_mask))
    tn = int(np.count_nonzero(~det & ~inside))
    total = float(np.sum(f.fp_curve[p:][fp_mask])) * cost.fp
    for k, (start, end) in enumerate(f.windows):
        if end < p:
            continue
        lo = max(start, p)
        hits = np.flatnonzero(scores[lo:end + 1] >= threshold)
        if len(hits):
            total += f.tp_curve[lo + hits[0]] * cost.tp
        else:
            total -= cost.fn
    return FileScore(f.name, threshold, total, tp, tn, fp, fn, len(f))


def row_rewards(f: NabFile, cost: CostMatrix) -> np.ndarray:
    """NAB's per-row weighted reward ``S(t)_<profile>`` (0 in the probationary period)."""
    r = np.where(f.window_id >= 0, f.tp_curve * cost.tp, f.fp_curve * cost.fp)
    r[: f.probation] = 0.0
    return r


def sweep_thresholds(files: Sequence[NabFile], scores: Mapping[str, np.ndarray],
                     cost: CostMatrix) -> tuple[np.ndarray, np.ndarray]:
    """Corpus raw score for every distinct threshold.

    Returns ``(thresholds, raw_scores)`` in descending threshold order, the first
    entry being "nothing detected" (threshold ``+inf``; NAB writes 1.1).
    """
    s_parts, w_parts, fpw_parts, tpw_parts = [], [], [], []
    offset = 0
    n_windows = 0
    for f in files:
        p = f.probation
        sc = np.asarray(scores[f.name], dtype=np.float64)
        if len(sc) != len(f):
            raise ValueError(f"{f.name}: {len(sc)} scores for {len(f)} rows")
        wid = f.window_id[p:]
        s_parts.append(sc[p:])
        w_parts.append(np.where(wid >= 0, wid + offset, -1))
        fpw_parts.append(f.fp_curve[p:] * cost.fp)
        tpw_parts.append(f.tp_curve[p:] * cost.tp)
        offset += len(f.windows)
        n_windows += f.scorable_windows()
    s = np.concatenate(s_parts)
    wid = np.concatenate(w_parts)
    fpw = np.concatenate(fpw_parts)
    tpw = np.concatenate(tpw_parts)
    if np.isnan(s).any():
        raise ValueError("anomaly scores contain NaN")

    order = np.argsort(-s, kind="stable")
    s, wid, fpw, tpw = s[order], wid[order], fpw[order], tpw[order]
    delta = np.where(wid < 0, fpw, 0.0)

    # Per window: value = max(-fn, running max of the TP rewards of detected rows);
    # the row's contribution is the increase of that value.
    win_rows = np.flatnonzero(wid >= 0)
    if len(win_rows):
        g = wid[win_rows]
        grp_order = np.argsort(g, kind="stable")  # keeps descending-score order in a window
        rows = win_rows[grp_order]
        g = g[grp_order]
        span = 2.0 * (abs(cost.tp) + abs(cost.fn)) + 1.0
        shifted = tpw[rows] + g * span
        run = np.maximum.accumulate(shifted) - g * span
        run = np.maximum(run, -cost.fn)
        first = np.ones(len(rows), dtype=bool)
        first[1:] = g[1:] != g[:-1]
        prev = np.empty_like(run)
        prev[1:] = run[:-1]
        prev[first] = -cost.fn
        delta[rows] = run - prev

    cum = -cost.fn * n_windows + np.cumsum(delta)
    # the score for threshold v counts every row with score >= v: last row of each run
    last = np.ones(len(s), dtype=bool)
    last[:-1] = s[1:] != s[:-1]
    thresholds = np.concatenate([[np.inf], s[last]])
    raws = np.concatenate([[-cost.fn * n_windows], cum[last]])
    return thresholds, raws


@dataclass(frozen=True)
class ProfileResult:
    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    files: tuple[FileScore, ...]

    @property
    def normalized(self) -> float:
        return 100.0 * (self.raw - self.null) / (self.perfect - self.null)

    @property
    def counts(self) -> dict[str, int]:
        return {k: sum(getattr(fs, k) for fs in self.files) for k in ("tp", "tn", "fp", "fn")}

    def windows_detected(self, files: Sequence[NabFile], scores: Mapping[str, np.ndarray]) -> tuple[int, int]:
        """(windows with a detection, scorable windows) at this threshold."""
        hit = total = 0
        for f in files:
            sc = scores[f.name]
            for start, end in f.windows:
                if end < f.probation:
                    continue
                total += 1
                hit += bool((sc[max(start, f.probation):end + 1] >= self.threshold).any())
        return hit, total


def score_profile(files: Sequence[NabFile], scores: Mapping[str, np.ndarray], cost: CostMatrix,
                  profile: str = "", threshold: float | None = None) -> ProfileResult:
    """Sweep (or use the given) threshold and score the corpus for one profile."""
    if threshold is None:
        thresholds, raws = sweep_thresholds(files, scores, cost)
        best = int(np.argmax(raws))  # first maximum = highest threshold among ties
        threshold = float(thresholds[best])
    per_file = tuple(score_file(f, scores[f.name], threshold, cost) for f in files)
    raw = math.fsum(fs.score for fs in per_file)
    null = -cost.fn * sum(f.scorable_windows() for f in files)
    perfect = cost.tp * sum(len(f.windows) for f in files)
    return ProfileResult(profile, threshold, raw, null, perfect, per_file)


def score_corpus(files: Sequence[NabFile], scores: Mapping[str, np.ndarray],
                 profiles: Mapping[str, CostMatrix] | None = None) -> dict[str, ProfileResult]:
    """Every profile's result for one detector's scores (``{file name: scores}``)."""
    profiles = DEFAULT_PROFILES if profiles is None else profiles
    return {name: score_profile(files, scores, cost, name) for name, cost in profiles.items()}


# --------------------------------------------------------------------------- running detectors


def stream_scores(detector_factory: Callable[[], object], values: np.ndarray) -> np.ndarray:
    """Stream one series through a fresh detector: score each row, then learn it."""
    det = detector_factory()
    out = np.empty(len(values))
    score_one, learn_one = det.score_one, det.learn_one  # type: ignore[attr-defined]
    for i, x in enumerate(values.tolist()):
        out[i] = score_one(x)
        learn_one(x)
    return out


def _run_one(args: tuple[str, dict, str, np.ndarray]) -> tuple[str, np.ndarray]:
    from processors.detectors import make

    name, params, fname, values = args
    return fname, stream_scores(lambda: make(name, **params), values)


def run_detector(name: str, files: Sequence[NabFile], params: Mapping[str, object] | None = None,
                 jobs: int = 1, progress: bool = False, desc: str | None = None) -> dict[str, np.ndarray]:
    """Scores of registered detector ``name`` on every file (score then learn per row).

    ``jobs > 1`` spreads files over processes; ``progress`` shows a tqdm bar on stderr.
    """
    params = dict(params or {})
    tasks = [(name, params, f.name, f.values) for f in sorted(files, key=len, reverse=True)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(len(f) for f in files), desc=desc or name, unit="ev",
                   unit_scale=True, file=sys.stderr, leave=False)
    out: dict[str, np.ndarray] = {}
    try:
        if jobs > 1 and len(tasks) > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=jobs) as pool:
                for fname, sc in pool.map(_run_one, tasks):
                    out[fname] = sc
                    if bar is not None:
                        bar.update(len(sc))
        else:
            for task in tasks:
                fname, sc = _run_one(task)
                out[fname] = sc
                if bar is not None:
                    bar.update(len(sc))
    finally:
        if bar is not None:
            bar.close()
    return out


def evaluate_detector(name: str, files: Sequence[NabFile], profiles: Mapping[str, CostMatrix] | None = None,
                      params: Mapping[str, object] | None = None, jobs: int = 1,
                      progress: bool = False) -> dict[str, ProfileResult]:
    """Stream the corpus through detector ``name`` and score it for every profile."""
    return score_corpus(files, run_detector(name, files, params, jobs, progress), profiles)
