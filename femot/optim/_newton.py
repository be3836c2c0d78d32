"""Second-order model of the simplex trust-region method: exact Hessian-vector products.

With a user-supplied ``hessp(x, v)`` (the Hessian of the smooth part of f at the
iterate x times v) the quadratic model of Part III, Algorithm 4.1, Step 3 is

    q_k(d) = f(x_k) + <g_k, d> + 1/2 <d, H_k d>,   H_k = exact Hessian,

which Step 3 allows (any symmetric H_k).  The model is never formed as a
matrix; every product is one call of ``hessp``.  The trial step solves the
trust-region subproblem (Q_k)

    min q_k(d)  s.t.  x_k + d in S_w(s),  |d| <= Delta_k

inexactly by a projected (active-set) Newton-CG method:

1. binding set: coordinates at (or within ``eps_act`` of) zero whose
   multiplier estimate g_i - tau w_i is positive are fixed (Bertsekas'
   projected Newton method, "Projected Newton methods for optimization
   problems with simple constraints", SIAM J. Control Optim. 1982);
2. Steihaug-Toint conjugate gradients on the free coordinates F in the
   tangent space {d_F : <w_F, d_F> = 0} (CG preconditioned by the orthogonal
   projection onto that space), stopped at negative curvature and at the
   trust-region boundary (Steihaug, SIAM J. Numer. Anal. 1983; Toint 1981),
   or when the projected residual drops below the forcing term;
3. if the CG point leaves the simplex, a projected search: the better (in
   q_k) of the step truncated at the first bound and the projection
   P(x + d) - x (nonexpansive, so inside the ball); the coordinates that hit
   zero are fixed and 2. is repeated on the smaller face (at most
   ``newton_minor`` times).

The result is combined with the generalized Cauchy point along the direction
realizing theta_R (the q_k-best convex combination, Remark 4.2), so that the
predicted decrease is at least that of the Cauchy point; this is how the
Cauchy decrease condition of Step 8 is enforced (the Cauchy point satisfies it
for the exact Hessian exactly as for a BFGS matrix, since
|<v, H v>| <= |H| |v|^2).  Near a nondegenerate minimizer of a smooth f the
binding set is the optimal active set, CG solves the reduced Newton system to
the forcing tolerance eta_k -> 0, and the steps are (inexact) Newton steps:
superlinear local convergence.
"""
from __future__ import annotations

import math

import numpy as np

from femot.optim.simplex import _project

_EPS = np.finfo(float).eps


class HessianNonFinite(Exception):
    """hessp returned NaN or inf (the optimizer stops with status 3)."""


class HessianOperator:
    """Hessian-vector products ``v -> hessp(x, v)`` at the current iterate, counted and checked."""

    def __init__(self, hessp, n):
        self.hessp = hessp
        self.n = n
        self.calls = 0
        self.x = None

    def at(self, x):
        self.x = np.array(x, dtype=float)

    def __call__(self, v):
        out = self.hessp(self.x.copy(), np.array(v, dtype=float))
        self.calls += 1
        try:
            a = np.asarray(out, dtype=float)
        except (TypeError, ValueError):
            raise ValueError(f"hessp must return a numeric vector of shape ({self.n},); "
                             f"it returned {type(out).__name__}") from None
        if a.ndim == 2 and 1 in a.shape:
            a = a.reshape(-1)
        if a.shape != (self.n,):
            raise ValueError(f"hessp must return a vector of shape ({self.n},); it returned shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise HessianNonFinite
        return a


def fw_gap(x, g, w, s):
    """Frank-Wolfe gap <g, x> - s min_i g_i / w_i = max_{z in S_w(s)} <g, x - z>.

    For convex f it bounds f(x) - min f from above (f(z) >= f(x) + <g, z - x>).
    """
    r = g if w is None else g / w
    return float(g @ x - s * r.min())


def _boundary(u, p, Delta):
    """tau >= 0 with |u + tau p| = Delta (|u| <= Delta)."""
    a = p @ p
    if a == 0.0:
        return 0.0
    b = 2.0 * (u @ p)
    c = u @ u - Delta * Delta
    c = min(c, 0.0)
    sq = math.sqrt(max(b * b - 4.0 * a * c, 0.0))
    # the nonnegative root of a tau^2 + b tau + c = 0 (c <= 0), without cancellation
    if b >= 0.0:
        return (-2.0 * c) / (b + sq) if b + sq > 0.0 else 0.0
    return (-b + sq) / (2.0 * a)


def _tangent(v, F, wF, wF2):
    """Orthogonal projection of v onto {p : p_i = 0 off F, <w_F, p_F> = 0}."""
    out = np.zeros_like(v)
    vF = v[F]
    out[F] = vF - (wF @ vF / wF2) * wF
    return out


def steihaug_cg(Hv, gm, y, F, wv, Delta, rtol, maxiter):
    """Steihaug-Toint CG for min <gm, p> + 1/2 <p, H p> over the tangent space of the face F.

    ``p`` ranges over {p_i = 0 off F, <w_F, p_F> = 0} with |y + p| <= Delta.
    The search directions are H-conjugated against all previous ones (stored
    with their products H d_j, which CG computes anyway): in exact arithmetic
    these are the CG iterates, and in floating point the finite termination
    in at most |F| - 1 steps survives condition numbers near 1/sqrt(eps),
    where the three-term recurrence loses conjugacy.
    Returns (p, Hp, reason, iterations) with reason 'converged', 'ball',
    'negative curvature' or 'maxiter'.
    """
    wF = wv[F]
    wF2 = wF @ wF
    p = np.zeros_like(gm)
    Hp = np.zeros_like(gm)
    r = _tangent(gm, F, wF, wF2)
    rr = r @ r
    if rr == 0.0:
        return p, Hp, "converged", 0
    tol = rtol * math.sqrt(rr)
    dirs, Hdirs, curvs = [], [], []
    for it in range(1, maxiter + 1):
        dirn = -r
        for dj, Hdj, cj in zip(dirs, Hdirs, curvs):
            dirn = dirn + ((r @ Hdj) / cj) * dj
        dirn = _tangent(dirn, F, wF, wF2)  # remove rounding off the tangent space
        Hd = Hv(dirn)
        curv = dirn @ Hd
        if curv <= 1e-300 * (dirn @ dirn):
            tau = _boundary(y + p, dirn, Delta)
            return p + tau * dirn, Hp + tau * Hd, "negative curvature", it
        alpha = -(r @ dirn) / curv
        pn = p + alpha * dirn
        if np.linalg.norm(y + pn) >= Delta:
            tau = _boundary(y + p, dirn, Delta)
            return p + tau * dirn, Hp + tau * Hd, "ball", it
        p, Hp = pn, Hp + alpha * Hd
        r = r + alpha * _tangent(Hd, F, wF, wF2)
        if math.sqrt(r @ r) <= tol:
            return p, Hp, "converged", it
        dirs.append(dirn)
        Hdirs.append(Hd)
        curvs.append(curv)
    return p, Hp, "maxiter", maxiter


def binding_free_set(x, g, w, s):
    """Free coordinates of the projected Newton step (complement of the binding set).

    Coordinates with x_i > eps_act are free; those with x_i <= eps_act are
    fixed (binding) when their multiplier estimate g_i - tau w_i is
    nonnegative, tau the least-squares multiplier on the positive
    coordinates.  eps_act = min(1e-3 s / sum w, |P(x - g) - x|_inf)
    (Bertsekas' epsilon-active set).
    """
    wv = np.ones_like(x) if w is None else w
    gap = np.linalg.norm(_project(x - g, w, s) - x, np.inf)
    eps_act = min(1e-3 * s / wv.sum(), gap)
    P = x > eps_act
    if not P.any():
        P = x >= x.max()
    tau = (wv[P] @ g[P]) / (wv[P] @ wv[P])
    return P | (g - tau * wv < 0.0)


def projected_newton(x, g, Hv, Delta, w, s, o, rtol):
    """Inexact projected Newton-CG solution of (Q_k); returns (a, Ha, info).

    ``info``: dict with ``cg`` (total CG iterations), ``minor`` (faces
    visited) and ``reason`` (how the last CG run ended).
    """
    n = x.size
    wv = np.ones(n) if w is None else w
    F = binding_free_set(x, g, w, s)
    y = np.zeros(n)
    Hy = np.zeros(n)
    info = {"cg": 0, "minor": 0, "reason": "face"}
    maxiter = o["cg_maxiter"]
    for _ in range(o["newton_minor"]):
        if F.sum() < 2:
            break
        info["minor"] += 1
        gm = g + Hy
        cap = min(2 * int(F.sum()) + 10, 500) if maxiter is None else maxiter
        p, Hp, reason, it = steihaug_cg(Hv, gm, y, F, wv, Delta, rtol, cap)
        info["cg"] += it
        info["reason"] = reason
        if not np.any(p):
            break
        z = y + p
        if np.all(x + z >= 0.0):
            y, Hy = z, Hy + Hp
            break
        # projected search: truncation at the first bound vs projection of x + z
        neg = (x + z < 0.0) & (p < 0.0)
        tb = float(np.min((x[neg] + y[neg]) / -p[neg])) if neg.any() else 1.0
        tb = min(max(tb, 0.0), 1.0)
        zb, Hzb = y + tb * p, Hy + tb * Hp
        zP = _project(x + z, w, s) - x
        HzP = Hv(zP)

        def q(d, Hd):
            return g @ d + 0.5 * (d @ Hd)

        qy = q(y, Hy)
        cands = [(q(zb, Hzb), zb, Hzb), (q(zP, HzP), zP, HzP)]
        qn, zn, Hzn = min(cands, key=lambda c: c[0])
        if not qn < qy:
            break
        y, Hy = zn, Hzn
        # clean the coordinates at the bound: exactly -x_i there
        at_bound = x + y <= 1e-15 * max(1.0, float(np.abs(x).max()))
        y[at_bound] = -x[at_bound]
        newF = F & ~at_bound
        if reason in ("ball", "negative curvature") or newF.sum() == F.sum():
            break
        F = newF
    return y, Hy, info


def newton_candidate(x, g, Hv, Delta, theta, d_theta, w, s, o, rtol):
    """Cauchy point and projected Newton-CG candidate of (Q_k) with the exact Hessian.

    Returns (options, info) with options a list of (d, pred = f - q_k(d), label):
    the generalized Cauchy point along the theta_R direction ('cauchy') and the
    q_k-best convex combination of it with the projected Newton-CG point
    ('newton'), whose predicted decrease is never below the Cauchy point's.
    """
    # (b) generalized Cauchy point along d_theta with the exact curvature
    nv = np.linalg.norm(d_theta)
    if nv == 0.0:
        b = np.zeros_like(x)
        Hb = np.zeros_like(x)
    else:
        Hdt = Hv(d_theta)
        c = d_theta @ Hdt
        amax = min(1.0, Delta / nv)
        alpha = amax if c <= 0.0 else min(amax, theta / c)
        alpha = max(alpha, 0.0)
        b, Hb = alpha * d_theta, alpha * Hdt

    def pred(d, Hd):
        return -(g @ d + 0.5 * (d @ Hd))

    options = [(b, pred(b, Hb), "cauchy")]
    a, Ha, info = projected_newton(x, g, Hv, Delta, w, s, o, rtol)
    # best convex combination lam a + (1 - lam) b in q_k (closed form)
    e, He = a - b, Ha - Hb
    lin = g @ e + Hb @ e
    quad = e @ He
    if quad > 0.0:
        lam = min(max(-lin / quad, 0.0), 1.0)
    else:
        lam = 1.0 if lin + 0.5 * quad < 0.0 else 0.0
    d, Hd = b + lam * e, Hb + lam * He
    options.append((d, pred(d, Hd), "newton"))
    info["lam"] = lam
    return options, info
