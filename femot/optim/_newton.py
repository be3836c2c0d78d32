"""Second-order model of Algorithm 4.1 (``hessp``): projected Newton-CG and bundle-Newton steps.

Step 3 of Part III, Algorithm 4.1 with the exact Hessian (any symmetric H_k is allowed), used
matrix-free; the trust-region subproblem of Step 8 is solved by a projected (active-set)
Newton-CG method (or, option ``subproblem="active-set"``, by faces that fix every violated bound
at once), combined with the generalized Cauchy point so that the Cauchy decrease holds.
The method is described in docs/trust_region.md, Section 7.
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


def _step_to_bound(x, base, seg):
    """(t, hits): the largest t in [0, 1] with x + base + t seg >= 0, and whether seg leaves the orthant."""
    neg = (seg < 0.0) & (x + base + seg < 0.0)
    if not neg.any():
        return 1.0, False
    return min(max(float(np.min((x[neg] + base[neg]) / -seg[neg])), 0.0), 1.0), True


def _projected_step(v, x, w, s, Delta):
    """P(v) - x with P the projection onto the simplex, scaled into the ball of radius Delta."""
    d = _project(v, w, s) - x
    nd = np.linalg.norm(d)
    if nd > Delta:
        d *= Delta / nd
    return d


def _projected_preconditioner(M, F, wF):
    """``r -> z``: the preconditioner ``M`` on the face F, projected M-orthogonally onto {<w_F, z_F> = 0}.

    ``z = M r - (<w_F, M r> / <w_F, M w_F>) M w_F`` is the preconditioned residual of CG
    on the tangent space (projected PCG, Gould, Hribar and Nocedal 2001).
    """
    n = F.size

    def onF(v):
        full = np.zeros(n)
        full[F] = v
        out = np.asarray(M(full), dtype=float)
        return out[F]

    Mw = onF(wF)
    wMw = wF @ Mw
    if not (np.all(np.isfinite(Mw)) and wMw > 0.0):
        return None

    def apply(r):
        z = np.zeros(n)
        zF = onF(r[F])
        z[F] = zF - ((wF @ zF) / wMw) * Mw
        return z

    return apply


def steihaug_cg(Hv, gm, y, F, wv, Delta, rtol, maxiter, x=None, M=None, atol=None):
    """Steihaug-Toint CG for min <gm, p> + 1/2 <p, H p> over the tangent space of the face F.

    ``p`` ranges over {p_i = 0 off F, <w_F, p_F> = 0} with |y + p| <= Delta.
    The search directions are H-conjugated against all previous ones (stored
    with their products H d_j, which CG computes anyway): in exact arithmetic
    these are the CG iterates, and in floating point the finite termination
    in at most |F| - 1 steps survives condition numbers near 1/sqrt(eps),
    where the three-term recurrence loses conjugacy.  With ``x``, CG also
    stops before a step that leaves {x + y + p >= 0} (reason 'bound').  With ``M``
    (a callable applying an SPD approximation of the inverse of H on F to a vector
    that vanishes off F) the directions start from the preconditioned residual
    instead (projected PCG); the steps stay exact minimizers along each direction.

    Returns (p, Hp, reason, iterations, seg, Hseg): reason is 'converged',
    'ball', 'negative curvature', 'maxiter' or 'bound'; for 'bound', (seg,
    Hseg) is the step that would leave the orthant (p + seg is infeasible),
    otherwise zeros.  ``atol`` (optional) replaces the relative stopping test
    |r| <= rtol |r_0| by |r| <= atol (a warm start keeps the tolerance of the first face).
    """
    wF = wv[F]
    wF2 = wF @ wF
    p = np.zeros_like(gm)
    Hp = np.zeros_like(gm)
    zero = np.zeros_like(gm)
    r = _tangent(gm, F, wF, wF2)
    rr = r @ r
    if rr == 0.0:
        return p, Hp, "converged", 0, zero, zero
    tol = rtol * math.sqrt(rr) if atol is None else atol
    if math.sqrt(rr) <= tol:
        return p, Hp, "converged", 0, zero, zero
    prec = None if M is None else _projected_preconditioner(M, F, wF)
    dirs, Hdirs, curvs = [], [], []
    for it in range(1, maxiter + 1):
        z = r if prec is None else prec(r)
        dirn = -z
        for dj, Hdj, cj in zip(dirs, Hdirs, curvs):
            dirn = dirn + ((z @ Hdj) / cj) * dj
        dirn = _tangent(dirn, F, wF, wF2)  # remove rounding off the tangent space
        Hd = Hv(dirn)
        curv = dirn @ Hd
        reason = None
        if curv <= 1e-300 * (dirn @ dirn):
            step, reason = _boundary(y + p, dirn, Delta), "negative curvature"
        else:
            step = -(r @ dirn) / curv
            if np.linalg.norm(y + p + step * dirn) >= Delta:
                step, reason = _boundary(y + p, dirn, Delta), "ball"
        if x is not None and np.any(x + y + p + step * dirn < 0.0):
            return p, Hp, "bound", it, step * dirn, step * Hd
        p, Hp = p + step * dirn, Hp + step * Hd
        if reason is not None:
            return p, Hp, reason, it, zero, zero
        r = r + step * _tangent(Hd, F, wF, wF2)
        if math.sqrt(r @ r) <= tol:
            return p, Hp, "converged", it, zero, zero
        dirs.append(dirn)
        Hdirs.append(Hd)
        curvs.append(curv)
    return p, Hp, "maxiter", maxiter, zero, zero


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

    Active-set loop over faces: CG on the free face from the current point y
    (stopped at the ball, at negative curvature and before leaving x + y >= 0);
    at a bound, a projected search along the offending CG step (the q_k-best of
    the truncated step and of the projection arc P(x + y + t seg) - x, t = 1,
    1/2, ..., with an Armijo stop), the coordinates that reach zero are fixed,
    and CG restarts on the smaller face.  ``info``: dict with ``cg`` (total CG
    iterations), ``minor`` (faces visited) and ``reason`` (end of the last CG run).
    """
    n = x.size
    wv = np.ones(n) if w is None else w
    F = binding_free_set(x, g, w, s)
    y = np.zeros(n)
    Hy = np.zeros(n)
    info = {"cg": 0, "minor": 0, "reason": "face"}
    maxiter = o.cg_maxiter

    def q(d, Hd):
        return g @ d + 0.5 * (d @ Hd)

    tiny = 1e-15 * max(1.0, float(np.abs(x).max()))
    for _ in range(o.newton_minor):
        if F.sum() < 2:
            break
        info["minor"] += 1
        gm = g + Hy
        cap = min(2 * int(F.sum()) + 10, 500) if maxiter is None else maxiter
        M = None if o.precond is None else o.precond(x.copy(), F.copy())
        p, Hp, reason, it, seg, Hseg = steihaug_cg(Hv, gm, y, F, wv, Delta, rtol, cap, x=x, M=M)
        info["cg"] += it
        info["reason"] = reason
        base, Hbase = y + p, Hy + Hp
        if reason != "bound":
            y, Hy = base, Hbase
            break
        # projected search along seg from base
        tb, _ = _step_to_bound(x, base, seg)
        zb, Hzb = base + tb * seg, Hbase + tb * Hseg
        qbase = q(base, Hbase)
        gb = g + Hbase
        cands = [(q(zb, Hzb), zb, Hzb)]
        t = 1.0
        for _ in range(8):
            zP = _projected_step(x + base + t * seg, x, w, s, Delta)
            HzP = Hv(zP)
            qP = q(zP, HzP)
            cands.append((qP, zP, HzP))
            if qP <= qbase + 1e-4 * (gb @ (zP - base)) or t <= tb:
                break
            t *= 0.5
        qn, zn, Hzn = min(cands, key=lambda c: c[0])
        if qn < qbase:
            y, Hy = zn, Hzn
        else:
            y, Hy = base, Hbase
        # clean the coordinates at the bound: exactly -x_i there
        at_bound = x + y <= tiny
        y[at_bound] = -x[at_bound]
        newF = F & ~at_bound
        if newF.sum() == F.sum():
            break
        F = newF
    return y, Hy, info


def active_set_newton(x, g, Hv, Delta, w, s, o, rtol):
    """Active-set Newton-CG solution of (Q_k) with many bounds fixed per face; returns (a, Ha, info).

    For a convex model, the quadratic program

        min_y <g, y> + 1/2 <y, H y>   s.t.  x + y >= 0,  <w, y> = 0

    is approached through faces: with an active set A (y_A = -x_A; at the start the
    binding set of :func:`binding_free_set`), CG on the free coordinates F gives the
    minimizer z of the model on that face, and every coordinate with x_i + z_i < 0 joins
    A at once; it ends when z is feasible (that face's minimizer is then the QP's one
    when no multiplier on A is negative).  :func:`projected_newton` instead fixes only
    the coordinates that the first offending CG step reaches, so its number of faces
    grows with the length of the active set's boundary, i.e. with the mesh.  A
    coordinate fixed too early is freed again by the binding set of the next outer
    iteration (releasing inside the loop, as the primal-dual active-set method of
    Hintermueller, Ito and Kunisch, SIAM J. Optim. 13 (2002) does, cycles on the smoothing
    Hessians of the control problems).  Feasible candidates per face: the segment from
    the best point so far towards z, cut at the first bound and at the ball (its product
    is a combination of known ones), and the projection of x + z onto the simplex scaled
    into the ball; the q_k-best is returned (the Cauchy safeguard of
    :func:`newton_candidate` follows).  CG warm-starts on every face and stops at the
    absolute tolerance ``rtol |P_F g|`` of the first face.  ``info``: ``cg`` (CG
    iterations), ``minor`` (faces), ``reason`` ('converged' when the last face's
    minimizer was feasible, else the end of its CG run), ``active`` (final |A|).
    """
    n = x.size
    wv = np.ones(n) if w is None else w
    A = ~binding_free_set(x, g, w, s)
    y, Hy = np.zeros(n), np.zeros(n)
    info = {"cg": 0, "minor": 0, "reason": "face", "active": int(A.sum())}
    big = 1e6 * Delta  # CG ignores the ball; the candidates are scaled into it
    best = (0.0, np.zeros(n), np.zeros(n))
    atol = None

    def q(d, Hd):
        return g @ d + 0.5 * (d @ Hd)

    for _ in range(o.newton_minor):
        F = ~A
        if F.sum() < 1:
            break
        info["minor"] += 1
        # start of this face: y_A = -x_A, the mass defect spread over F along w
        y0 = y.copy()
        y0[A] = -x[A]
        wF = wv[F]
        y0[F] -= ((wv @ y0) / (wF @ wF)) * wF
        dy = y0 - y
        Hy0 = Hy + Hv(dy) if np.any(dy) else Hy
        if atol is None:
            r0 = _tangent(g, F, wF, wF @ wF)
            atol = rtol * math.sqrt(r0 @ r0)
        cap = min(2 * int(F.sum()) + 10, 500) if o.cg_maxiter is None else o.cg_maxiter
        M = None if o.precond is None else o.precond(x.copy(), F.copy())
        p, Hp, reason, it, _, _ = steihaug_cg(Hv, g + Hy0, y0, F, wv, big, rtol, cap, M=M, atol=atol)
        info["cg"] += it
        info["reason"] = reason
        z, Hz = y0 + p, Hy0 + Hp
        # feasible candidates: the segment from the best point towards z, stopped at the
        # first bound and at the ball (its product is free), and the projection of x + z
        _, yb, Hyb = best
        seg, Hseg = z - yb, Hz - Hyb
        t, hits = _step_to_bound(x, yb, seg)
        t = min(t, _boundary(yb, seg, Delta) if np.linalg.norm(yb + seg) > Delta else 1.0)
        cands = [(yb + t * seg, Hyb + t * Hseg)]
        if hits:
            zf = _projected_step(x + z, x, w, s, Delta)
            cands.append((zf, Hv(zf)))
        for zc, Hzc in cands:
            qc = q(zc, Hzc)
            if qc < best[0]:
                best = (qc, zc, Hzc)
        if reason == "negative curvature":
            break
        y, Hy = z, Hz
        add = F & (x + z < 0.0)
        if not add.any():
            info["reason"] = "converged"
            break
        A = A | add
    info["active"] = int(A.sum())
    return best[1], best[2], info


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
    solver = active_set_newton if o.subproblem == "active-set" else projected_newton
    a, Ha, info = solver(x, g, Hv, Delta, w, s, o, rtol)
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


def _orthonormal_tangent(V, wv):
    """Orthonormal basis of the span of V's columns projected onto {<w, d> = 0}."""
    V = V - np.outer(wv, wv @ V) / (wv @ wv)
    if V.shape[1] == 0:
        return V
    Q, Rm = np.linalg.qr(V)
    dg = np.abs(np.diag(Rm))
    keep = dg > 1e-10 * max(float(dg.max()), 1e-300)
    return Q[:, keep]


def bundle_newton(x, f, g, hess, GY, alpha, Delta, w, s, dirs, full_dim=60):
    """Bundle-Newton candidate: the cutting planes of a bundle plus the exact Hessian.

    Solves, in a subspace span(V) of the tangent space {<w, d> = 0},

        min_d  max_j (<g_j, d> - alpha_j) + 1/2 <d, H d>
        s.t.   x + d >= 0,  |d| <= Delta,

    the proximal cutting-plane model of f with the Hessian of the smooth part as
    metric (a bundle-Newton step in the sense of Luksan and Vlcek, "A bundle-Newton
    method for nonsmooth unconstrained minimization", Math. Program. 1998, with one
    Hessian for all planes).  Across a kink the planes of both sides meet in the
    max, so the step follows the kink instead of crossing it.  V is an orthonormal
    basis of the whole tangent space when n <= ``full_dim`` (then the subproblem is
    exact; its products H V are cached per iterate in ``hess``), otherwise of the
    tangent projections of ``dirs`` (the other candidates) and of g_j - g.  The
    small QP (dim V + 1 variables) is solved by SLSQP.

    Returns (d, Hd, pred_max, Mnorm) or None; pred_max = -(max_j(<g_j, d> - alpha_j)
    + 1/2 <d, H d>) is the decrease forecast by this model and Mnorm = |V'HV|.
    """
    from scipy.optimize import minimize

    n = x.size
    wv = np.ones(n) if w is None else w
    if n <= full_dim:
        key = x.tobytes()
        cache = getattr(hess, "basis_cache", None)
        if cache is not None and cache[0] == key:
            V, HV = cache[1], cache[2]
        else:
            V = _orthonormal_tangent(np.eye(n)[:, :-1] - np.eye(n)[:, 1:], wv)
            HV = np.column_stack([hess(V[:, i]) for i in range(V.shape[1])])
            hess.basis_cache = (key, V, HV)
    else:
        cols = [d for d in dirs if np.any(d)]
        order = np.argsort(alpha)[:12]
        cols += [GY[j] - g for j in order]
        if not cols:
            return None
        V = _orthonormal_tangent(np.column_stack(cols), wv)
        if V.shape[1] == 0:
            return None
        HV = np.column_stack([hess(V[:, i]) for i in range(V.shape[1])])
    m = V.shape[1]
    M = V.T @ HV
    M = 0.5 * (M + M.T)
    P = GY @ V
    Mnorm = float(np.abs(np.linalg.eigvalsh(M)).max()) if m else 0.0

    def obj(z):
        c = z[:m]
        return z[m] + 0.5 * c @ M @ c

    def obj_grad(z):
        return np.append(M @ z[:m], 1.0)

    cons = [
        {"type": "ineq", "fun": lambda z: z[m] - (P @ z[:m] - alpha),
         "jac": lambda z: np.hstack([-P, np.ones((P.shape[0], 1))])},
        {"type": "ineq", "fun": lambda z: x + V @ z[:m],
         "jac": lambda z: np.hstack([V, np.zeros((n, 1))])},
        {"type": "ineq", "fun": lambda z: Delta * Delta - z[:m] @ z[:m],
         "jac": lambda z: np.append(-2.0 * z[:m], 0.0)[None, :]},
    ]
    z0 = np.append(np.zeros(m), float(np.max(-alpha)))
    with np.errstate(all="ignore"):
        res = minimize(obj, z0, jac=obj_grad, constraints=cons, method="SLSQP",
                       options={"maxiter": 200, "ftol": 1e-14})
    if not np.all(np.isfinite(res.x)):
        return None
    c = res.x[:m]
    d = _project(x + V @ c, w, s) - x
    nd = np.linalg.norm(d)
    if nd > Delta:
        d *= Delta / nd
        c = c * (Delta / nd)
    Hd = HV @ c
    pred_max = -(float(np.max(GY @ d - alpha)) + 0.5 * float(d @ Hd))
    return d, Hd, pred_max, Mnorm
