"""Streaming anomaly detectors: plain, I/O-free code shared by the Faust agents,
the evaluation commands and the benchmarks.

Every detector follows one small protocol (see ``base.Detector``):
``score_one(x)`` gives a score in [0, 1] for a new value *before* learning it, and
``learn_one(x)`` updates the model. ``evidence()`` reports the window statistics the
score was based on, for the anomaly event.
"""

from processors.detectors.base import Detector, Evidence, available, make

__all__ = ["Detector", "Evidence", "available", "make"]
