"""Coarse-to-fine solution of QROT between point clouds with the cost |x - y|^p.

A warm start for :func:`femot.solve_qrot` from a hierarchy of coarsened point
sets: each level aggregates the points of the next finer one on a uniform
grid (cell masses and weights summed, centres at the weighted mean), the
coarsest level is solved from the solver's cold start, and the potentials of
each level are carried to the next by inverse-distance interpolation between
the nearest coarse points.  In density scaling (weights = cell volumes,
densities = mass / weight) the regularized problem has the same gamma on every
level, so its potentials are approximations of one continuous pair.

The warm start changes only the starting point: the fine solve is the usual
semismooth Newton method (Lorenz, Manns, Meyer 2021) on the full product set,
whose streaming passes with safe screening (``femot.core.qrot._Engine``) only
leave out entries proven inactive, so the returned plan is the exact solution
of the fine problem (the same as the dense solver's), with the same residual
test.
"""
from __future__ import annotations

import time

import numpy as np

from femot.core.cost import GeometricCost

__all__ = ["coarsen", "interpolate_potential", "certify_working_set", "solve_qrot_multiscale"]


def certify_working_set(cost, alpha, beta, indptr, indices, threshold: float = 0.0):
    """Rows where some pair outside the working set has ``z_ij > threshold``.

    ``z_ij = alpha_i + beta_j - c_ij``; the working set is given in CSR form
    (``indptr``, ``indices``).  One full streaming pass counts, per row, the
    pairs above the threshold; the working set's own pairs above it are a subset,
    so equal counts prove that no pair outside the set is above the threshold
    (with ``threshold = 0``: no active pair was left out).  Returns the indices
    of the rows that fail (empty: certified).
    """
    from femot.core import kernels

    n1 = len(indptr) - 1
    full = kernels.count_above(cost.kernel_operand, alpha, beta, float(threshold))
    rows = np.repeat(np.arange(n1), np.diff(indptr))
    z = alpha[rows] + beta[indices] - cost.entries(rows, indices)
    inside = np.bincount(rows[z > threshold], minlength=n1)
    return np.nonzero(full != inside)[0]


def coarsen(X, w, m, target: int):
    """Aggregate points on a uniform grid with about ``target`` nonempty cells.

    Returns ``(Xc, wc, mc, label)``: weighted centres, summed weights, densities
    ``sum w m / sum w`` and the cell of every fine point.
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
    """Inverse-distance interpolation of values ``fc`` at ``Xc`` to the points ``X`` (k nearest)."""
    from scipy.spatial import cKDTree

    k = min(k, len(Xc))
    dist, idx = cKDTree(Xc).query(X, k=k)
    if k == 1:
        return fc[idx]
    wgt = 1.0 / np.maximum(dist, 1e-12 * (dist.max() + 1.0)) ** 2
    return (wgt * fc[idx]).sum(1) / wgt.sum(1)


def solve_qrot_multiscale(x1, x2, mu1, mu2, gamma, w1, w2, *, p: float = 2.0, eps: float = 0.0,
                          coarsest: int = 2000, factor: float = 4.0, tol: float = 1e-10, **options):
    """QROT between point clouds (cost |x - y|^p, matrix-free) from coarse-to-fine warm starts.

    Solves the problem of :func:`femot.solve_qrot` with ``c = GeometricCost(x1, x2, p)``:
    levels are coarsened by ``factor`` (points per level) until both sides have at most
    ``coarsest`` points; every level is solved (to ``tol``) from the interpolated
    potentials of the coarser one.  Returns the fine :class:`~femot.core.qrot.QROTResult`
    with ``levels`` (per level: sizes, iterations, time, success) added.
    """
    from femot.core.qrot import solve_qrot

    X1 = np.asarray(x1, dtype=float).reshape(len(x1), -1)
    X2 = np.asarray(x2, dtype=float).reshape(len(x2), -1)
    w1 = np.asarray(w1, dtype=float)
    w2 = np.asarray(w2, dtype=float)
    m1 = np.asarray(mu1, dtype=float)
    m2 = np.asarray(mu2, dtype=float)
    if factor <= 1:
        raise ValueError(f"factor must be > 1, got {factor!r}")
    chain = [(X1, w1, m1, X2, w2, m2, None, None)]
    while max(len(chain[-1][0]), len(chain[-1][3])) > coarsest:
        A1, v1, n1_, A2, v2, n2_ = chain[-1][:6]
        C1, cw1, cm1, _ = coarsen(A1, v1, n1_, max(2, int(len(A1) / factor)))
        C2, cw2, cm2, _ = coarsen(A2, v2, n2_, max(2, int(len(A2) / factor)))
        if len(C1) >= len(A1) and len(C2) >= len(A2):
            break
        chain.append((C1, cw1, cm1, C2, cw2, cm2, None, None))
    x0 = None
    levels = []
    res = None
    for lev in range(len(chain) - 1, -1, -1):
        A1, v1, n1_, A2, v2, n2_ = chain[lev][:6]
        if eps == 0.0 and lev > 0:  # aggregation keeps the masses equal up to rounding; rebalance
            n2_ = n2_ * ((v1 @ n1_) / (v2 @ n2_))
        if res is not None:
            P1, P2 = chain[lev + 1][0], chain[lev + 1][3]
            x0 = (interpolate_potential(P1, res.alpha, A1), interpolate_potential(P2, res.beta, A2))
        t = time.perf_counter()
        res = solve_qrot(GeometricCost(A1, A2, p), n1_, n2_, gamma, eps, v1, v2, x0=x0, tol=tol, **options)
        levels.append({"n1": len(A1), "n2": len(A2), "nit": int(res.nit), "success": bool(res.success),
                       "time_s": time.perf_counter() - t, "init": res.init,
                       "dense_passes": int(res.get("dense_passes", -1))})
    # certificate: one full pass confirms that no pair outside the plan's support is active
    P = res.plan
    res["certified"] = certify_working_set(GeometricCost(X1, X2, p), res.alpha, res.beta, P.indptr,
                                           P.indices).size == 0
    res["levels"] = levels
    return res
