"""Streaming anomaly detectors: plain, I/O-free code shared by the Faust agents,
the evaluation commands and the benchmarks.

Every detector follows one small protocol (see ``base.Detector``):
``score_one(x)`` gives a score in [0, 1] for a new value *before* learning it, and
``learn_one(x)`` updates the model. ``evidence()`` reports the window statistics the
score was based on, for the anomaly event.
"""

from processors.detectors.base import _REGISTRY, Detector, Evidence, create

__all__ = ["Detector", "Evidence", "available", "load_state", "make"]


def make(name: str, **params: object) -> Detector:
    """A new detector by registered name, e.g. ``make("zscore", window=120)``."""
    _load_all()
    return create(name, **params)


def load_state(blob: object) -> Detector:
    """The detector a ``state.dump`` describes (any registered detector)."""
    from processors.detectors import state

    _load_all()
    return state.load(blob)


def available() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def _load_all() -> None:
    # Importing the modules registers their detectors.
    from processors.detectors import ensemble, extreme, hst, knn, robust, seasonal, stuck, zscore  # noqa: F401
