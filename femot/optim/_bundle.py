"""Bundle trust region with quadratic cuts for f = (quadratic) + (piecewise linear) on the simplex.

Setting.  f(x) = Q(x) + P(x) on S_w(s) = {x >= 0, <w, x> = s}, where Q is a
quadratic with a CONSTANT Hessian H (given by ``hessp``) and P is continuous
and piecewise linear with (possibly very many) pieces.  This is the reduced
objective of the plan formulation of (OCP^delta_gamma) (Hillbrecht, Manns,
Meyer, Part II): Q the L2 tracking term, P = nu <c_d, pi(T^delta m)> with a
plan pi that is piecewise affine in the marginal (Part III, Thm 3.11).  On each
piece f is exactly a quadratic with Hessian H; all of the nonsmoothness sits in
the jumps of the gradient across the pieces.

Quadratic cuts.  For an evaluated point y_k with value f_k and gradient g_k,

    q_k(z) = f_k + <g_k, z - y_k> + 1/2 <z - y_k, H (z - y_k)>

coincides with f on the piece of y_k (its affine extension plus Q).  All cuts
share H, so at the current iterate x

    max_k q_k(x + d) = f(x) + 1/2 <d, H d> + max_k (<b_k, d> - e_k),
    b_k = g_k + H (x - y_k),   e_k = f(x) - q_k(x),

b_k being the gradient at x of the quadratic of piece k and e_k its
linearization error (0 when x lies in the closure of the piece of y_k; P need
not be convex, so e_k < 0 occurs and the model uses |e_k|, the usual downshift).

Step.  The trust-region subproblem over the bundle is the convex QP

    min_{d, t}  t + 1/2 <d, M d>
    s.t.        <b_k, d> - t <= |e_k|   (all cuts),
                <w, d> = 0,  x + d >= 0,  |d|_inf <= Delta,

with M = H, optionally plus a user "metric" (``bundle_metric``, e.g. the
Hessian of a smooth surrogate of P that carries the curvature P accumulates
over many small pieces; it only damps the step and is recomputed at every
serious step).  It is solved in the full space by Clarabel.  A trial point with
actual decrease >= eta1 * (predicted decrease) is a serious step; otherwise a
null step adds its cut (and shrinks Delta if that cut is not exact at x, i.e.
the kink it reveals is not convex).

Certificate.  At a kink no single gradient has a small theta_R; a convex
combination of the gradients of the pieces meeting at x does (Clarke
stationarity; the collective Bouligand subdifferential of Part III, Step 11).
With the cuts of the points y_k within ``cut_radius`` of x,

    psi = min_{lambda in unit simplex}  theta_R(x, sum_k lambda_k b_k) + sum_k lambda_k |e_k|,

an LP (for R at least the diameter, theta_R(x, g) = <g, x> - s min_i g_i / w_i
is convex in g).  Cuts exact at x (e_k = 0) whose points lie in pieces whose
closures contain x have b_k in the Clarke subdifferential of f at x, so
psi <= tol certifies Clarke stationarity up to tol; the |e_k| term charges any
inexactness in the units of f (for convex f, <b_k, z - x> - |e_k| <= f(z) - f(x),
so psi then bounds f(x) - min f).
"""
from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from femot.optim.simplex import _project

__all__ = ["cut_arrays", "cut_certificate", "cut_qp", "dense_hessian"]


def dense_hessian(hv, n):
    """The symmetric n x n matrix of the linear map ``hv`` (n products)."""
    Hm = np.column_stack([hv(e) for e in np.eye(n)])
    return 0.5 * (Hm + Hm.T)


def cut_arrays(x, f, Y, F, G, H):
    """(b_k, e_k, |x - y_k|) of the quadratic cuts of the points Y (rows) at x."""
    D = x[None, :] - Y
    HD = D @ H
    B = G + HD
    e = f - (F + np.einsum("ij,ij->i", G, D) + 0.5 * np.einsum("ij,ij->i", D, HD))
    return B, e, np.linalg.norm(D, axis=1)


def _tangent_rows(B, w):
    """Rows of B minus their component along w (same values on {<w, d> = 0})."""
    return B - np.outer(B @ w / (w @ w), w)


def cut_qp(M, B, e, x, w, Delta):
    """Solve min t + 1/2 <d, M d> s.t. <b_k, d> - t <= e_k, <w, d> = 0, x + d >= 0, |d|_inf <= Delta.

    Scaled for Clarabel (d = Delta u, t = sigma tau with sigma = Delta max|b|).
    Returns (d, multipliers of the cuts, status string) or None on failure.
    """
    import clarabel

    n, K = x.size, B.shape[0]
    Bt = _tangent_rows(B, w)
    sig = float(np.abs(Bt).max()) * Delta
    if not sig > 0.0:
        return np.zeros(n), np.full(K, 1.0 / K), "zero gradients"
    P = sp.block_diag([sp.csc_matrix(M * (Delta * Delta / sig)), sp.csc_matrix((1, 1))]).tocsc()
    q = np.zeros(n + 1)
    q[-1] = 1.0
    A_eq = sp.csr_matrix(np.append(w / np.linalg.norm(w), 0.0)[None, :])
    A_cut = sp.csr_matrix(np.hstack([Bt * (Delta / sig), -np.ones((K, 1))]))
    eye = sp.eye(n, n + 1, format="csr")
    lower = np.maximum(-x / Delta, -1.0)
    A = sp.vstack([A_eq, A_cut, eye, -eye]).tocsc()
    b = np.concatenate([[0.0], e / sig, np.ones(n), -lower])
    cones = [clarabel.ZeroConeT(1), clarabel.NonnegativeConeT(K + 2 * n)]
    st = clarabel.DefaultSettings()
    st.verbose = False
    st.tol_gap_abs = st.tol_gap_rel = st.tol_feas = 1e-11
    st.max_iter = 400
    sol = clarabel.DefaultSolver(sp.triu(P).tocsc(), q, A, b, cones, st).solve()
    z = np.asarray(sol.x, dtype=float)
    if z.size != n + 1 or not np.all(np.isfinite(z)):
        return None
    lam = np.maximum(np.asarray(sol.z, dtype=float)[1:1 + K], 0.0)
    return z[:n] * Delta, lam, str(sol.status)


def cut_certificate(x, B, e, w, s):
    """psi = min over lambda in the unit simplex of theta(sum lambda_k b_k) + sum lambda_k e_k.

    theta(g) = <g, x> - s min_i g_i / w_i (theta_R for R >= the diameter).  One
    LP (HiGHS); the returned value is recomputed exactly from the LP's lambda,
    so it is an upper bound of the minimum whatever the LP's accuracy.
    Returns (psi, lambda).
    """
    K, n = B.shape
    Bt = _tangent_rows(B, w)
    sc = float(np.abs(Bt).max())
    if not sc > 0.0:
        lam = np.zeros(K)
        lam[int(np.argmin(e))] = 1.0
    else:
        Bs, es = Bt / sc, e / sc
        c = np.append(Bs @ x + es, -s)
        A_ub = np.hstack([-(Bs / w[None, :]).T, np.ones((n, 1))])
        res = linprog(c, A_ub=A_ub, b_ub=np.zeros(n), A_eq=np.append(np.ones(K), 0.0)[None, :], b_eq=[1.0],
                      bounds=[(0, None)] * K + [(None, None)], method="highs")
        if res.x is None:
            lam = np.zeros(K)
            lam[int(np.argmin(B @ x - s * np.min(B / w[None, :], axis=1) + e))] = 1.0
        else:
            lam = np.maximum(res.x[:K], 0.0)
            lam /= lam.sum()
    gb = lam @ B
    psi = float(gb @ x - s * np.min(gb / w) + lam @ e)
    # a single cut may beat the LP's rounding
    single = B @ x - s * np.min(B / w[None, :], axis=1) + e
    j = int(np.argmin(single))
    if single[j] < psi:
        lam = np.zeros(K)
        lam[j] = 1.0
        psi = float(single[j])
    return max(psi, 0.0), lam


def model_decrease(B, e, M, d):
    """f(x) - (model at x + d) = -(max_k (<b_k, d> - e_k) + 1/2 <d, M d>)."""
    return -(float(np.max(B @ d - e)) + 0.5 * float(d @ M @ d))


def diameter(w, s):
    """Euclidean diameter of S_w(s): the distance of its two farthest vertices."""
    v = s / w
    top = np.sort(v)[-2:]
    return float(math.sqrt(top[0] ** 2 + top[1] ** 2)) if v.size > 1 else 0.0


def keep_nearest(Y, F, G, x, size):
    """At most ``size`` cuts: those made from the current iterate x, then the points nearest to x.

    Rows are in evaluation order, and x itself is a row (the start, or the trial of
    the last serious step).  The rows after the last copy of x are the null-step
    trials (and probes) made from it: their cuts are what makes the next QP differ,
    so they are kept (with x's own cut; the newest ``size - 1`` of them).  Dropping one because older
    points lie nearer to x lets the QP return to its trial point, and two such
    trials can alternate for ever with the radius never shrinking (the loop then
    only ends at ``max_iter``).  The remaining places go to the nearest points.
    """
    if Y.shape[0] <= size:
        return Y, F, G
    own = np.flatnonzero(np.all(Y == x[None, :], axis=1))
    since = int(own[-1]) if own.size else Y.shape[0] - 1
    recent = np.arange(since + 1, Y.shape[0])[-(size - 1):] if size > 1 else np.arange(0)
    recent = np.append(since, recent)  # x's own cut (exact at x) and the newest trials from x
    rest = np.setdiff1d(np.arange(Y.shape[0]), recent)
    order = rest[np.argsort(np.linalg.norm(Y[rest] - x[None, :], axis=1), kind="stable")]
    idx = np.sort(np.concatenate([order[: size - recent.size], recent]))  # evaluation order kept
    return Y[idx], F[idx], G[idx]


def project_step(x, d, w, s):
    """The trial point P(x + d) (removes the QP's rounding off the simplex)."""
    return _project(x + d, w, s)
