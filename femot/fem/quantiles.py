"""Quantile functions of 1D measures and the exact 1D transport cost between them."""
from __future__ import annotations

import numpy as np

from femot._validation import check_positive_scalar
from femot.fem.measures import DiracSum, Measure

__all__ = ["quantile", "wasserstein_1d"]


def _interval_of(mu) -> tuple[float, float]:
    lo, hi = np.inf, -np.inf
    for p in mu.parts():
        if isinstance(p, DiracSum):
            lo, hi = min(lo, p.points.min()), max(hi, p.points.max())
        else:
            lo, hi = min(lo, p.mesh.p.min()), max(hi, p.mesh.p.max())
    return float(lo), float(hi)


def quantile(mu: Measure, t, iters: int = 80) -> np.ndarray:
    """Generalized inverse F^{-1}(t) = inf{x : F(x) >= t} of a 1D measure (bisection).

    Parameters
    ----------
    mu : Measure
        A measure on an interval (dim 1).
    t : array_like
        Levels in ``[0, mu.mass()]``.
    iters : int, optional
        Largest number of bisection steps (default 80).

    Returns
    -------
    numpy.ndarray
        The quantiles, same shape as ``t``.

    Raises
    ------
    ValueError
        If ``mu`` is not one-dimensional.

    Examples
    --------
    >>> from femot.fem import DiracSum, quantile
    >>> mu = DiracSum([0.2, 0.7], [0.25, 0.75])
    >>> [round(float(v), 6) for v in quantile(mu, [0.1, 0.5])]
    [0.2, 0.7]
    """
    if mu.dim != 1:
        raise ValueError("mu: quantiles need a measure on an interval (dim 1)")
    t = np.asarray(t, dtype=float)
    a, b = _interval_of(mu)
    lo = np.full(t.shape, a - 1.0)  # F(lo) = 0 < t
    hi = np.full(t.shape, b)  # F(hi) = |mu| >= t
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        up = mu.cdf(mid) >= t
        hi = np.where(up, mid, hi)
        lo = np.where(up, lo, mid)
        if np.all(hi - lo <= 4 * np.finfo(float).eps * max(1.0, abs(a), abs(b))):
            break
    return hi


def wasserstein_1d(mu1: Measure, mu2: Measure, beta: float = 2.0, *, grid: int = 2048,
                   points: int = 8, rtol: float = 1e-10) -> float:
    """W_beta^beta(mu1, mu2) = int_0^m |F1^{-1}(t) - F2^{-1}(t)|^beta dt on the real line.

    The exact optimal transport cost for c = |x - y|^beta, beta >= 1 (monotone
    rearrangement; m = |mu1| = |mu2|). The t-axis [0, m] is split at the levels F_i(x_k)
    of both CDFs on a uniform grid of ``grid`` points x_k of the support interval and at
    the levels just below and at every atom. On each piece both quantile functions move
    within one grid cell (or sit at an atom) even where a density is tiny (steep
    quantiles), so ``points``-node Gauss-Legendre rules integrate them accurately.
    Quantiles are exact up to bisection (~1e-15). With the defaults the result is
    accurate to about 1e-10 for Gaussian-type mixtures with atoms (compare
    ``grid`` and ``2 * grid`` to estimate).
    For atoms given as arrays (positions and masses) the same cost is
    :func:`femot.core.wasserstein_pp_1d`; this function is the one for measures with densities.

    Parameters
    ----------
    mu1, mu2 : Measure
        Measures on intervals (dim 1) of equal mass.
    beta : float, optional
        Exponent of the cost, >= 1 for the monotone coupling to be optimal (default 2).
    grid : int, optional
        Grid points on each support interval, >= 2 (default 2048).
    points : int, optional
        Gauss-Legendre nodes per piece (default 8).
    rtol : float, optional
        Relative tolerance of the mass comparison (default 1e-10).

    Returns
    -------
    float
        ``W_beta^beta(mu1, mu2)``.

    Raises
    ------
    ValueError
        If ``beta <= 0``, a measure is not one-dimensional, ``grid`` is invalid, or the
        masses differ.

    Examples
    --------
    >>> import numpy as np, skfem
    >>> from femot.fem import Density, DiracSum, wasserstein_1d
    >>> wasserstein_1d(DiracSum([0.1]), DiracSum([0.6]), 2.0)
    0.25
    >>> uniform = Density(lambda x: np.ones(len(x)), skfem.MeshLine(np.linspace(0.0, 1.0, 5)))
    >>> round(wasserstein_1d(uniform, DiracSum([0.5]), 2.0), 10)  # the variance 1/12
    0.0833333333
    """
    beta = check_positive_scalar(beta, "beta")
    if mu1.dim != 1 or mu2.dim != 1:
        raise ValueError("mu1, mu2: wasserstein_1d needs measures on intervals (dim 1)")
    if not isinstance(grid, (int, np.integer)) or grid < 2:
        raise ValueError(f"grid must be an integer >= 2, got {grid!r}")
    m1, m2 = mu1.mass(), mu2.mass()
    if abs(m1 - m2) > rtol * max(m1, m2):
        raise ValueError(f"mu1 and mu2 must have equal mass, got {m1:.12g} and {m2:.12g}")
    m = 0.5 * (m1 + m2)
    a1, b1 = _interval_of(mu1)
    a2, b2 = _interval_of(mu2)
    xs = np.linspace(min(a1, a2), max(b1, b2), grid)
    levels = [np.array([0.0, m]), mu1.cdf(xs) * (m / m1), mu2.cdf(xs) * (m / m2)]
    for mu, scale in ((mu1, m / m1), (mu2, m / m2)):
        z, w = mu.atoms()
        if z.size:
            Fz = mu.cdf(z[:, 0])
            levels += [Fz * scale, (Fz - w) * scale]
    lv = np.unique(np.clip(np.concatenate(levels), 0.0, m))
    g, gw = np.polynomial.legendre.leggauss(points)
    Q = lambda t: quantile(mu1, t * (m1 / m)) - quantile(mu2, t * (m2 / m))

    def nodes(a, b):
        t = (a[:, None] + b[:, None]) / 2 + (b - a)[:, None] / 2 * g[None]
        return t, (b - a)[:, None] / 2 * gw[None]

    a, b = lv[:-1], lv[1:]
    t, wt = nodes(a, b)
    dq = Q(t)
    # |Q1 - Q2|^beta has a kink where the quantiles cross: split those pieces at the crossing.
    flip = np.flatnonzero((np.sign(dq[:, :-1]) * np.sign(dq[:, 1:]) < 0).any(axis=1))
    if flip.size and beta % 2 != 0:
        k = np.argmax(np.sign(dq[flip, :-1]) * np.sign(dq[flip, 1:]) < 0, axis=1)
        lo, hi = t[flip, k], t[flip, k + 1]
        slo = np.sign(dq[flip, k])
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            same = np.sign(Q(mid)) == slo
            lo, hi = np.where(same, mid, lo), np.where(same, hi, mid)
        cut = 0.5 * (lo + hi)
        keep = np.setdiff1d(np.arange(a.size), flip)
        a = np.concatenate([a[keep], a[flip], cut])
        b = np.concatenate([b[keep], cut, b[flip]])
        t, wt = nodes(a, b)
        dq = Q(t)
    return float((wt * np.abs(dq) ** beta).sum())
