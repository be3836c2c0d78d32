"""Step lengths of :func:`femot.solve_qrot`: exact line search on the piecewise quadratic dual, curved steps."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from femot.core import kernels

# A curved step must reach at least this multiple of the straight step length:
# one that stops near the straight step only re-solves one side at the same t,
# which gains nothing structural and (at rounding-level gamma) perturbs the path.
_CURVE_FACTOR = 2.0
# ... and its candidate set may hold at most this many times (active entries + n1 + n2)
_CURVE_BUDGET = 20


def _exact_line_search(z, dz, ws, q0, q1, lin, tmax=1.0):
    """Root in (0, tmax] of phi'(t) = sum ws (z + t dz)_+ dz + q0 + t q1 - lin.

    phi' is nondecreasing and piecewise linear with breakpoints -z/dz.  Up to a
    few hundred thousand candidates the root is found exactly from the sorted
    breakpoints; beyond, by a bracketing Newton/secant iteration (each step one
    vectorized pass, no sort).
    """
    if z.size > 200_000:
        return _bracketed_root(z, dz, ws, q0, q1, lin, tmax)
    if z.size == 0:
        return tmax if q1 <= 0 else min(tmax, (lin - q0) / q1)
    act0 = (z > 0) | ((z == 0) & (dz > 0))
    A0 = float(np.sum(ws[act0] * z[act0] * dz[act0]))
    A1 = float(np.sum(ws[act0] * dz[act0] ** 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        tb = -z / dz
    cross = (dz != 0) & (tb > 0) & (tb < tmax)
    idx = np.nonzero(cross)[0]
    order = idx[np.argsort(tb[idx], kind="stable")]
    tbs = tb[order]
    sgn = np.where(dz[order] > 0, 1.0, -1.0)  # entering (+) or leaving (-)
    dA0 = np.concatenate([[A0], sgn * ws[order] * z[order] * dz[order]]).cumsum()
    dA1 = np.concatenate([[A1], sgn * ws[order] * dz[order] ** 2]).cumsum()
    right = np.concatenate([tbs, [tmax]])
    vals = dA0 + right * dA1 + q0 + right * q1 - lin
    k = int(np.argmax(vals > 0)) if np.any(vals > 0) else right.size - 1
    if vals[k] <= 0:
        return tmax
    slope = dA1[k] + q1
    left = 0.0 if k == 0 else right[k - 1]
    if slope <= 0:
        return max(left, 1e-16)
    t = (lin - q0 - dA0[k]) / slope
    return float(min(max(t, left), right[k]))


def _streamed_root(dphi, f0, f1, rtol=1e-3, max_eval=30):
    """Approximate root in (0, 1) of a nondecreasing phi' from values only (Illinois regula falsi).

    Used only when the line-search candidates would not fit in memory (early,
    far-from-solution iterations of large problems), where a loose root suffices.
    """
    lo, hi, flo, fhi = 0.0, 1.0, f0, f1
    side = 0
    t = 0.0
    for _ in range(max_eval):
        t = (lo * fhi - hi * flo) / (fhi - flo)
        ft = dphi(t)
        if abs(ft) <= rtol * abs(f0):
            return t
        if ft < 0:
            lo, flo = t, ft
            if side == -1:
                fhi *= 0.5
            side = -1
        else:
            hi, fhi = t, ft
            if side == 1:
                flo *= 0.5
            side = 1
    return lo


def _bracketed_root(z, dz, ws, q0, q1, lin, tmax, rtol=1e-13, max_eval=100):
    """Root of the piecewise linear phi' by Newton steps from the left, secant safeguard."""
    def dphi(t):
        val, slope = kernels.line_derivative(z, dz, ws, float(t))
        return val + q0 + t * q1 - lin, slope + q1

    flo, slo = dphi(0.0)
    if flo >= 0:
        return 0.0
    fhi, _ = dphi(tmax)
    if fhi <= 0:
        return tmax
    lo, hi = 0.0, tmax
    scale = abs(flo)
    for _ in range(max_eval):
        t = lo - flo / slo if slo > 0 else np.inf
        if not (lo < t < hi):
            t = 0.5 * (lo + hi) if not (fhi > flo) else (lo * fhi - hi * flo) / (fhi - flo)
            if not (lo < t < hi):
                t = 0.5 * (lo + hi)
        ft, st = dphi(t)
        if abs(ft) <= rtol * scale or hi - lo <= 1e-15 * tmax:
            return float(t)
        if ft < 0:
            lo, flo, slo = t, ft, st
        else:
            hi, fhi = t, ft
    return float(lo)


class _SemiDual:
    """The dual restricted to a candidate set S, and its semi-duals along a direction.

    Part III (3.1) is separable in each alpha_i once beta is fixed (and vice
    versa): maximizing Phi over alpha alone gives the concave, C^1 semi-dual
    psi(beta) whose gradient is the column residual (Danskin).  Along
    ``beta + t*dbeta`` with every row re-solved exactly (``kernels.semidual_rows``)
    rows may leave one column for another *during* the step; on the straight line
    alpha_i moves linearly and the exact line search stops at the first such kink.
    ``S`` must hold every entry positive at any evaluated point; callers verify
    that through ``delta`` (entries outside S are <= -delta at the start).
    """

    def __init__(self, ip, ind, cv, n2, w1, w2, m1, m2, gamma, kappa):
        self.n1, self.n2 = ip.size - 1, n2
        self.ip, self.ind, self.cv = ip, ind, cv
        self.rows = np.repeat(np.arange(self.n1), np.diff(ip))
        self.w1, self.w2, self.m1, self.m2 = w1, w2, m1, m2
        self.gamma, self.kappa = gamma, kappa
        self.nchunk = kernels.num_chunks(max(self.n1, n2))
        self._csc = None

    def phi(self, a, b):
        """gamma * Phi(a, b), Phi the dual objective (concave; maximized by the solution)."""
        z = np.maximum(a[self.rows] + b[self.ind] - self.cv, 0.0)
        zsq = float(np.sum(self.w1[self.rows] * self.w2[self.ind] * z * z))
        return self._value(a, b, zsq)

    def residual(self, a, b):
        """Max-norm residual of (3.1) (units of mu) at (a, b)."""
        z = np.maximum(a[self.rows] + b[self.ind] - self.cv, 0.0)
        rs = np.bincount(self.rows, self.w2[self.ind] * z, minlength=self.n1)
        cs = np.bincount(self.ind, self.w1[self.rows] * z, minlength=self.n2)
        r1 = (rs + self.kappa * a) / self.gamma - self.m1
        r2 = (cs + self.kappa * b) / self.gamma - self.m2
        return max(float(np.abs(r1).max()), float(np.abs(r2).max()))

    def _value(self, a, b, zsq):
        k, g = self.kappa, self.gamma
        return (g * (self.w1 @ (self.m1 * a) + self.w2 @ (self.m2 * b)) - 0.5 * zsq
                - 0.5 * k * (self.w1 @ (a * a) + self.w2 @ (b * b)))

    def search(self, side, alpha, beta, da, db, within, t_min=0.0):
        """Maximize the semi-dual psi(t) on [t_min, 1]; side 'rows' re-solves alpha
        along beta + t db, side 'cols' re-solves beta along alpha + t da.

        psi' is nonincreasing and piecewise linear: bracketed Newton with
        bisection safeguard.  Only points accepted by ``within(a, b)`` (exactness
        of S) are returned.  Returns (value, alpha, beta, t, evaluations), or None
        when the maximum is not beyond t_min.
        """
        g, k = self.gamma, self.kappa
        if side == "rows":
            ptr, idx, val, ny = self.ip, self.ind, self.cv, self.n2
            x, y, dy, wx, wy, mx, my = alpha, beta, db, self.w1, self.w2, self.m1, self.m2
        else:
            if self._csc is None:
                T = sp.csr_matrix((self.cv, self.ind, self.ip), shape=(self.n1, self.n2)).tocsc()
                T.sort_indices()
                self._csc = (T.indptr.astype(np.int64), T.indices.astype(np.int32), T.data)
            ptr, idx, val = self._csc
            ny = self.n1
            x, y, dy, wx, wy, mx, my = beta, alpha, da, self.w2, self.w1, self.m2, self.m1
        rhs = g * mx
        best = None
        guess = x

        def evaluate(t):
            nonlocal best, guess
            xt, ysum, yslope, zsq = kernels.semidual_rows(ptr, idx, val, ny, y, dy, float(t), guess, wx, wy,
                                                          k, rhs, self.nchunk)
            yt = y + t * dy
            guess = xt
            d1 = float(wy @ (dy * (g * my - ysum - k * yt)))
            d2 = -float(wy @ (dy * (yslope + k * dy)))
            value = (g * (wx @ (mx * xt) + wy @ (my * yt)) - 0.5 * zsq
                     - 0.5 * k * (wx @ (xt * xt) + wy @ (yt * yt)))
            pt = (xt, yt) if side == "rows" else (yt, xt)
            if np.isfinite(value) and (best is None or value > best[0]) and within(*pt):
                best = (value, pt[0], pt[1], float(t))
            return d1, d2

        # psi is concave: one evaluation at t_min tells whether its maximum on
        # [0, 1] lies beyond t_min (the usual answer is no, and this is all it costs)
        nev = 1
        f0, s0 = evaluate(t_min)
        if not f0 > 0:
            return None
        if t_min < 1.0:
            nev += 1
            f1, s1 = evaluate(1.0)
            if f1 < 0:
                # psi' is a staircase (steep while a row switches columns, flat
                # in between): Newton from the endpoint moved last, exact on the
                # root's linear piece; bisection whenever the bracket did not halve.
                lo, flo, slo, hi, fhi, shi = t_min, f0, s0, 1.0, f1, s1
                last, halve = 0, False
                while nev < 60 and hi - lo > 1e-15:
                    t = np.inf
                    if not halve:
                        if last >= 0 and slo < 0:
                            t = lo - flo / slo
                        elif last < 0 and shi < 0:
                            t = hi - fhi / shi
                        if not lo < t < hi:
                            t = (lo * fhi - hi * flo) / (fhi - flo)
                    if not lo < t < hi:
                        t = 0.5 * (lo + hi)
                    width = hi - lo
                    ft, st = evaluate(t)
                    nev += 1
                    if abs(ft) <= 1e-13 * abs(f0):
                        break
                    if ft > 0:
                        lo, flo, slo, last = t, ft, st, 1
                    else:
                        hi, fhi, shi, last = t, ft, st, -1
                    halve = hi - lo > 0.5 * width
        if best is None:
            return None
        return best + (nev,)


def _curved_step(engine, cost, alpha, beta, da, db, t_lin, move, m1, m2, w1, w2, gamma, kappa, nnz):
    """Best of the straight exact line search and the two semi-dual searches.

    Every candidate's dual value is at least that of the straight point (the
    semi-dual dominates the dual along the same t), so global convergence of the
    damped Newton method is kept; the curved paths let many rows (or columns)
    switch partners in one step.  Returns (alpha, beta, t, path) or None.

    Skipped when the candidate set would exceed ``_CURVE_BUDGET`` times the size of
    the active set (``nnz``) plus ``n1 + n2``: a move that large (a sparse plan
    far from the solution) makes each of the up to 60 semi-dual evaluations cost
    as much as several Newton iterations, and the straight step is then cheaper.
    """
    if _CURVE_FACTOR * t_lin >= 1.0:
        return None
    n1, n2 = cost.shape
    # small problems: the candidate set may be everything (a copy of c at most)
    budget = max(engine.max_fraction * n1 * n2, min(n1 * n2, 250_000))
    budget = min(budget, _CURVE_BUDGET * (nnz + n1 + n2))
    if engine.ws is not None and engine.slack >= 2.0 * move:
        if engine.ws[1].size > budget:
            return None
        (ip, ind, cv), delta = engine.ws, engine.slack
    elif hasattr(cost, "candidates") and np.isfinite(move) and move > 0:
        delta = 2.0 * move
        engine.dense_passes += 1
        cand = cost.candidates(alpha, beta, -delta, max_count=budget)
        if cand is None:
            return None
        ip, ind, cv = cand
    else:
        return None
    sd = _SemiDual(ip, ind, cv, n2, w1, w2, m1, m2, gamma, kappa)

    def within(a, b):
        return float(np.abs(a - alpha).max() + np.abs(b - beta).max()) < delta

    a_lin, b_lin = alpha + t_lin * da, beta + t_lin * db
    best_val = sd.phi(a_lin, b_lin)
    # a curved point must also not worsen the residual the stopping test uses
    res_cap = sd.residual(a_lin, b_lin) * (1.0 + 1e-6)
    # gains at the rounding level of Phi are noise, not progress
    best_val = max(best_val, sd.phi(alpha, beta)) + 1e-12 * abs(best_val)
    best = None
    for side in ("rows", "cols"):
        r = sd.search(side, alpha, beta, da, db, within, min(1.0, _CURVE_FACTOR * t_lin))
        if r is not None and r[3] > _CURVE_FACTOR * t_lin and r[0] > best_val and sd.residual(r[1], r[2]) <= res_cap:
            best_val, best = r[0], (r[1], r[2], r[3], side)
    return best
