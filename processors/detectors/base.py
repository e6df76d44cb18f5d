"""The detector protocol and the registry of implementations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable


@dataclass(frozen=True)
class Evidence:
    """What the detector knew before scoring the latest value."""

    mean: float
    std: float
    count: int


@runtime_checkable
class Detector(Protocol):
    """A streaming detector of one univariate series.

    ``score_one`` must not change the model; the caller scores first, then learns, so
    an anomaly never hides itself by being learned before it is scored.
    ``to_state``/``from_state`` turn it into JSON values and back, for checkpoints
    (see ``processors.detectors.state``).
    """

    name: str

    def learn_one(self, x: float) -> None: ...

    def score_one(self, x: float) -> float: ...

    def evidence(self) -> Evidence: ...

    def to_state(self) -> dict: ...

    @classmethod
    def from_state(cls, state: dict) -> "Detector": ...


_REGISTRY: dict[str, Callable[..., Detector]] = {}


def register(name: str) -> Callable[[Callable[..., Detector]], Callable[..., Detector]]:
    def deco(factory: Callable[..., Detector]) -> Callable[..., Detector]:
        _REGISTRY[name] = factory
        return factory

    return deco


def create(name: str, **params: object) -> "Detector":
    """A detector of a registered name (its module must have been imported: use
    ``processors.detectors.make``, which imports them all)."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None
    return factory(**params)


def detector_class(name: object) -> type | None:
    """The registered class called ``name`` (for ``from_state``), or None (also when
    its module was not imported: ``processors.detectors.load_state`` imports them all)."""
    factory = _REGISTRY.get(name) if isinstance(name, str) else None
    return factory if isinstance(factory, type) else None
