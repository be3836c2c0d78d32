"""Random instances generated as in Part III §4.2."""
from __future__ import annotations

import numpy as np

__all__ = ["hitchcock_instance", "sparse_marginal"]


def sparse_marginal(n: int, rng, occupancy: float = 0.5) -> np.ndarray:
    """Nonnegative vector, about ``occupancy`` of its entries nonzero, summing to one."""
    m = rng.random(n) * (rng.random(n) < occupancy)
    if not np.any(m > 0):
        m[rng.integers(n)] = 1.0
    return m / m.sum()


def hitchcock_instance(n: int = 25, seed: int = 0, occupancy: float = 0.5, power: float = 2.0):
    """Cost ``c_ij = |i - j|^power`` and two random marginals (Part III §4.2).

    Returns ``(c, mu1, mu2)``; both marginals are about half occupied and sum to 1.
    """
    if n < 2:
        raise ValueError(f"n must be at least 2, got {n}")
    rng = np.random.default_rng(seed)
    i = np.arange(n, dtype=float)
    c = np.abs(i[:, None] - i[None, :]) ** power
    return c, sparse_marginal(n, rng, occupancy), sparse_marginal(n, rng, occupancy)
