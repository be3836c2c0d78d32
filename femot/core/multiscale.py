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

from femot.core.coarsening import coarse_start, coarsen, interpolate_potential
from femot.core.cost import GeometricCost

__all__ = ["coarsen", "interpolate_potential", "certify_working_set", "coarse_start", "solve_qrot_multiscale"]


def certify_working_set(cost, alpha, beta, indptr, indices, threshold: float = 0.0, full: bool = False):
    """Rows where some pair outside the working set has ``z_ij > threshold``.

    ``z_ij = alpha_i + beta_j - c_ij``; the working set is given in CSR form
    (``indptr``, ``indices``).  The pairs above the threshold are counted per
    row over *all* n1*n2 pairs; the working set's own pairs above it are a
    subset, so equal counts prove that no pair outside the set is above the
    threshold (with ``threshold = 0``: no active pair was left out, so the
    potentials solve the dual equations of the full problem, not only of the
    problem restricted to the set).  Returns the indices of the rows that fail
    (empty: certified).

    The count is ``cost.count_above``: for a :class:`~femot.core.cost.GeometricCost`
    a k-d tree search whose node bound ``alpha_i + max_node beta - dist(x_i, box)^p``
    proves, node by node, that the skipped pairs are not above the threshold
    (``femot.core.geometric``), so the certificate costs about as much as the
    pairs it counts.  ``full=True`` counts with one streaming pass over every
    pair instead (an independent check; n1*n2 cost evaluations).

    Parameters
    ----------
    cost : Cost
        The full cost (a :class:`~femot.core.cost.Cost`).
    alpha : numpy.ndarray, shape (n1,)
        Dual potential of the first marginal.
    beta : numpy.ndarray, shape (n2,)
        Dual potential of the second marginal.
    indptr, indices : numpy.ndarray
        CSR structure of the working set.
    threshold : float, optional
        Pairs with ``z_ij > threshold`` count (default 0).
    full : bool, optional
        Count over all pairs with a streaming pass instead of ``cost.count_above`` (default False).

    Returns
    -------
    numpy.ndarray
        Indices of the rows with a pair above the threshold outside the working set.
    """
    from femot.core import kernels

    n1 = len(indptr) - 1
    if full or not hasattr(cost, "count_above"):
        full_count = kernels.count_above(cost.kernel_operand, alpha, beta, float(threshold))
    else:
        full_count = cost.count_above(alpha, beta, float(threshold))
    rows = np.repeat(np.arange(n1), np.diff(indptr))
    z = alpha[rows] + beta[indices] - cost.entries(rows, indices)
    inside = np.bincount(rows[z > threshold], minlength=n1)
    return np.nonzero(full_count != inside)[0]


def solve_qrot_multiscale(x1, x2, mu1, mu2, gamma, w1, w2, *, p: float = 2.0, eps: float = 0.0,
                          coarsest: int = 2000, factor: float = 4.0, tol: float = 1e-10, certify: str = "tree",
                          coupled: bool = True, coarse_tol: float = 1e-7, **options):
    """QROT between point clouds (cost |x - y|^p, matrix-free) from coarse-to-fine warm starts.

    Solves the problem of :func:`femot.solve_qrot` with ``c = GeometricCost(x1, x2, p)``
    (docs/core.md, section 6): levels are coarsened by ``factor`` (points per level) until
    both sides have at most ``coarsest`` points; every level is solved from the
    interpolated potentials of the coarser one, the coarsest from the cold start.

    Only the finest level is the problem asked for; the coarser ones only produce its
    warm start.  With ``coupled`` (default) a coarse level with n points per side
    (``n = sqrt(n1 n2)``) uses ``gamma_l = gamma (n_fine / n)^((d + 2) / d)`` (d the
    dimension of the points): the support width of the plan, ``~ gamma^(1/(d+2))``,
    then spans as many coarse cells as the fine plan spans fine ones.  With the fine
    gamma a coarse level resolves the plan by fewer than one cell per row and the
    semismooth Newton method crawls there.  Coarse levels are solved to ``coarse_tol``
    (at most 100 iterations; a coarse level that stops early still gives its potentials),
    the finest to ``tol``.

    Parameters
    ----------
    x1 : array_like, shape (n1,) or (n1, d)
        Support points of the first marginal.
    x2 : array_like, shape (n2,) or (n2, d)
        Support points of the second marginal (same d).
    mu1, mu2 : array_like, shapes (n1,) and (n2,)
        Nonnegative densities w.r.t. the weights (as in :func:`femot.solve_qrot`).
    gamma : float
        Regularization parameter of the fine problem (> 0).
    w1, w2 : array_like
        Positive quadrature weights of the points.
    p : float, optional
        Exponent of the cost ``|x - y|^p``, >= 1 (default 2).
    eps : float, optional
        Dual Tikhonov parameter (>= 0, default 0).
    coarsest : int, optional
        Coarsen until both sides have at most this many points (default 2000).
    factor : float, optional
        Reduction of the number of points per level, > 1 (default 4).
    tol : float, optional
        Residual tolerance of the fine solve (default 1e-10).
    certify : {'tree', 'full', 'none'}, optional
        After the fine solve, prove that no pair outside the plan's support is active
        (:func:`certify_working_set`; by the k-d tree search (default), or by one
        streaming pass over all n1*n2 pairs).  The result is in ``res["certified"]``
        (and its time in ``res["certify_s"]``).
    coupled : bool, optional
        Scale gamma on the coarse levels as described above (default True).
    coarse_tol : float, optional
        Residual tolerance of the coarse solves (default 1e-7; never below ``tol``).
    **options
        Further keywords of :func:`femot.solve_qrot` (``max_iter``, ``linear_solver``, ...).

    Returns
    -------
    QROTResult
        The fine result with ``levels`` (per level: sizes, gamma, iterations, time,
        success) added, and ``certified``/``certify_s`` unless ``certify='none'``.

    Raises
    ------
    ValueError
        If ``certify`` is not one of the three names, ``factor <= 1``, or
        :func:`femot.solve_qrot` rejects the data.
    """
    from femot.core.qrot import solve_qrot

    if certify not in ("tree", "full", "none"):
        raise ValueError(f"certify must be 'tree', 'full' or 'none', got {certify!r}")
    X1 = np.asarray(x1, dtype=float).reshape(len(x1), -1)
    X2 = np.asarray(x2, dtype=float).reshape(len(x2), -1)
    start = coarse_start(X1, X2, mu1, mu2, gamma, w1, w2, p=p, eps=eps, coarsest=coarsest, factor=factor,
                         coupled=coupled, coarse_tol=max(tol, coarse_tol), solver=solve_qrot, **options)
    x0, levels = (None, []) if start is None else (start[:2], start[2])
    t = time.perf_counter()
    res = solve_qrot(GeometricCost(X1, X2, p), mu1, mu2, gamma, eps, w1, w2, x0=x0, tol=tol, **options)
    levels.append({"n1": len(X1), "n2": len(X2), "gamma": float(gamma), "nit": int(res.nit),
                   "success": bool(res.success), "time_s": time.perf_counter() - t, "init": res.init,
                   "dense_passes": int(res.get("dense_passes", -1))})
    # certificate: no pair outside the plan's support is active (tree search, or one full pass)
    if certify != "none":
        P = res.plan
        t = time.perf_counter()
        res["certified"] = certify_working_set(res._cost, res.alpha, res.beta, P.indptr, P.indices,
                                               full=certify == "full").size == 0
        res["certify_s"] = time.perf_counter() - t
    res["levels"] = levels
    return res
