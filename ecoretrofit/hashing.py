"""Counter-based uniforms: a pure function of ``(seed, index, stream)``.

A home's (or an asset's) random properties come from hashing its index rather than from
a shared generator, so home ``H000042`` is the same home in a city of 100 or of 100,000
and one stream's draws never shift another's.

>>> import numpy as np
>>> a = uniforms(7, np.arange(5), stream=3)
>>> bool(((0 <= a) & (a < 1)).all()), bool((a == uniforms(7, np.arange(5), 3)).all())
(True, True)
>>> bool(a[2] == uniforms(7, np.array([2]), 3)[0])
True
"""

from __future__ import annotations

import numpy as np

_U64 = np.uint64


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, element-wise on uint64."""
    x = x + _U64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def uniforms(seed: int, index: np.ndarray, stream: int) -> np.ndarray:
    """U[0, 1) per index, a pure function of (seed, index, stream)."""
    key = splitmix64(np.array([(seed * 1_000_003 + stream) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    h = splitmix64(np.asarray(index).astype(np.uint64) ^ key)
    return (h >> _U64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
