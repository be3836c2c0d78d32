"""Coarse-to-fine cold start of :func:`femot.solve_qrot` for point costs (``init='coarse'``).

Coarsened point sets (:func:`coarsen`), the transfer of potentials from a coarse level to
a finer one (:func:`interpolate_potential`) and the levels' solves (:func:`coarse_start`);
docs/core.md, section 6.
"""
from __future__ import annotations

import time

import numpy as np

from femot.core.cost import GeometricCost

__all__ = ["COARSE_START_MIN", "coarsen", "interpolate_potential", "coarse_start"]

#: Points on a side above which the solver's cold start comes from coarsened point sets.
COARSE_START_MIN = 4000


def coarsen(X, w, m, target: int):
    """Aggregate points on a uniform grid with about ``target`` nonempty cells.

    Parameters
    ----------
    X : array_like, shape (n,) or (n, d)
        The points.
    w : numpy.ndarray, shape (n,)
        Their quadrature weights.
    m : numpy.ndarray, shape (n,)
        Density values at the points (masses ``w * m``).
    target : int
        Desired number of nonempty cells (reached within about 20 %).

    Returns
    -------
    Xc : numpy.ndarray, shape (nc, d)
        Weighted centres of the nonempty cells.
    wc : numpy.ndarray, shape (nc,)
        Summed weights per cell.
    mc : numpy.ndarray, shape (nc,)
        Cell densities ``sum w m / sum w`` (so the masses ``wc * mc`` are conserved).
    label : numpy.ndarray, shape (n,)
        The cell of every point.

    Examples
    --------
    >>> import numpy as np
    >>> Xc, wc, mc, label = coarsen(np.linspace(0.0, 1.0, 8), np.ones(8), np.ones(8), 4)
    >>> [float(v) for v in wc], [int(v) for v in label]
    ([3.0, 2.0, 2.0, 1.0], [0, 0, 0, 1, 1, 2, 2, 3])
    """
    X = np.asarray(X, dtype=float).reshape(len(X), -1)
    n, d = X.shape
    lo, hi = X.min(0), X.max(0)
    ext = np.maximum(hi - lo, 1e-300)
    # cells per axis for ~target nonempty cells of the occupied volume (adjusted twice)
    k = max(1.0, (target * np.prod(ext) / ext.max() ** d) ** (1.0 / d))
    for _ in range(3):
        h = ext.max() / k
        idx = np.floor((X - lo) / h).astype(np.int64)
        key = np.ravel_multi_index(idx.T, tuple(idx.max(0) + 1))
        uniq, label = np.unique(key, return_inverse=True)
        if abs(uniq.size - target) <= 0.2 * target:
            break
        k *= (target / uniq.size) ** (1.0 / d)
    nc = uniq.size
    wc = np.bincount(label, w, minlength=nc)
    mass = np.bincount(label, w * m, minlength=nc)
    Xc = np.stack([np.bincount(label, w * X[:, j], minlength=nc) for j in range(d)], axis=1) / wc[:, None]
    return Xc, wc, mass / wc, label


def interpolate_potential(Xc, fc, X, k: int = 4):
    """Inverse-distance interpolation of values ``fc`` at ``Xc`` to the points ``X`` (k nearest).

    Parameters
    ----------
    Xc : array_like, shape (nc, d)
        Points carrying the values (e.g. a coarse level).
    fc : numpy.ndarray, shape (nc,)
        The values at ``Xc`` (a dual potential).
    X : array_like, shape (n, d)
        Points to interpolate to.
    k : int, optional
        Number of nearest neighbours, weighted by inverse squared distance (default 4;
        1 copies the nearest value).

    Returns
    -------
    numpy.ndarray, shape (n,)
        The interpolated values.

    Examples
    --------
    >>> import numpy as np
    >>> f = interpolate_potential(np.array([[0.0], [1.0]]), np.array([0.0, 1.0]), np.array([[0.25]]))
    >>> print(f"{f[0]:.4f}")  # weights 1/0.25^2 and 1/0.75^2
    0.1000
    """
    from scipy.spatial import cKDTree

    k = min(k, len(Xc))
    dist, idx = cKDTree(Xc).query(X, k=k)
    if k == 1:
        return fc[idx]
    wgt = 1.0 / np.maximum(dist, 1e-12 * (dist.max() + 1.0)) ** 2
    return (wgt * fc[idx]).sum(1) / wgt.sum(1)


def _chain(X1, w1, m1, X2, w2, m2, coarsest, factor):
    """Levels [fine, coarser, ..., coarsest] of aggregated point sets."""
    if factor <= 1:
        raise ValueError(f"factor must be > 1, got {factor!r}")
    chain = [(X1, w1, m1, X2, w2, m2)]
    while max(len(chain[-1][0]), len(chain[-1][3])) > coarsest:
        A1, v1, n1_, A2, v2, n2_ = chain[-1]
        C1, cw1, cm1, _ = coarsen(A1, v1, n1_, max(2, int(len(A1) / factor)))
        C2, cw2, cm2, _ = coarsen(A2, v2, n2_, max(2, int(len(A2) / factor)))
        if len(C1) >= len(A1) and len(C2) >= len(A2):
            break
        chain.append((C1, cw1, cm1, C2, cw2, cm2))
    return chain


def coarse_start(x1, x2, mu1, mu2, gamma, w1, w2, *, p: float = 2.0, eps: float = 0.0, coarsest: int = 2000,
                 factor: float = 4.0, coupled: bool = True, coarse_tol: float = 1e-7, solver, **options):
    """Warm start ``(alpha0, beta0, levels)`` for the fine problem from its coarse levels only.

    Levels are coarsened by ``factor`` (points per level) until both sides have at most
    ``coarsest`` points; the coarsest level is solved from the solver's cold start, every
    finer coarse level from the interpolated potentials of the one below, and finally the
    potentials are interpolated to the fine points.  None when the fine problem has no
    coarser level.  With ``coupled`` a level with n points per side (``n = sqrt(n1 n2)``)
    uses ``gamma_l = gamma (n_fine / n)^((d + 2) / d)`` (d the dimension of the points):
    the plan's support width, ``~ gamma^(1/(d+2))``, then spans as many coarse cells as
    the fine plan spans fine ones (with the fine gamma a coarse level resolves the plan by
    less than one cell per row, and Newton crawls there).  This is the cold start
    ``init='coarse'`` of :func:`femot.solve_qrot` for a :class:`~femot.core.GeometricCost`;
    ``solver`` is passed in so that this module stays below the solver in the imports.

    Parameters
    ----------
    x1, x2 : array_like, shapes (n1, d) and (n2, d)
        Support points of the two marginals (the cost is ``|x - y|^p``).
    mu1, mu2 : array_like, shapes (n1,) and (n2,)
        Densities of the marginals with respect to the weights.
    gamma : float
        Regularization parameter of the fine problem.
    w1, w2 : array_like, shapes (n1,) and (n2,)
        Quadrature weights of the fine points.
    p : float, optional
        Exponent of the cost (default 2).
    eps : float, optional
        Second regularization parameter (default 0: balanced masses; coarse levels are
        rebalanced).
    coarsest : int, optional
        Stop coarsening once both sides have at most this many points (default 2000).
    factor : float, optional
        Reduction of the number of points from one level to the next, > 1 (default 4).
    coupled : bool, optional
        Scale gamma with the level size as ``(n / n_level)^((d + 2)/d)`` (default True);
        False uses ``gamma`` on every level.
    coarse_tol : float, optional
        Tolerance of the coarse solves (default 1e-7).
    solver : callable
        The QROT solver, called as ``solver(cost, mu1, mu2, gamma, eps, w1, w2, x0=..., tol=...,
        **options)``.
    **options
        Further keywords of ``solver`` (``max_iter`` is capped at 100 on coarse levels).

    Returns
    -------
    tuple or None
        ``(alpha0, beta0, levels)``: the interpolated potentials on the fine points and one
        dict per coarse level (sizes, gamma, iterations, success, time); None if there is no
        coarser level.

    Raises
    ------
    ValueError
        If ``factor <= 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from femot import solve_qrot
    >>> rng = np.random.default_rng(0)
    >>> X, Y = rng.uniform(size=(60, 2)), rng.uniform(size=(50, 2))
    >>> alpha0, beta0, levels = coarse_start(X, Y, np.ones(60), np.full(50, 1.2), 1e-2, np.ones(60), np.ones(50),
    ...                                      coarsest=20, solver=solve_qrot)
    >>> alpha0.shape, [(lv["n1"], lv["n2"], lv["success"]) for lv in levels]
    ((60,), [(15, 13, True)])
    """

    X1 = np.asarray(x1, dtype=float).reshape(len(x1), -1)
    X2 = np.asarray(x2, dtype=float).reshape(len(x2), -1)
    chain = _chain(X1, np.asarray(w1, dtype=float), np.asarray(mu1, dtype=float),
                   X2, np.asarray(w2, dtype=float), np.asarray(mu2, dtype=float), coarsest, factor)
    if len(chain) < 2:
        return None
    dim = X1.shape[1]
    n_fine = np.sqrt(len(X1) * len(X2))
    res, levels = None, []
    for lev in range(len(chain) - 1, 0, -1):
        A1, v1, n1_, A2, v2, n2_ = chain[lev]
        if eps == 0.0:  # aggregation keeps the masses equal up to rounding; rebalance
            n2_ = n2_ * ((v1 @ n1_) / (v2 @ n2_))
        x0 = None
        if res is not None:
            P1, P2 = chain[lev + 1][0], chain[lev + 1][3]
            x0 = (interpolate_potential(P1, res.alpha, A1), interpolate_potential(P2, res.beta, A2))
        g = gamma * (n_fine / np.sqrt(len(A1) * len(A2))) ** ((dim + 2.0) / dim) if coupled else gamma
        opts = dict(options)
        opts["max_iter"] = min(int(opts.get("max_iter", 100)), 100)
        t = time.perf_counter()
        res = solver(GeometricCost(A1, A2, p), n1_, n2_, g, eps, v1, v2, x0=x0, tol=coarse_tol, **opts)
        levels.append({"n1": len(A1), "n2": len(A2), "gamma": float(g), "nit": int(res.nit),
                       "success": bool(res.success), "time_s": time.perf_counter() - t, "init": res.init,
                       "dense_passes": int(res.get("dense_passes", -1))})
    assert res is not None  # len(chain) >= 2: at least one coarse level was solved
    P1, P2 = chain[1][0], chain[1][3]
    return interpolate_potential(P1, res.alpha, X1), interpolate_potential(P2, res.beta, X2), levels
