"""Unregularized (exact) optimal transport: the linear program and the 1D monotone rearrangement.

``exact_ot`` solves the weighted Hitchcock problem (Part III (H)) with HiGHS. The 1D functions
share one argument convention, ``f(x1, x2, mu1, mu2, w1=None, w2=None, *, ...)``: positions,
then densities, then weights (None: unit weights, so the densities are masses).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.optimize import OptimizeResult, linprog

from femot._docstrings import cite
from femot._validation import (
    as_finite_matrix,
    as_nonnegative_vector,
    as_positive_weights,
    as_vector,
    check_equal_mass,
    check_positive_scalar,
    mass_rtol,
)

# exact transport has no eps: unequal masses are an input error, nothing else
_MASS_HINT = " (exact transport needs marginals of equal mass: normalize them)"

__all__ = ["exact_ot", "exact_ot_1d", "wasserstein_pp_1d", "monotone_coupling_1d", "monotone_rearrangement"]


def _checked_marginals(mu1, mu2, w1, w2, n1, n2, balance=True):
    """Validated densities and weights ``(m1, m2, w1, w2)``; ``m2`` of exactly ``m1``'s mass if ``balance``."""
    m1 = as_nonnegative_vector(mu1, "mu1", length=n1)
    m2 = as_nonnegative_vector(mu2, "mu2", length=n2)
    rtol = mass_rtol(mu1, mu2, w1, w2)  # float32 input: its own rounding (before the casts)
    w1 = as_positive_weights(w1, "w1", n1)
    w2 = as_positive_weights(w2, "w2", n2)
    balanced = check_equal_mass(m1, w1, m2, w2, rtol=rtol, hint=_MASS_HINT)
    return m1, balanced if balance else m2, w1, w2


@cite("III")
def exact_ot(c, mu1, mu2, w1=None, w2=None):
    """Exact optimal transport between weighted densities by linear programming.

    Solves ``min sum_ij w1_i w2_j c_ij pi_ij`` over ``pi >= 0`` with
    ``sum_j w2_j pi_ij = mu1_i`` and ``sum_i w1_i pi_ij = mu2_j`` (the weighted
    Hitchcock problem, Part III (H); with unit weights exactly (H)).  The LP is
    posed on the masses ``T_ij = w1_i w2_j pi_ij`` and solved by HiGHS.

    Returns an ``OptimizeResult`` with ``plan`` (CSR density pi), ``masses``
    (CSR T), ``cost``, dual potentials ``alpha``, ``beta`` with
    ``alpha_i + beta_j <= c_ij`` (equality on the support), ``success``,
    ``status`` and ``message``.

    Parameters
    ----------
    c : array_like, shape (n1, n2)
        Finite cost matrix.
    mu1 : array_like, shape (n1,)
        Nonnegative density of the first marginal.
    mu2 : array_like, shape (n2,)
        Nonnegative density of the second marginal, of the same mass ``w2 @ mu2 = w1 @ mu1``.
    w1, w2 : array_like or None, optional
        Positive quadrature weights; None (default) means ones.

    Returns
    -------
    scipy.optimize.OptimizeResult
        As described above; on failure only ``success``, ``status`` and ``message``.

    Raises
    ------
    ValueError
        If ``c`` is not a finite matrix, a marginal is negative or of the wrong length, a
        weight is not positive, or the masses differ.
    """
    c = as_finite_matrix(c, "c")
    n1, n2 = c.shape
    m1, m2, w1, w2 = _checked_marginals(mu1, mu2, w1, w2, n1, n2)
    a = w1 * m1
    b = w2 * m2
    # Row-sum and column-sum operators on the row-major vectorized plan.
    rows = sp.kron(sp.identity(n1, format="csr"), np.ones((1, n2)), format="csr")
    cols = sp.kron(np.ones((1, n1)), sp.identity(n2, format="csr"), format="csr")
    A = sp.vstack([rows, cols], format="csr")
    # One constraint is redundant (equal masses); HiGHS copes with it.  HiGHS's
    # tolerances are absolute (1e-7), so the LP is posed for unit total mass
    # (the duals do not change, T and the cost scale back).
    total = float(a.sum())
    s = total if total > 0 else 1.0
    rhs = np.concatenate([a, b]) / s
    res = linprog(c.ravel(), A_eq=A, b_eq=rhs, bounds=(0, None), method="highs")
    if res.status == 2:
        # equal nonnegative masses are always feasible: an 'infeasible' verdict comes
        # from presolve (seen with a row mass 4e-7 of the total), so solve without it
        res = linprog(c.ravel(), A_eq=A, b_eq=rhs, bounds=(0, None), method="highs",
                      options={"presolve": False})
    out = OptimizeResult(success=bool(res.status == 0), status=int(res.status), message=res.message)
    if res.status != 0:
        return out
    T = res.x.reshape(n1, n2) * s
    T[T < 0] = 0.0
    Tm = sp.csr_matrix(T)
    Tm.eliminate_zeros()
    out.masses = Tm
    out.plan = sp.csr_matrix(Tm.multiply(1.0 / w1[:, None]).multiply(1.0 / w2[None, :]))
    out.cost = float(res.fun) * s
    y = res.eqlin.marginals
    out.alpha = np.asarray(y[:n1], dtype=float)
    out.beta = np.asarray(y[n1:], dtype=float)
    return out


def exact_ot_1d(x1, x2, mu1, mu2, w1=None, w2=None, *, cost=None):
    """Exact 1D transport for a cost ``h(x1 - x2)`` with ``h`` convex (monotone rearrangement).

    The monotone coupling (north-west corner rule on the sorted supports) is optimal for
    every convex ``h`` (default ``h(d) = d**2``). O((n1 + n2) log(n1 + n2)).

    Parameters
    ----------
    x1 : array_like, shape (n1,) or (n1, 1)
        Support points of the first marginal, in any order.
    x2 : array_like, shape (n2,) or (n2, 1)
        Support points of the second marginal, in any order.
    mu1, mu2 : array_like, shapes (n1,) and (n2,)
        Nonnegative densities w.r.t. ``w1``, ``w2`` (masses ``w*mu``) of equal mass.
    w1, w2 : array_like or None, optional
        Positive weights; None (default) means ones.
    cost : callable or None, optional
        ``h`` evaluated on an array of differences ``x1_i - x2_j``; None (default) is ``np.square``.

    Returns
    -------
    scipy.optimize.OptimizeResult
        ``plan`` (CSR density w.r.t. ``w1 x w2``, in the input ordering), ``masses`` (CSR,
        the coupling's masses) and ``cost``.

    Raises
    ------
    ValueError
        If a point set is not a finite vector, a marginal is negative or of the wrong
        length, a weight is not positive, or the masses differ.

    Examples
    --------
    >>> res = exact_ot_1d([0.0, 1.0], [0.5, 2.0], [0.5, 0.5], [0.5, 0.5])
    >>> print(f"{res.cost:.4f}")
    0.6250
    """
    x1 = as_vector(x1, "x1")
    x2 = as_vector(x2, "x2")
    n1, n2 = x1.size, x2.size
    m1, m2, w1, w2 = _checked_marginals(mu1, mu2, w1, w2, n1, n2)
    if cost is None:
        cost = np.square
    rows, cols, vals = monotone_rearrangement(x1, w1 * m1, x2, w2 * m2)
    T = sp.csr_matrix((vals, (rows, cols)), shape=(n1, n2))
    T.sum_duplicates()
    plan = sp.csr_matrix(T.multiply(1.0 / w1[:, None]).multiply(1.0 / w2[None, :]))
    total = float(np.sum(vals * cost(x1[rows] - x2[cols])))
    return OptimizeResult(success=True, status=0, message="monotone rearrangement", plan=plan, masses=T,
                          cost=total)


def _masses_1d(x1, x2, mu1, mu2, w1, w2):
    """Validated points and masses ``(x1, x2, a, b)``; ``b`` is not rebalanced (the rearrangement does)."""
    x1 = as_vector(x1, "x1")
    x2 = as_vector(x2, "x2")
    m1, m2, w1, w2 = _checked_marginals(mu1, mu2, w1, w2, x1.size, x2.size, balance=False)
    return x1, x2, w1 * m1, w2 * m2


@cite("II")
def wasserstein_pp_1d(x1, x2, mu1, mu2, w1=None, w2=None, *, p: float = 2.0) -> float:
    """``W_p(mu1, mu2)^p`` between discrete measures on the line, ``p >= 1``.

    The measures are ``sum_i w1_i mu1_i delta_{x1_i}`` and ``sum_j w2_j mu2_j delta_{x2_j}``.
    For the convex cost ``|x1 - x2|^p`` the monotone rearrangement is optimal,
    ``W_p^p = int_0^{|mu|} |Q_1(t) - Q_2(t)|^p dt`` with the quantile functions ``Q_k``
    (Part II, eq. (3.14), on the line). For ``p = 1`` the equivalent formula
    ``int |F_1 - F_2| dx`` with the cumulative distribution functions is used.

    Parameters
    ----------
    x1 : array_like, shape (n1,) or (n1, 1)
        Finite support points of the first measure, in any order.
    x2 : array_like, shape (n2,) or (n2, 1)
        Finite support points of the second measure, in any order.
    mu1, mu2 : array_like, shapes (n1,) and (n2,)
        Nonnegative densities w.r.t. ``w1``, ``w2`` (zeros allowed) of equal mass.
    w1, w2 : array_like or None, optional
        Positive weights; None (default) means ones, so ``mu1``, ``mu2`` are masses.
    p : float, optional
        Exponent of the cost ``|x1 - x2|^p``, at least 1 (default 2).

    Returns
    -------
    float
        The optimal transport cost ``W_p^p`` (not its ``p``-th root).

    Raises
    ------
    ValueError
        If ``p < 1``, or the measures are invalid or of unequal mass.

    Examples
    --------
    >>> print(f"{wasserstein_pp_1d([0.0], [3.0], [2.0], [2.0], p=1):.4f}")
    6.0000
    >>> print(f"{wasserstein_pp_1d([0.0, 1.0], [0.5, 2.0], [0.5, 0.5], [0.5, 0.5]):.4f}")
    0.6250
    """
    p = check_positive_scalar(p, "p")
    if p < 1:
        raise ValueError(f"p must be >= 1 (the monotone coupling is optimal for convex costs), got {p!r}")
    x1, x2, a, b = _masses_1d(x1, x2, mu1, mu2, w1, w2)
    if p == 1:
        z = np.concatenate([x1, x2])
        w = np.concatenate([a, -b])
        order = np.argsort(z, kind="stable")
        z, w = z[order], w[order]
        diff = np.cumsum(w)[:-1]  # F_1 - F_2 on [z_k, z_{k+1})
        return float(np.sum(np.abs(diff) * np.diff(z)))
    i1, i2, dt = monotone_rearrangement(x1, a, x2, b)
    return float(np.sum(dt * np.abs(x1[i1] - x2[i2]) ** p))


def monotone_coupling_1d(x1, x2, mu1, mu2, w1=None, w2=None) -> sp.csr_matrix:
    """The monotone coupling of two discrete measures on the line, as a matrix of masses.

    The measures are ``sum_i w1_i mu1_i delta_{x1_i}`` and ``sum_j w2_j mu2_j delta_{x2_j}``;
    the coupling (north-west corner rule on the sorted points) is optimal for every convex
    cost ``h(x1 - x2)``. Its density w.r.t. ``w1 x w2`` is :func:`exact_ot_1d`'s ``plan``.

    Parameters
    ----------
    x1 : array_like, shape (n1,) or (n1, 1)
        Finite support points of the first measure, in any order.
    x2 : array_like, shape (n2,) or (n2, 1)
        Finite support points of the second measure, in any order.
    mu1, mu2 : array_like, shapes (n1,) and (n2,)
        Nonnegative densities w.r.t. ``w1``, ``w2`` (zeros allowed) of equal mass.
    w1, w2 : array_like or None, optional
        Positive weights; None (default) means ones, so ``mu1``, ``mu2`` are masses.

    Returns
    -------
    scipy.sparse.csr_matrix, shape (n1, n2)
        The masses ``T_ij`` (row sums ``w1*mu1``, column sums ``w2*mu2``), indexed in the
        input order; at most ``n1 + n2 - 1`` nonzeros.

    Raises
    ------
    ValueError
        If the measures are invalid or of unequal mass.

    Examples
    --------
    >>> T = monotone_coupling_1d([1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.5, 0.5])
    >>> [[float(v) for v in row] for row in T.toarray()]
    [[0.0, 0.5], [0.5, 0.0]]
    """
    x1, x2, a, b = _masses_1d(x1, x2, mu1, mu2, w1, w2)
    i1, i2, dt = monotone_rearrangement(x1, a, x2, b)
    return sp.coo_matrix((dt, (i1, i2)), shape=(x1.size, x2.size)).tocsr()


def monotone_rearrangement(x, a, y, b):
    """The monotone coupling of two discrete measures on the real line, as COO triplets.

    For ``mu = sum_i a_i delta_{x_i}`` and ``nu = sum_j b_j delta_{y_j}`` of equal total
    mass, the coupling that matches the quantile functions, ``pi = (Q_mu, Q_nu)_# dt`` on
    ``(0, |mu|]`` (the north-west corner rule on the sorted supports), is optimal for
    every cost ``h(x - y)`` with ``h`` convex. It is computed by merging the two
    cumulative mass grids: each cell of the merged grid is one plan entry. ``b`` is
    rescaled to the total of ``a`` first, so both sides carry identical totals.
    O((n1 + n2) log(n1 + n2)). The inputs are not validated (callers do that).

    Parameters
    ----------
    x : numpy.ndarray
        Support points of the first measure, shape ``(n1,)``.
    a : numpy.ndarray
        Nonnegative masses at ``x``, shape ``(n1,)``.
    y : numpy.ndarray
        Support points of the second measure, shape ``(n2,)``.
    b : numpy.ndarray
        Nonnegative masses at ``y``, shape ``(n2,)``, same total as ``a`` up to rounding.

    Returns
    -------
    rows, cols : numpy.ndarray
        Indices into ``x`` and ``y`` (original order) of the plan's entries.
    mass : numpy.ndarray
        The entries' masses (positive). Repeated ``(row, col)`` pairs can occur only
        between points of zero mass; sum duplicates when building a matrix.
    """
    n1, n2 = np.size(x), np.size(y)
    ox = np.argsort(x, kind="stable")
    oy = np.argsort(y, kind="stable")
    a = np.asarray(a, dtype=float)[ox]
    b = np.asarray(b, dtype=float)[oy]
    total_a, total_b = a.sum(), b.sum()
    if not (total_a > 0 and total_b > 0):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), np.zeros(0)
    b = b * (total_a / total_b)
    ca = np.concatenate([[0.0], np.cumsum(a)])
    cb = np.concatenate([[0.0], np.cumsum(b)])
    cb[-1] = ca[-1]
    knots = np.union1d(ca, cb)
    lo, hi = knots[:-1], knots[1:]
    mass = hi - lo
    keep = mass > 0
    mid = 0.5 * (lo + hi)[keep]
    ia = np.clip(np.searchsorted(ca, mid, side="right") - 1, 0, n1 - 1)
    ib = np.clip(np.searchsorted(cb, mid, side="right") - 1, 0, n2 - 1)
    return ox[ia], oy[ib], mass[keep]
