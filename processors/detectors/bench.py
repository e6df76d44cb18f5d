"""Per-detector cost: events per second for the score-then-learn pair the processor
runs per event, and the size of the state it checkpoints (JSON of ``to_state``).

>>> costs = measure_detector_costs(n_events=300, names=["zscore"])
>>> sorted(costs), costs["zscore"] > 1000
(['zscore'], True)
"""

from __future__ import annotations

import json
import math
import random
import time
from typing import Iterable

from processors.detectors import available, make
from processors.detectors.state import dump


def _signal(n_events: int, seed: int) -> list[float]:
    """A daily-cycle-plus-noise series with rare spikes and a level shift."""
    rng = random.Random(seed)
    out = []
    for i in range(n_events):
        x = 20.0 + 3.0 * math.sin(2 * math.pi * i / 288) + rng.gauss(0.0, 0.5)
        if i > n_events // 2:
            x += 2.0
        if rng.random() < 0.002:
            x += rng.choice((-1, 1)) * 8.0
        out.append(x)
    return out


def measure_detector_costs(n_events: int = 20_000, names: Iterable[str] | None = None,
                           seed: int = 0) -> dict[str, float]:
    """``{detector name: events per second}`` for ``score_one`` + ``learn_one`` per
    event on one core, over ``n_events`` events of a synthetic telemetry series."""
    data = _signal(n_events, seed)
    result = {}
    for name in (list(names) if names is not None else available()):
        det = make(name)
        score_one, learn_one = det.score_one, det.learn_one
        t0 = time.perf_counter()
        for x in data:
            score_one(x)
            learn_one(x)
        elapsed = time.perf_counter() - t0
        result[name] = n_events / elapsed if elapsed > 0 else math.inf
    return result


def measure_state_sizes(n_events: int = 5_000, names: Iterable[str] | None = None,
                        seed: int = 0) -> dict[str, int | None]:
    """``{detector name: JSON bytes of its state}`` after ``n_events`` events (what a
    Faust table checkpoint stores per series; None: the detector has no checkpoint
    state)."""
    data = _signal(n_events, seed)
    sizes = {}
    for name in (list(names) if names is not None else available()):
        det = make(name)
        for x in data:
            det.score_one(x)
            det.learn_one(x)
        try:
            sizes[name] = len(json.dumps(dump(det), separators=(",", ":")))
        except NotImplementedError:
            sizes[name] = None
    return sizes
