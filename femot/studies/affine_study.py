"""A 2D x 2D transport study with a closed-form reference: an affine optimal map.

For the cost |x - y|^2, Brenier's theorem makes the gradient of a convex function
the optimal map from a measure with a density to its push-forward.  Take

    T(x) = A x + b,   A symmetric positive definite   (T = grad(x.A x / 2 + b.x)),

mu1 with the smooth density f(x) = 1 + 1/2 sin(2 pi x_1) cos(pi x_2) on the unit
square (mass 1), and mu2 = T#mu1, the density g(y) = f(T^{-1} y) / det A on the
parallelogram T([0, 1]^2).  Then T is optimal and

    W_2^2(mu1, mu2) = int_{[0,1]^2} |x - T(x)|^2 f(x) dx,

evaluated by tensor Gauss-Legendre quadrature with 40 points per axis (the
integrand is a polynomial of degree 2 times trigonometric factors; the rule is
exact to rounding, which the function checks against 60 points).

Level k of the schedule discretizes the square by an m x m P1 mesh and the
parallelogram by the affine image of an (m + 1) x (m + 1) mesh (so that the two
point sets do not match node for node), both with lumped P1 quadrature, and
couples the parameters to the mesh width h = 1 / (m - 1): the support width of the
regularized plan, delta = 4 h, and gamma = delta^4 (in 2D the width scales like
gamma^(1/4)), so gamma, delta -> 0 together as the meshes are refined.  Each level
is solved matrix-free and coarse-to-fine (``init='coarse'`` of ``femot.solve_qrot``); the error of
the transport cost sum_ij w1_i w2_j c_ij pi_ij against W_2^2 and of the barycentric
map against T are reported, with least-squares rates in h.
"""
from __future__ import annotations

import time

import numpy as np

from femot.core import GeometricCost, certify_working_set, solve_qrot
from femot.fem import quadrature

__all__ = ["affine_w2_squared", "affine_level", "affine_study", "fitted_rate", "DEFAULT_A", "DEFAULT_B"]

DEFAULT_A = np.array([[1.2, 0.3], [0.3, 0.9]])
DEFAULT_B = np.array([0.3, -0.2])


def _density1(x):
    return 1.0 + 0.5 * np.sin(2 * np.pi * x[:, 0]) * np.cos(np.pi * x[:, 1])


def _check_affine(A, b):
    A = np.asarray(A, dtype=float)
    b = np.asarray(b, dtype=float)
    if A.shape != (2, 2) or b.shape != (2,):
        raise ValueError(f"A must be 2 x 2 and b of length 2, got {A.shape} and {b.shape}")
    if not np.allclose(A, A.T) or np.linalg.eigvalsh(A).min() <= 0:
        raise ValueError("A must be symmetric positive definite (T = A x + b is then the optimal map)")
    return A, b


def affine_w2_squared(A=DEFAULT_A, b=DEFAULT_B, points: int = 40) -> float:
    """Closed-form reference ``W_2^2(mu1, T#mu1) = int |x - A x - b|^2 f(x) dx`` on the unit square.

    Evaluated by tensor Gauss-Legendre quadrature and checked against a rule with 20 more
    points per axis.

    Parameters
    ----------
    A : array_like, shape (2, 2), optional
        Symmetric positive definite matrix of the map ``T(x) = A x + b`` (default ``DEFAULT_A``).
    b : array_like, shape (2,), optional
        Shift of the map (default ``DEFAULT_B``).
    points : int, optional
        Gauss points per axis (default 40).

    Returns
    -------
    float
        The squared Wasserstein-2 distance.

    Raises
    ------
    ValueError
        If ``A`` is not a symmetric positive definite 2 x 2 matrix or ``b`` not of length 2.
    RuntimeError
        If the two Gauss rules differ by more than 1e-13 relative.
    """
    A, b = _check_affine(A, b)

    def rule(k):
        t, w = np.polynomial.legendre.leggauss(k)
        t, w = 0.5 * (t + 1.0), 0.5 * w
        X = np.stack(np.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
        W = np.outer(w, w).ravel()
        d = X - (X @ A.T + b)
        return float(W @ (_density1(X) * (d * d).sum(1)))

    val = rule(points)
    check = rule(points + 20)
    if abs(val - check) > 1e-13 * abs(check):
        raise RuntimeError(f"Gauss rule not converged: {val} vs {check}")
    return val


def _meshes(m, A, b):
    import skfem

    t = np.linspace(0.0, 1.0, m)
    sq = skfem.MeshTri.init_tensor(t, t)
    s = np.linspace(0.0, 1.0, m + 1)
    pg = skfem.MeshTri.init_tensor(s, s)
    pg = skfem.MeshTri(A @ pg.p + b[:, None], pg.t)
    return sq, pg


def affine_level(m: int, A=DEFAULT_A, b=DEFAULT_B, *, support_factor: float = 4.0, tol: float = 1e-9,
                 reference: float | None = None) -> dict:
    """Solve one level (m x m square mesh, (m+1) x (m+1) parallelogram mesh) and measure its errors.

    Parameters
    ----------
    m : int
        Nodes per side of the square mesh, >= 3 (mesh width ``h = 1/(m - 1)``).
    A : array_like, shape (2, 2), optional
        Symmetric positive definite matrix of the map ``T(x) = A x + b`` (default ``DEFAULT_A``).
    b : array_like, shape (2,), optional
        Shift of the map (default ``DEFAULT_B``).
    support_factor : float, optional
        ``delta = support_factor * h`` and ``gamma = delta^4`` (default 4).
    tol : float, optional
        Tolerance of the multiscale QROT solve (default 1e-9).
    reference : float or None, optional
        ``W_2^2`` if already computed; None (default) evaluates :func:`affine_w2_squared`.

    Returns
    -------
    dict
        Sizes, ``h``, ``delta``, ``gamma``, solver diagnostics (``success``, ``certified``,
        ``nit``, ``time_s``, ``levels``), ``plan_nnz``, ``marginal_error``,
        ``transport_cost``, ``W2_squared``, ``cost_error`` and the barycentric map errors
        ``map_error_l2`` (weighted by mu1) and ``map_error_max``.

    Raises
    ------
    ValueError
        If ``A`` is not a symmetric positive definite 2 x 2 matrix or ``b`` not of length 2, or ``m < 3``.
    """
    A, b = _check_affine(A, b)
    if m < 3:
        raise ValueError(f"m must be >= 3, got {m}")
    sq, pg = _meshes(m, A, b)
    q1, q2 = quadrature(sq), quadrature(pg)
    x, y = q1.nodes, q2.nodes
    mu1 = _density1(x)
    mu2 = _density1(np.linalg.solve(A, (y - b).T).T) / np.linalg.det(A)
    mu1 = mu1 / (q1.weights @ mu1)  # the lumped rule's mass error is O(h^2); both get mass 1
    mu2 = mu2 / (q2.weights @ mu2)
    h = 1.0 / (m - 1)
    delta = support_factor * h
    gamma = delta ** 4
    t0 = time.perf_counter()
    G = GeometricCost(x, y)
    r = solve_qrot(G, mu1, mu2, gamma, 0.0, q1.weights, q2.weights, tol=tol, init="coarse")
    certified = certify_working_set(G, r.alpha, r.beta, r.plan.indptr, r.plan.indices).size == 0
    elapsed = time.perf_counter() - t0
    P = r.plan
    W2 = affine_w2_squared(A, b) if reference is None else reference
    cost = r.transport_cost()
    # barycentric map: T_bar(x_i) = sum_j w2_j pi_ij y_j / mu1_i
    Tb = (P @ (q2.weights[:, None] * y)) / mu1[:, None]
    Tx = x @ A.T + b
    dev = np.sqrt(((Tb - Tx) ** 2).sum(1))
    marg = float(max(np.abs(P @ q2.weights - mu1).max(), np.abs(P.T @ q1.weights - mu2).max()))
    return {
        "m": m, "n1": int(x.shape[0]), "n2": int(y.shape[0]), "pairs": int(x.shape[0]) * int(y.shape[0]),
        "h": h, "delta": delta, "gamma": gamma, "success": bool(r.success), "certified": certified,
        "nit": int(r.nit), "time_s": elapsed, "plan_nnz": int(P.nnz), "marginal_error": marg,
        "transport_cost": cost, "W2_squared": W2, "cost_error": abs(cost - W2),
        "map_error_l2": float(np.sqrt(q1.weights @ (mu1 * dev ** 2))), "map_error_max": float(dev.max()),
        "levels": r["levels"],
    }


def fitted_rate(h, err) -> float:
    """Least-squares slope of log(err) against log(h).

    Parameters
    ----------
    h : array_like
        Mesh widths.
    err : array_like
        Positive errors, one per mesh width.

    Returns
    -------
    float
        The fitted exponent; NaN with fewer than two points.
    """
    h, err = np.asarray(h, float), np.asarray(err, float)
    if h.size < 2:
        return float("nan")
    return float(np.polyfit(np.log(h), np.log(err), 1)[0])


def affine_study(levels: int, m_last: int = 201, A=DEFAULT_A, b=DEFAULT_B, *, tol: float = 1e-9,
                 callback=None) -> dict:
    """Run :func:`affine_level` on a schedule of meshes whose width halves per level.

    The schedule is ``m_k = (m_last - 1) / 2^(levels - 1 - k) + 1``, ``k = 0 .. levels - 1``.

    Parameters
    ----------
    levels : int
        Number of levels, >= 1.
    m_last : int, optional
        Nodes per side on the finest level (default 201); ``m_last - 1`` must be divisible
        by ``2^(levels - 1)``.
    A : array_like, shape (2, 2), optional
        Symmetric positive definite matrix of the map ``T(x) = A x + b`` (default ``DEFAULT_A``).
    b : array_like, shape (2,), optional
        Shift of the map (default ``DEFAULT_B``).
    tol : float, optional
        Tolerance of every solve (default 1e-9).
    callback : callable or None, optional
        ``callback(row)`` is called with each level's dict as soon as it is done.

    Returns
    -------
    dict
        ``{"levels": [affine_level(...) per level], "rate_cost": ..., "rate_map_l2": ...,
        "W2_squared": ...}`` with the rates from :func:`fitted_rate`.

    Raises
    ------
    ValueError
        If ``levels < 1``, ``m_last - 1`` is not divisible by ``2^(levels - 1)``, the
        coarsest mesh would have ``m < 3``, or ``A``/``b`` are invalid.
    """
    levels = int(levels)
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    if (m_last - 1) % (2 ** (levels - 1)) != 0:
        raise ValueError(f"m_last - 1 = {m_last - 1} must be divisible by 2^(levels - 1) = {2 ** (levels - 1)}")
    ms = [(m_last - 1) // 2 ** (levels - 1 - k) + 1 for k in range(levels)]
    if ms[0] < 3:
        raise ValueError(f"too many levels for m_last = {m_last}: the coarsest mesh would have m = {ms[0]}")
    W2 = affine_w2_squared(A, b)
    rows = []
    for m in ms:
        row = affine_level(m, A, b, tol=tol, reference=W2)
        rows.append(row)
        if callback is not None:
            callback(row)
    h = [r["h"] for r in rows]
    return {"W2_squared": W2, "levels": rows,
            "rate_cost": fitted_rate(h, [r["cost_error"] for r in rows]),
            "rate_map_l2": fitted_rate(h, [r["map_error_l2"] for r in rows])}
