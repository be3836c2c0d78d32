"""Error measures of a convergence study and fitted rates (docs/studies.md).

* :func:`wasserstein_discrete` -- W_p between two discrete measures (exact: CDF /
  quantile formulas in 1D, exact optimal transport otherwise);
* :func:`wasserstein_to_measure` -- W_p between a discrete measure on the line and a
  femot measure (densities, Diracs) through the quantile functions;
* :func:`plan_distance` -- W1 between two transport plans seen as discrete measures on
  the product space Omega_1 x Omega_2 with the Euclidean ground metric (exact OT);
* :func:`fit_rate`, :func:`observed_orders` -- least-squares slopes of log(error).

Measures of different total mass (the smoothing T^delta adds mass delta, Part II eq.
(2.6)) are compared after normalization to probability measures.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from scipy.spatial.distance import cdist

from femot.core import exact_ot, wasserstein_pp_1d
from femot.fem import DiracSum, wasserstein_1d

__all__ = ["wasserstein_discrete", "wasserstein_to_measure", "plan_distance", "plan_points", "fit_rate",
           "fit_rate_ci", "observed_orders", "PLAN_LP_LIMIT"]

#: Largest (support of a) x (support of b) handled by the LP fallback of plan_distance.
PLAN_LP_LIMIT = 250_000


def _normalized(m, name):
    m = np.asarray(m, dtype=float)
    if m.ndim != 1 or not np.all(np.isfinite(m)) or np.any(m < -1e-14 * max(1.0, np.abs(m).max())):
        raise ValueError(f"{name} must be a finite nonnegative vector")
    m = np.maximum(m, 0.0)
    s = m.sum()
    if not s > 0:
        raise ValueError(f"{name} has no mass")
    return m / s


def _points(x, name):
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be a finite array of points (n, dim)")
    return x


def wasserstein_discrete(xa, a, xb, b, p: float = 1.0, *, normalize: bool = True) -> float:
    """W_p(sum a_i delta_{xa_i}, sum b_j delta_{xb_j}) for p >= 1 (not raised to the power p).

    1D: exact CDF (p = 1) or quantile (p > 1) formulas; otherwise exact OT between the
    supports (network simplex of POT if installed, else the LP of :func:`femot.exact_ot`).
    With ``normalize`` both measures are scaled to unit mass first.

    Parameters
    ----------
    xa : array_like, shape (na,) or (na, d)
        Support of the first measure.
    a : array_like, shape (na,)
        Nonnegative masses at ``xa``.
    xb : array_like, shape (nb,) or (nb, d)
        Support of the second measure, in the same dimension ``d``.
    b : array_like, shape (nb,)
        Nonnegative masses at ``xb``.
    p : float, optional
        Order of the distance, at least 1.  Default 1.
    normalize : bool, optional
        Scale both measures to unit mass first.  Default True.

    Returns
    -------
    float
        ``W_p`` (NaN in dimension >= 2 when POT is missing and the LP would exceed
        :data:`PLAN_LP_LIMIT`).

    Raises
    ------
    ValueError
        If the points are not finite, the dimensions differ, or (with ``normalize``) a
        mass vector is negative, not finite or without mass.
    """
    xa, xb = _points(xa, "xa"), _points(xb, "xb")
    if normalize:
        a, b = _normalized(a, "a"), _normalized(b, "b")
    else:
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if xa.shape[1] != xb.shape[1]:
        raise ValueError("xa and xb must live in the same dimension")
    if xa.shape[1] == 1:
        if p == 1:
            return wasserstein_pp_1d(xa[:, 0], xb[:, 0], a, b, p=1)
        return wasserstein_pp_1d(xa[:, 0], xb[:, 0], a, b, p=p) ** (1.0 / p)
    return _ot_cost(xa[a > 0], a[a > 0], xb[b > 0], b[b > 0], p) ** (1.0 / p)


def wasserstein_to_measure(x, m, mu, p: float = 1.0) -> float:
    """W_p between the discrete measure sum m_i delta_{x_i} and the femot measure ``mu`` on
    the line, both normalized to unit mass (quantile formula, :func:`femot.fem.wasserstein_1d`).

    Parameters
    ----------
    x : array_like, shape (n,) or (n, 1)
        Points on the line.
    m : array_like, shape (n,)
        Nonnegative masses at ``x``.
    mu : femot.fem measure
        A measure on the line (``mu.dim == 1``) with positive mass.
    p : float, optional
        Order of the distance, at least 1.  Default 1.

    Returns
    -------
    float
        ``W_p`` between the normalized measures.

    Raises
    ------
    ValueError
        If the points are not on the line or the masses are invalid.
    """
    x = _points(x, "x")
    if x.shape[1] != 1 or mu.dim != 1:
        raise ValueError("wasserstein_to_measure is implemented on the line (dim 1)")
    m = _normalized(m, "m")
    keep = m > 0
    disc = DiracSum(x[keep], m[keep])
    ref = (1.0 / mu.mass()) * mu
    return wasserstein_1d(disc, ref, beta=p) ** (1.0 / p)


def plan_points(plan, x1, x2, w1=None, w2=None):
    """A plan density pi_ij w.r.t. w1_i w2_j (or masses when the weights are None) as a
    discrete measure on Omega_1 x Omega_2: points (nnz, d1 + d2) and masses (nnz,).

    Parameters
    ----------
    plan : ndarray or scipy.sparse matrix, shape (n1, n2)
        The plan (density or masses).
    x1 : array_like, shape (n1,) or (n1, d1)
        Points of Omega_1.
    x2 : array_like, shape (n2,) or (n2, d2)
        Points of Omega_2.
    w1 : array_like, shape (n1,), optional
        Quadrature weights of Omega_1; None: the plan holds masses.
    w2 : array_like, shape (n2,), optional
        Quadrature weights of Omega_2.

    Returns
    -------
    points : ndarray, shape (k, d1 + d2)
        The pairs ``(x1_i, x2_j)`` of positive mass.
    masses : ndarray, shape (k,)
        Their masses ``pi_ij w1_i w2_j``.
    """
    P = sp.coo_matrix(plan)
    x1, x2 = _points(x1, "x1"), _points(x2, "x2")
    mass = P.data.astype(float)
    if w1 is not None:
        mass = mass * np.asarray(w1, dtype=float)[P.row]
    if w2 is not None:
        mass = mass * np.asarray(w2, dtype=float)[P.col]
    keep = mass > 0
    pts = np.hstack([x1[P.row[keep]], x2[P.col[keep]]])
    return pts, mass[keep]


def plan_distance(pa, a, pb, b) -> float:
    """W1 on the product space (Euclidean ground metric) between two plans given as
    discrete measures (points, masses), normalized to unit mass. Exact OT; NaN when no
    exact solver can handle the size (POT missing and the LP would be too large).

    Parameters
    ----------
    pa : array_like, shape (na, d)
        Points of the first plan (e.g. from :func:`plan_points`).
    a : array_like, shape (na,)
        Nonnegative masses of the first plan.
    pb : array_like, shape (nb, d)
        Points of the second plan.
    b : array_like, shape (nb,)
        Nonnegative masses of the second plan.

    Returns
    -------
    float
        The distance, or NaN (see above).

    Raises
    ------
    ValueError
        If points are not finite or a mass vector is invalid or has no mass.
    """
    pa, pb = _points(pa, "pa"), _points(pb, "pb")
    a, b = _normalized(a, "a"), _normalized(b, "b")
    return _ot_cost(pa[a > 0], a[a > 0], pb[b > 0], b[b > 0], 1.0)


def _ot_cost(pa, a, pb, b, p) -> float:
    try:
        import ot  # POT: exact network simplex, fast for the supports met here
    except ImportError:
        ot = None
    b = b * (a.sum() / b.sum())  # remove the rounding mismatch of the masses
    if ot is not None:
        M = cdist(pa, pb) ** p
        val = float(ot.emd2(a, b, M, numItermax=50_000_000))
        return val
    if pa.shape[0] * pb.shape[0] > PLAN_LP_LIMIT:
        return math.nan
    res = exact_ot(cdist(pa, pb) ** p, a, b)
    return float(res.cost) if res.success else math.nan


def fit_rate(x, err) -> float:
    """Least-squares slope of log(err) against log(x) over the positive finite errors.

    Parameters
    ----------
    x : array_like, shape (k,)
        Discretization parameters (e.g. ``gamma`` or ``h``); nonpositive entries are skipped.
    err : array_like, shape (k,)
        Errors at ``x``; nonpositive or non-finite entries are skipped.

    Returns
    -------
    float
        The observed rate, NaN with fewer than two usable points or a single ``x``.
    """
    x = np.asarray(x, dtype=float)
    e = np.asarray(err, dtype=float)
    ok = np.isfinite(e) & (e > 0) & np.isfinite(x) & (x > 0)
    if ok.sum() < 2 or np.ptp(np.log(x[ok])) == 0:
        return math.nan
    return float(np.polyfit(np.log(x[ok]), np.log(e[ok]), 1)[0])


def fit_rate_ci(x, err, level: float = 0.95) -> dict:
    """Least-squares fit log(err) = r log(x) + c over the positive finite errors, with a
    ``level`` confidence interval for the rate r from the fit's standard error and the
    Student t quantile with (n - 2) degrees of freedom (``scipy.stats.linregress``).

    Parameters
    ----------
    x : array_like, shape (k,)
        Discretization parameters; nonpositive or non-finite entries are skipped.
    err : array_like, shape (k,)
        Errors at ``x``; nonpositive or non-finite entries are skipped.
    level : float, optional
        Confidence level in (0, 1).  Default 0.95.

    Returns
    -------
    dict
        ``{"rate", "lo", "hi", "stderr", "n"}``; n is the number of levels used; the
        interval is NaN with fewer than three levels (no degrees of freedom left) and the
        rate NaN with fewer than two.
    """
    from scipy import stats

    x = np.asarray(x, dtype=float)
    e = np.asarray(err, dtype=float)
    ok = np.isfinite(e) & (e > 0) & np.isfinite(x) & (x > 0)
    n = int(ok.sum())
    out = {"rate": math.nan, "lo": math.nan, "hi": math.nan, "stderr": math.nan, "n": n}
    if n < 2 or np.ptp(np.log(x[ok])) == 0:
        return out
    fit = stats.linregress(np.log(x[ok]), np.log(e[ok]))
    out["rate"] = float(fit.slope)
    if n >= 3:
        t = float(stats.t.ppf(0.5 + level / 2.0, n - 2))
        out["stderr"] = float(fit.stderr)
        out["lo"], out["hi"] = float(fit.slope - t * fit.stderr), float(fit.slope + t * fit.stderr)
    return out


def observed_orders(x, err) -> list:
    """Orders between consecutive levels, log(e_k / e_{k-1}) / log(x_k / x_{k-1}) (NaN first).

    Parameters
    ----------
    x : array_like, shape (k,)
        Discretization parameters of the levels.
    err : array_like, shape (k,)
        Errors of the levels.

    Returns
    -------
    list of float
        ``k`` orders; NaN for the first level and wherever an error is not positive and
        finite or two consecutive ``x`` coincide.
    """
    x = np.asarray(x, dtype=float)
    e = np.asarray(err, dtype=float)
    out = [math.nan]
    for k in range(1, e.size):
        if e[k] > 0 and e[k - 1] > 0 and x[k] != x[k - 1] and np.isfinite(e[k]) and np.isfinite(e[k - 1]):
            out.append(float(np.log(e[k] / e[k - 1]) / np.log(x[k] / x[k - 1])))
        else:
            out.append(math.nan)
    return out
