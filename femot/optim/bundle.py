"""The bundle trust region with quadratic cuts for f = (quadratic) + (piecewise linear) on the simplex.

A different method from Algorithm 4.1 of Part III (:mod:`femot.optim.trust_region`), for objectives
whose smooth part has a constant Hessian H (``hessp``) and whose nonsmooth part is piecewise linear
(the plan formulation of the control problem, Part II): quadratic cuts
q_k(z) = f_k + <g_k, z - y_k> + 1/2 (z - y_k)'H(z - y_k) of the evaluated points, a convex QP over
them (Clarabel), serious and null steps, and a convex-combination certificate psi (an LP).  The
mathematics is in docs/trust_region.md, Section 4.  Reached through
``femot.optim.minimize_simplex(method="bundle")``.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from femot.optim._newton import HessianNonFinite, fw_gap
from femot.optim._run import EPS, HESSP_NAN_MESSAGE, NonFinite, RunState, call, finish, finite, setup
from femot.optim.options import BundleOptions
from femot.optim.result import STATUS_MESSAGES
from femot.optim.simplex import _project, _theta
from femot.optim.trust_region import minimize_trust_region

__all__ = ["minimize_bundle"]


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


def _cut_metric(o, H, x, n):
    """The QP metric M = H (+ the user's ``metric`` at x, as a dense matrix)."""
    if o.metric is None:
        return H
    extra = dense_hessian(lambda v: np.asarray(o.metric(x.copy(), v), dtype=float), n)
    if not np.all(np.isfinite(extra)):
        raise NonFinite("options['metric'] returned a non-finite product.")
    return H + extra


def _minimize_cuts(st, H):
    """The loop of the bundle method: QP over quadratic cuts, serious/null steps, cut certificate.

    Works on the state ``st`` of :func:`minimize_bundle` (x, f, g, nfev, Delta, k, log); the
    cuts are the rows of (Y, F, G).  Sets st.status, st.stat_value (psi) and st.r_cut.
    """
    o, n, w, s = st.o, st.n, st.w, st.s
    wv = np.ones(n) if w is None else w
    st.r_cut = o.cut_radius if o.cut_radius is not None else 1e-3 * diameter(wv, s)
    cuts = [st.x[None, :].copy(), np.array([st.f]), st.g[None, :].copy()]
    st.Delta = min(o.Delta0, o.Delta_max)
    M = _cut_metric(o, H, st.x, n)
    while st.status is None:
        x, f = st.x, st.f
        B, e, dist = cut_arrays(x, f, *cuts, H)
        near = dist <= st.r_cut
        st.stat_value, _ = cut_certificate(x, B[near], np.abs(e[near]), wv, s)
        st.rec = rec = {"k": st.k, "f": f, "theta": _theta(x, st.g, o.R, w, s)[0], "psi": st.stat_value,
                        "Delta": st.Delta, "rho": None, "step_norm": 0.0, "model": "bundle", "step": "qp",
                        "accepted": False, "pred": None, "cauchy": None, "nfev": st.nfev,
                        "fw_gap": fw_gap(x, st.g, w, s), "nhev": n, "cg": None}
        for status, stop in ((0, st.stat_value <= o.tol), (1, st.k >= o.max_iter),
                             (2, st.Delta < o.radius_floor)):
            if stop:
                st.status = status
                return
        ea = np.abs(e)
        out = cut_qp(M, B, ea, x, wv, st.Delta)
        d = None if out is None else project_step(x, out[0], w, s) - x
        pred = -np.inf if d is None else model_decrease(B, ea, M, d)
        noise = 10.0 * EPS * abs(f)  # rounding of f itself (no absolute floor: f may be small)
        far = np.zeros(B.shape[0], dtype=bool) if out is None else (out[1] > 1e-3 * out[1].sum()) & ~near
        if far.any() and not pred > noise:
            _cut_probes(st, cuts, np.nonzero(far)[0][:5], dist)
            rec.update(step="probe", rho=0.0, pred=float(pred), nfev=st.nfev)
        else:
            moved = _cut_step(st, cuts, H, d, pred, noise)
            if moved and o.metric is not None:
                M = _cut_metric(o, H, st.x, n)
        st.log(rec)
        st.k += 1
        if st.callback_stops(st.stat_value):
            st.status = 4


def _cut_probes(st, cuts, idx, dist):
    """Evaluate f at half the certificate radius toward the cut points ``idx`` (outside the radius).

    Used when the QP model is stationary (to rounding) only with the help of such cuts: the
    probes bring the gradients of those pieces near x (for a kink through x, the piece active at
    x + t (y_k - x), t small, is the steepest along y_k - x: the piece of y_k when convex).
    """
    Y = cuts[0]
    for j in idx:
        yp = _project(st.x + (0.5 * st.r_cut / dist[j]) * (Y[j] - st.x), st.w, st.s)
        fp, gp = call(st.fun, yp, st.n, f"a probe of iteration {st.k}")
        st.nfev += 1
        if not finite(fp, gp):
            raise NonFinite
        cuts[:] = [np.vstack([cuts[0], yp]), np.append(cuts[1], fp), np.vstack([cuts[2], gp])]


def _cut_step(st, cuts, H, d, pred, noise):
    """Trial x + d: serious step (rho > eta1) or null step; radius update.  True if x moved."""
    o, rec = st.o, st.rec
    rho, accepted = 0.0, False
    if not pred > noise:
        # the QP found no decrease the bundle can trust at this radius: shrink it
        st.Delta *= o.beta1
    else:
        x, f = st.x, st.f
        y = x + d
        fy, gy = call(st.fun, y, st.n, f"iteration {st.k}")
        st.nfev += 1
        if not finite(fy, gy):
            raise NonFinite
        rho = (f - fy + noise) / (pred + noise)
        accepted = rho > o.eta1
        nd = float(np.abs(d).max())
        cuts[:] = [np.vstack([cuts[0], y]), np.append(cuts[1], fy), np.vstack([cuts[2], gy])]
        if accepted:
            if rho > o.eta2 and nd > 0.5 * st.Delta:
                st.Delta = min(o.beta2 * st.Delta, o.Delta_max)
            st.x, st.f, st.g = y, fy, gy
        else:
            dy = x - y
            if f - (fy + gy @ dy + 0.5 * dy @ H @ dy) < -noise:
                # the new cut lies above f at x: a nonconvex kink, the model cannot be trusted that far
                st.Delta = o.beta1 * min(st.Delta, nd)
        cuts[:] = keep_nearest(*cuts, st.x, o.max_cuts)
    rec.update(rho=float(rho), step_norm=0.0 if d is None else float(np.linalg.norm(d)),
               accepted=bool(accepted), pred=float(pred), nfev=st.nfev)
    return accepted


def minimize_bundle(fun, x0, hessp, weights, mass, n, options, callback, collect_subgradients):
    """Run the bundle method (arguments checked by :func:`femot.optim.minimize_simplex`).

    With more than ``max_n`` variables (the dense H would be too large) Algorithm 4.1 runs
    instead, with the shared options and ``collect_subgradients`` (which the bundle method does
    not use).
    """
    _, w, s, n_ = setup(x0, weights, mass, n)
    given = BundleOptions.coerce(options)
    o = given.resolved(n_, w, s)
    if n_ > o.max_n:
        return minimize_trust_region(fun, x0, hessp, weights, mass, n, given.trust_region(), callback,
                                     collect_subgradients)
    st = RunState(fun, x0, hessp, weights, mass, n, lambda n_, w, s: o, callback)
    st.hess.at(st.x)
    st.stat_kind, st.r_cut, st.stat_value = "psi", None, float("nan")
    try:
        H = dense_hessian(st.hess, st.n)
        _minimize_cuts(st, H)
    except HessianNonFinite:
        st.status, st.stat_value, st.stat_kind = 3, float("nan"), "theta"
        st.message_override = HESSP_NAN_MESSAGE
    except NonFinite as exc:
        st.status = 3
        if exc.message is not None:
            st.message_override = exc.message
        if st.rec is not None:
            st.log(st.rec)
    psi = st.stat_value
    if st.status == 0:
        st.message_override = (
            "Converged: psi (theta_R of the best convex combination of the gradients at x of the quadratic "
            f"cuts of the points within {st.r_cut:.3g} of x, plus their linearization errors) = {psi:.3e} "
            f"<= tol = {o.tol:.3e} (Clarke stationarity up to tol).")
    elif st.status == 1:
        st.message_override = (STATUS_MESSAGES[1] + f" (max_iter = {o.max_iter}, psi = {psi:.3e} > tol = "
                               f"{o.tol:.1e}; cuts within {st.r_cut:.3g})")
    st.psi = psi

    def message(theta_final, fw_final):
        msg = STATUS_MESSAGES[st.status]
        if st.status == 2:
            return msg + f" (Delta = {st.Delta:.3e}, theta = {theta_final:.3e})"
        return msg

    return finish(st, message)
