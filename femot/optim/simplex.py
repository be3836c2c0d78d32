"""Geometry of the (weighted) simplex used by the trust-region method.

The feasible set of the upper-level problems is the weighted simplex

    S_w(s) = { x in R^n : x >= 0,  sum_i w_i x_i = s },   w > 0, s > 0,

(the standard simplex of Part III, (RTI), is w = 1, s = 1; on a mesh, w are
quadrature weights and x a density).  This module provides

* the Euclidean projection onto S_w(s) (sort-based, O(n log n));
* the stationarity measure of Part III, Algorithm 4.1, Step 4,

      theta_R(x, g) = - min { <g, d> : x + d in S_w(s), |d|_2 <= R },

  in closed form when the ball is inactive and otherwise exactly through a
  one-dimensional dual search (see :func:`theta_R`);
* the modified stationarity measure psi_R of Algorithm 4.1, Step 11, for the
  model phi(d) = max_k <g_k, d> built from finitely many collected
  subgradients (Part III, Remark 4.2, eq. (4.2)), solved as a linear program.

All routines work with plain NumPy vectors; validation is done in the public
functions only, the ``_``-prefixed kernels trust their input (they run inside
the optimizer's loop).
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linprog

from femot._docstrings import cite, fill_doc
from femot._validation import as_positive_weights, as_vector, check_positive_scalar

__all__ = [
    "project_simplex",
    "project_weighted_simplex",
    "simplex_diameter",
    "simplex_vertices",
    "theta_R",
    "psi_R",
]

# the argument entries the simplex functions share
_simplex_doc = fill_doc(
    mass="""
mass : float, optional
    Mass of the simplex, > 0 (default 1).
""",
    ball="""
R : float or None, optional
    Radius of the ball (default ``np.inf``; ``np.inf`` or ``None``: no ball).
weights : array_like or None, optional
    Positive weights of the simplex; ``None`` (default) is w = 1.
mass : float, optional
    Mass ``s > 0`` of the simplex (default 1).
return_direction : bool, optional
    Also return the minimizing d (with |d| <= R); default False.
""",
    step_raises="""
d : numpy.ndarray, shape (n,)
    The minimizing step, only with ``return_direction``.

Raises
------
ValueError
    If ``x`` or the (sub)gradients are malformed, ``x`` is not on the simplex, a weight or
    ``mass`` is not positive, or ``R`` is not a positive radius.
""",
)


# --------------------------------------------------------------------------
# projections
# --------------------------------------------------------------------------
def _project(y: np.ndarray, w: np.ndarray | None, s: float) -> np.ndarray:
    """Projection of y onto S_w(s); ``w=None`` means the standard simplex.

    KKT: x_i = max(y_i - tau w_i, 0) with tau chosen so that sum w_i x_i = s.
    h(tau) = sum_i w_i max(y_i - tau w_i, 0) is continuous, piecewise linear
    and decreasing with breakpoints y_i / w_i.  If the k largest ratios are
    the support, tau_k = (sum_{top k} w_i y_i - s) / sum_{top k} w_i^2, and the
    support is the largest k whose k-th ratio still exceeds tau_k.
    """
    if w is None:
        u = np.sort(y)[::-1]
        css = np.cumsum(u)
        k = np.arange(1, y.size + 1)
        taus = (css - s) / k
        r = np.nonzero(u > taus)[0][-1]
        return np.maximum(y - taus[r], 0.0)
    t = y / w
    order = np.argsort(t)[::-1]
    wy = np.cumsum(w[order] * y[order])
    ww = np.cumsum(w[order] ** 2)
    taus = (wy - s) / ww
    r = np.nonzero(t[order] > taus)[0][-1]
    return np.maximum(y - taus[r] * w, 0.0)


@_simplex_doc
def project_simplex(y, mass: float = 1.0) -> np.ndarray:
    """Euclidean projection of ``y`` onto {x >= 0, sum x = mass}.

    The classical sort algorithm (O(n log n)); the result is
    ``max(y - tau, 0)`` for the unique scalar ``tau`` giving the right mass.

    Parameters
    ----------
    y : array_like, shape (n,)
        The point to project.
    %(mass)s

    Returns
    -------
    numpy.ndarray, shape (n,)
        The projection.

    Raises
    ------
    ValueError
        If ``y`` is not a finite vector or ``mass <= 0``.

    Examples
    --------
    >>> print([round(float(v), 6) for v in project_simplex([0.5, 0.2, -1.0])])
    [0.65, 0.35, 0.0]
    """
    y = as_vector(y, "y")
    s = check_positive_scalar(mass, "mass")
    return _project(y, None, s)


@_simplex_doc
def project_weighted_simplex(y, weights, mass: float = 1.0) -> np.ndarray:
    """Euclidean projection of ``y`` onto {x >= 0, sum_i w_i x_i = mass}, w > 0.

    The projection is ``x = max(y - tau * w, 0)``; ``tau`` is found by sorting
    the breakpoints ``y_i / w_i`` (O(n log n)).

    Parameters
    ----------
    y : array_like, shape (n,)
        The point to project.
    weights : array_like, shape (n,) or None
        Positive weights ``w`` (e.g. lumped mass or quadrature weights); None means ones.
    %(mass)s

    Returns
    -------
    numpy.ndarray, shape (n,)
        The projection (in the Euclidean norm, not the weighted one).

    Raises
    ------
    ValueError
        If ``y`` is not a finite vector, a weight is ``<= 0`` or ``mass <= 0``.

    Examples
    --------
    >>> x = project_weighted_simplex([1.0, 1.0], [1.0, 2.0], mass=2.0)
    >>> print([round(float(v), 6) for v in x])
    [0.8, 0.6]
    """
    y = as_vector(y, "y")
    w = as_positive_weights(weights, "weights", y.size)
    s = check_positive_scalar(mass, "mass")
    return _project(y, w, s)


@_simplex_doc
def simplex_vertices(weights, mass: float = 1.0) -> np.ndarray:
    """Vertices ``mass / w_i * e_i`` of S_w(mass) as the rows of a diagonal matrix.

    Parameters
    ----------
    weights : array_like, shape (n,)
        Positive weights ``w`` of the simplex ``S_w(mass) = {x >= 0, sum w_i x_i = mass}``.
    %(mass)s

    Returns
    -------
    numpy.ndarray, shape (n, n)
        Row ``i`` is the vertex ``mass / w_i * e_i``.

    Raises
    ------
    ValueError
        If ``weights`` is not a finite vector or ``mass <= 0``.

    Examples
    --------
    >>> print(simplex_vertices([1.0, 2.0], mass=2.0).tolist())
    [[2.0, 0.0], [0.0, 1.0]]
    """
    w = as_vector(weights, "weights")
    return np.diag(check_positive_scalar(mass, "mass") / w)


def _diameter(n: int, w: np.ndarray | None, s: float) -> float:
    """Exact diameter of S_w(s).

    The distance is convex, so it is maximized at a pair of vertices;
    |s/w_i e_i - s/w_j e_j| = s sqrt(w_i^-2 + w_j^-2) is largest for the two
    smallest weights.  Standard simplex: sqrt(2) s.  One point: 0.
    """
    if n < 2:
        return 0.0
    if w is None:
        return float(np.sqrt(2.0) * s)
    a, b = np.partition(w, 1)[:2]
    return float(s * np.hypot(1.0 / a, 1.0 / b))


@_simplex_doc
def simplex_diameter(n: int, weights=None, mass: float = 1.0) -> float:
    """Diameter of {x >= 0, sum w_i x_i = mass} in the Euclidean norm.

    For R >= this value the ball in theta_R / psi_R is inactive and the
    stationarity measure has the closed form of :func:`theta_R`.

    Parameters
    ----------
    n : int
        Dimension (number of nodes), >= 1.
    weights : array_like, shape (n,) or None, optional
        Positive weights; None (default) means the standard simplex.
    %(mass)s

    Returns
    -------
    float
        ``mass * sqrt(1/w_a^2 + 1/w_b^2)`` for the two smallest weights (``sqrt(2) mass``
        without weights, 0 for n = 1).

    Raises
    ------
    ValueError
        If ``n < 1``, a weight is ``<= 0`` or ``mass <= 0``.

    Examples
    --------
    >>> print(round(simplex_diameter(3), 6), round(simplex_diameter(2, [1.0, 2.0]), 6))
    1.414214 1.118034
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    w = None if weights is None else as_positive_weights(weights, "weights", n)
    return _diameter(n, w, check_positive_scalar(mass, "mass"))


# --------------------------------------------------------------------------
# stationarity measure theta_R (Algorithm 4.1, Step 4)
# --------------------------------------------------------------------------
def _theta(x, g, R, w, s):
    """Kernel of :func:`theta_R`; returns (theta, d, how)."""
    n = x.size
    wv = np.ones(n) if w is None else w
    r = g / wv
    m = r.min()
    # The linear problem min <g, z> over S_w(s) is solved by the face F spanned
    # by the vertices s/w_i e_i with g_i/w_i = m.  Of its solutions we use the
    # one closest to x (the lambda -> 0 limit of the dual path below).
    face = r == m
    zF = np.zeros(n)
    zF[face] = _project(x[face], None if w is None else w[face], s)
    d = zF - x
    theta_closed = float(g @ x - s * m)
    if R == np.inf or np.linalg.norm(d) <= R:
        return max(theta_closed, 0.0), d, "closed"
    return _theta_ball(x, g, R, w, s)


def _theta_ball(x, g, R, w, s):
    """theta_R when the ball |d| <= R cuts off the linear-program solution.

    Lagrange duality for the ball (Slater holds: d = 0 is strictly feasible):
    for a multiplier lam > 0 the minimizer of <g, z> + lam/2 |z - x|^2 over
    S_w(s) is z(t) = P(x - t g), t = 1/lam.  Complementary slackness asks for
    |z(t) - x| = R.  N(t) = |P(x - t g) - x| is continuous and nondecreasing
    (projection-arc lemma), N(0) = 0 and N(inf) = dist(x, F) > R, so a
    bracketing bisection finds t.  On a linear piece of the path (fixed
    support A) z(t) is affine in t, which gives the root exactly.
    """
    n = x.size
    wv = np.ones(n) if w is None else w

    def z_of(t):
        return _project(x - t * g, w, s)

    gn = np.linalg.norm(g)
    lo, hi = 0.0, R / gn  # N(t) <= t |g|, so the root is beyond R/|g|
    for _ in range(400):
        if np.linalg.norm(z_of(hi) - x) >= R:
            break
        lo, hi = hi, 2.0 * hi
    else:  # N(t) reaches dist(x, F) > R at a finite t; only rounding can get here
        d = z_of(hi) - x
        d *= min(1.0, R / max(np.linalg.norm(d), 1e-300))
        return max(float(-(g @ d)), 0.0), d, "ball"
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if np.linalg.norm(z_of(mid) - x) >= R:
            hi = mid
        else:
            lo = mid
    z = z_of(hi)
    # polish on the linear piece with support A of z(hi)
    A = z > 0
    wA = wv[A]
    nA = wA @ wA
    a0 = (wA @ x[A] - s) / nA
    a1 = (wA @ g[A]) / nA
    p = -x.copy()
    p[A] = -a0 * wA
    q = np.zeros(n)
    q[A] = -(g[A] - a1 * wA)
    qa, qb, qc = q @ q, 2.0 * (p @ q), p @ p - R * R
    if qa > 0:
        disc = qb * qb - 4.0 * qa * qc
        if disc >= 0:
            t = (-qb + np.sqrt(disc)) / (2.0 * qa)
            tau = a0 - t * a1
            zt = x - t * g - tau * wv
            tol = 1e-12 * (1.0 + np.abs(x).max())
            if (np.all(zt[A] >= -tol) and np.all(zt[~A] <= tol)
                    and lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)):
                z = np.where(A, np.maximum(zt, 0.0), 0.0)
                z = _project(z, w, s)  # remove rounding in the mass
    d = z - x
    nd = np.linalg.norm(d)
    if nd > R:  # stay feasible for the ball (S_w - x is star-shaped at 0)
        d *= R / nd
    return max(float(-(g @ d)), 0.0), d, "ball"


@cite("III")
@_simplex_doc
def theta_R(x, g, R=np.inf, *, weights=None, mass: float = 1.0, return_direction=False):
    """Stationarity measure of Part III, Algorithm 4.1, Step 4.

        theta_R(x, g) = - min { <g, d> : x + d in S_w(s), |d|_2 <= R }  >= 0.

    theta_R(x, g) = 0 iff -g lies in the normal cone of S_w(s) at x, i.e. x
    satisfies the variational inequality (VI) of Step 5 for the subgradient g.

    * Closed form (ball inactive).  Without the ball the minimum of the linear
      function over the polytope is attained at a vertex s/w_j e_j, so

          theta = <g, x> - s * min_i g_i / w_i      (standard: <g,x> - min g_i).

      It is exact whenever the minimizing face is within distance R of x, in
      particular whenever R >= diameter of S_w(s), which is exactly
      s * sqrt(w_(1)^-2 + w_(2)^-2) with w_(1) <= w_(2) the two smallest
      weights (sqrt(2) s for the standard simplex; see
      :func:`simplex_diameter`).
    * Ball active.  The problem is a convex QCQP; its minimizer is the
      projection point d = P(x - t g) - x with the scalar t > 0 fixed by
      |d| = R, found by a 1D search on t (see ``_theta_ball``).

    Parameters
    ----------
    x : array_like, shape (n,)
        A point of S_w(mass).
    g : array_like, shape (n,)
        A (sub)gradient of the objective at ``x``.
    %(ball)s

    Returns
    -------
    theta : float
        The stationarity measure (>= 0).
    %(step_raises)s

    Examples
    --------
    The vertex e_2 is the best linear decrease from (1/2, 1/2, 0) for g = (1, 0, 2):

    >>> print(round(theta_R([0.5, 0.5, 0.0], [1.0, 0.0, 2.0]), 6))
    0.5
    """
    x = as_vector(x, "x")
    g = as_vector(g, "g", length=x.size)
    w, s, R = _ball_args(x, R, weights, mass)
    th, d, _ = _theta(x, g, R, w, s)
    return (th, d) if return_direction else th


# --------------------------------------------------------------------------
# modified stationarity measure psi_R (Algorithm 4.1, Step 11)
# --------------------------------------------------------------------------
def _minmax_lp(x, G, offsets, radius, w, s, options=None):
    """HiGHS on  min_{d, t} t  s.t.  <g_k, d> - offsets_k <= t,  x + d in S_w(s),  |d|_inf <= radius.

    ``radius=None`` drops the box.  Returns the linprog result; ``res.x[:n]`` is x + d.
    Shared by :func:`psi_R` (offsets 0) and the trust region's cutting-plane step.
    """
    n = x.size
    K = G.shape[0]
    wv = np.ones(n) if w is None else w
    c = np.zeros(n + 1)
    c[-1] = 1.0
    A_ub = np.hstack([G, -np.ones((K, 1))])
    b_ub = G @ x + offsets
    if radius is None:
        bounds = [(0.0, None)] * n
    else:
        bounds = [(max(0.0, xi - radius), xi + radius) for xi in x]
    bounds.append((None, None))
    return linprog(c, A_ub=A_ub, b_ub=b_ub, A_eq=np.append(wv, 0.0)[None, :], b_eq=[s], bounds=bounds,
                   method="highs", options=options)


def _psi(x, G, R, w, s):
    """Kernel of :func:`psi_R`; returns (psi, d, linprog result)."""
    n = x.size
    # Inscribed box |d|_inf <= R/sqrt(n) keeps |d|_2 <= R and the problem an LP; the
    # value is then a lower bound of the 2-norm psi_R (no box when R covers the simplex).
    radius = None if R >= _diameter(n, w, s) else R / np.sqrt(n)
    res = _minmax_lp(x, G, 0.0, radius, w, s,
                     options={"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10})
    if res.status != 0 or res.x is None:
        raise RuntimeError(f"psi_R: the linear program failed ({res.message})")
    z = _project(res.x[:n], w, s)  # clean HiGHS feasibility tolerance
    d = z - x
    nd = np.linalg.norm(d)
    if nd > R:
        d *= R / nd
    psi = -float(np.max(G @ d))
    return max(psi, 0.0), d, res


@cite("III")
@_simplex_doc
def psi_R(x, G, R=np.inf, *, weights=None, mass: float = 1.0, return_direction=False):
    """Modified stationarity measure of Part III, Algorithm 4.1, Step 11.

    With finitely many subgradients g_1, ..., g_K collected in a ball around x
    (an inner approximation of the collective Bouligand subdifferential of
    Remark 4.2, eq. (4.2)) the model is phi(d) = max_k <g_k, d> and

        psi_R = - min { max_k <g_k, d> : x + d in S_w(s), |d| <= R }  >= 0.

    For R >= diameter of S_w(s) the ball is inactive and this is the LP

        min_{z, t} t   s.t.  <g_k, z - x> <= t (all k),  z >= 0,  <w, z> = s,

    solved by HiGHS (``scipy.optimize.linprog``).  For smaller R the ball is
    replaced by the inscribed box |d|_inf <= R / sqrt(n), which keeps the
    problem an LP and the minimizer inside the 2-norm ball (the value is then
    a lower bound of the 2-norm psi_R, exact when the ball is inactive).
    By minimax duality psi_R = min over convex combinations g of the g_k of
    theta_R(x, g); with K = 1 it equals theta_R.

    Parameters
    ----------
    x : array_like, shape (n,)
        A point of S_w(mass).
    G : array_like, shape (K, n)
        Subgradients as rows (a single (n,) vector is accepted).
    %(ball)s

    Returns
    -------
    psi : float
        The modified stationarity measure (>= 0).
    %(step_raises)s

    Examples
    --------
    At the kink of f(x) = |x_1 - x_2| no single subgradient is stationary, a convex
    combination of the two is:

    >>> G = [[1.0, -1.0], [-1.0, 1.0]]
    >>> print(round(theta_R([0.5, 0.5], G[0]), 6), psi_R([0.5, 0.5], G) <= 1e-12)
    1.0 True
    """
    x = as_vector(x, "x")
    G = np.atleast_2d(np.asarray(G, dtype=float))
    if G.ndim != 2 or G.shape[1] != x.size:
        raise ValueError(f"G must have shape (K, {x.size}), got {G.shape}")
    if not np.all(np.isfinite(G)):
        raise ValueError("G contains NaN or infinite entries")
    w, s, R = _ball_args(x, R, weights, mass)
    p, d, _ = _psi(x, G, R, w, s)
    return (p, d) if return_direction else p


def _ball_args(x, R, weights, mass):
    """The checked ``(w, s, R)`` of :func:`theta_R` and :func:`psi_R`, ``x`` checked to lie on S_w(s)."""
    s = check_positive_scalar(mass, "mass")
    w = None if weights is None else as_positive_weights(weights, "weights", x.size)
    R = _radius(R)
    _check_on_simplex(x, w, s, "x")
    return w, s, R


def _radius(R) -> float:
    """``None`` or ``inf`` -> inf (no ball), otherwise a positive number."""
    if R is None:
        return np.inf
    try:
        if float(R) == np.inf:
            return np.inf
    except (TypeError, ValueError):
        pass
    return check_positive_scalar(R, "R")


def _check_on_simplex(x, w, s, name, tol=1e-8):
    """Raise ValueError unless x >= -tol and |<w, x> - s| <= tol * max(1, s)."""
    if np.any(x < -tol):
        i = int(np.argmin(x))
        raise ValueError(f"{name} must lie on the simplex: {name}[{i}] = {x[i]:.3g} < 0")
    m = float(x.sum() if w is None else w @ x)
    if abs(m - s) > tol * max(1.0, s):
        raise ValueError(f"{name} must lie on the simplex: its mass is {m:.12g}, expected {s:.12g}")
