"""Random instances generated as in Part III §4.2."""
from __future__ import annotations

import numpy as np

from femot._docstrings import cite

__all__ = ["hitchcock_instance", "sparse_marginal"]


def sparse_marginal(n: int, rng, occupancy: float = 0.5) -> np.ndarray:
    """Nonnegative vector, about ``occupancy`` of its entries nonzero, summing to one.

    Parameters
    ----------
    n : int
        Length.
    rng : numpy.random.Generator
        Source of the random entries (uniform on [0, 1), kept with probability ``occupancy``).
    occupancy : float, optional
        Expected fraction of nonzero entries (default 0.5); at least one entry is nonzero.

    Returns
    -------
    numpy.ndarray, shape (n,)
    """
    m = rng.random(n) * (rng.random(n) < occupancy)
    if not np.any(m > 0):
        m[rng.integers(n)] = 1.0
    return m / m.sum()


@cite("III")
def hitchcock_instance(n: int = 25, seed: int = 0, occupancy: float = 0.5, power: float = 2.0):
    """Cost ``c_ij = |i - j|^power`` and two random marginals (Part III §4.2).

    Parameters
    ----------
    n : int, optional
        Number of points per side, >= 2 (default 25).
    seed : int, optional
        Seed of ``numpy.random.default_rng`` (default 0).
    occupancy : float, optional
        Expected fraction of nonzero marginal entries (default 0.5).
    power : float, optional
        Exponent of the cost (default 2).

    Returns
    -------
    c : numpy.ndarray, shape (n, n)
    mu1, mu2 : numpy.ndarray, shape (n,)
        Nonnegative marginals summing to 1.

    Raises
    ------
    ValueError
        If ``n < 2``.
    """
    if n < 2:
        raise ValueError(f"n must be at least 2, got {n}")
    rng = np.random.default_rng(seed)
    i = np.arange(n, dtype=float)
    c = np.abs(i[:, None] - i[None, :]) ** power
    return c, sparse_marginal(n, rng, occupancy), sparse_marginal(n, rng, occupancy)
