"""Part III, Algorithm 4.1: the constrained nonsmooth trust-region method over the simplex.

BFGS or exact-Hessian (``hessp``) models with the projected dogleg / Newton-CG steps of Step 8,
the Bouligand model of Steps 11-13 and the radius update of Step 14.  The implementation choices
beyond the text of the algorithm (all inside its freedom) are described in docs/trust_region.md.
Reached through ``femot.optim.minimize_simplex(method="trust-region")``.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve

from femot.optim._newton import HessianNonFinite, bundle_newton, fw_gap, newton_candidate
from femot.optim._run import EPS, HESSP_NAN_MESSAGE, NonFinite, RunState, call, finish, finite
from femot.optim.options import TrustRegionOptions
from femot.optim.result import STATUS_MESSAGES
from femot.optim.simplex import _minmax_lp, _project, _psi, _theta

__all__ = ["minimize_trust_region"]

_FW_MESSAGE = ("Converged: the Frank-Wolfe gap is below fw_rtol * max(|f|, fw_floor) "
               "(a certified bound on f - min f for convex f).")


# --------------------------------------------------------------------------
# small linear-algebra kernels
# --------------------------------------------------------------------------
def _dogleg(g, H, Delta):
    """Dogleg solution of min <g,p> + 1/2 p'Hp, |p| <= Delta (no simplex constraint)."""
    gg = g @ g
    if gg == 0.0:
        return np.zeros_like(g)
    gnorm = math.sqrt(gg)
    try:
        pN = -cho_solve(cho_factor(H), g)
    except (LinAlgError, ValueError):
        pN = None
    if pN is not None and np.linalg.norm(pN) <= Delta:
        return pN
    gHg = g @ H @ g
    if gHg <= 0.0:
        return -(Delta / gnorm) * g
    pU = -(gg / gHg) * g
    if np.linalg.norm(pU) >= Delta:
        return -(Delta / gnorm) * g
    if pN is None:
        return pU
    e = pN - pU
    a, b, c = e @ e, 2.0 * (pU @ e), pU @ pU - Delta * Delta
    tau = (-b + math.sqrt(max(b * b - 4.0 * a * c, 0.0))) / (2.0 * a)
    return pU + min(max(tau, 0.0), 1.0) * e


def _scaled_step(v, slope, H, Delta):
    """alpha * v minimizing slope*alpha + alpha^2/2 v'Hv on [0, min(1, Delta/|v|)].

    ``slope`` is the (negative) value of the linear part of the model at v
    (-theta or -psi); this is the generalized Cauchy point along v, and it
    satisfies the Cauchy decrease of Algorithm 4.1 Steps 8 / 11 when |v| <= R.
    """
    nv = np.linalg.norm(v)
    if nv == 0.0:
        return np.zeros_like(v)
    amax = min(1.0, Delta / nv)
    c = _quad(H, v)
    alpha = amax if c <= 0.0 else min(amax, -slope / c)
    return max(alpha, 0.0) * v


def _quad(H, v):
    """<v, H v> for a matrix H or a scalar H (= H * identity)."""
    if np.ndim(H) == 0:
        return float(H) * float(v @ v)
    return float(v @ H @ v)


def _best_combination(a, b, g, H):
    """lambda*a + (1-lambda)*b, lambda in [0,1], minimizing <g,d> + 1/2 d'Hd (closed form)."""
    e = a - b
    Hb = H @ b
    lin = g @ e + Hb @ e
    quad = e @ H @ e
    if quad > 0.0:
        lam = min(max(-lin / quad, 0.0), 1.0)
    else:
        lam = 1.0 if lin + 0.5 * quad < 0.0 else 0.0
    return b + lam * e


def _tangent_basis(wF):
    """Orthonormal basis (columns) of { d : <wF, d> = 0 } via a Householder QR."""
    Q, _ = np.linalg.qr(wF[:, None], mode="complete")
    return Q[:, 1:]


def _bfgs_update(H, s, y):
    """Powell-damped BFGS update of the model Hessian H with the pair (s, y).

    If s'y < 0.2 s'Hs the secant vector is damped to y~ = t y + (1-t) Hs with
    s'y~ = 0.2 s'Hs > 0, so H stays symmetric positive definite.  Returns
    (H_new, tag) with tag 'bfgs', 'damped' or 'skipped'.
    """
    Hs = H @ s
    sHs = s @ Hs
    if not (sHs > 1e-300) or not np.all(np.isfinite(y)):
        return H, "skipped"
    sy = s @ y
    tag = "bfgs"
    if sy < 0.2 * sHs:
        t = 0.8 * sHs / (sHs - sy)
        y = t * y + (1.0 - t) * Hs
        sy = s @ y
        tag = "damped"
    Hn = H - np.outer(Hs, Hs) / sHs + np.outer(y, y) / sy
    Hn = 0.5 * (Hn + Hn.T)
    if not np.all(np.isfinite(Hn)):
        return H, "skipped"
    return Hn, tag


class _CuttingPlanes:
    """Evaluated triples (y_j, f(y_j), g_j) for the cutting-plane candidate.

    Relevance at the current iterate x is the linearization error
    alpha_j = |f(x) - f_j - <g_j, x - y_j>|.  A subgradient equal to a stored
    one replaces it if it is more relevant; when full, the least relevant
    entry is dropped (not the oldest), so every piece of a polyhedral f seen
    near x stays represented.
    """

    def __init__(self, size):
        self.size = size
        self.Y, self.F, self.G = [], [], []

    def __len__(self):
        return len(self.Y)

    def _alpha(self, x, f):
        return _errors(x, f, *self.arrays())

    def add(self, y, fy, gy, x, f):
        if not self.size or not finite(fy, gy):
            return
        a_new = abs(f - fy - gy @ (x - y))
        if self.Y:
            alpha = self._alpha(x, f)
            G = np.array(self.G)
            same = np.nonzero(np.all(np.abs(G - gy) <= 1e-12 * (1.0 + np.abs(G)), axis=1))[0]
            if same.size:
                j = same[np.argmin(alpha[same])]
                if a_new < alpha[j]:
                    self.Y[j], self.F[j], self.G[j] = y.copy(), fy, gy.copy()
                return
            if len(self.Y) >= self.size:
                j = int(np.argmax(alpha))
                if alpha[j] <= a_new:
                    return
                del self.Y[j], self.F[j], self.G[j]
        self.Y.append(y.copy())
        self.F.append(fy)
        self.G.append(gy.copy())

    def arrays(self):
        return np.array(self.Y), np.array(self.F), np.array(self.G)



def _ratio(f, ft, pred):
    """rho = (f - f_trial) / pred, robust to cancellation near convergence.

    Both differences get the rounding level 10 eps max(1, |f|) added (a
    common trust-region safeguard), so a step whose actual and predicted
    decrease are both at rounding level is not rejected because of noise.
    """
    if not pred > 0:
        return -np.inf
    delta = 10.0 * EPS * max(1.0, abs(f))
    return (f - ft + delta) / (pred + delta)


# --------------------------------------------------------------------------
# steps
# --------------------------------------------------------------------------
def _bfgs_step(x, f, g, H, Hnorm, Delta, theta, d_theta, w, s, o, planes=None, info=None):
    """Inexact solution of the TR subproblem (Q_k) of Algorithm 4.1, Step 8.

    Candidates (Remark 4.2): (b) the generalized Cauchy point along the
    direction realizing theta_R; (a) the dogleg step of the model without the
    simplex constraints, projected onto S_w(s) (nonexpansive, so it stays in
    the ball).  With ``subspace_step`` a second (a)-candidate is the dogleg of
    the model restricted to the current face {d_i = 0 off the support,
    <w, d> = 0}, projected likewise; it recovers the Newton step of the
    constrained problem once the active set is identified.  Each (a) is
    combined with (b) by the q_k-best convex combination.

    With ``planes`` (Y, f(Y), G) of evaluated points, the cutting planes
    f(y_j) + <g_j, x + d - y_j> forecast the decrease of each candidate as
    f - max(q_k(d), planes(d)).  If the forecast of the q_k-best candidate
    says it will fail the rho-test of Step 9 (typically: it crosses a kink),
    the cutting-plane LP step (with H_k = H0 I) joins the candidates, and the
    one forecast to pass the test with the largest forecast decrease is taken.
    Only candidates satisfying the Cauchy decrease of Step 8 are eligible.
    If none of them is forecast to pass the test, ``info["forecast_fail"]`` is
    set (when ``info`` is a dict) and the q_k-best candidate is returned.

    Returns (d, pred = f - q_k(d), Cauchy right-hand side, label).
    """
    b = _scaled_step(d_theta, -theta, H, Delta)

    def model(d):
        return g @ d + 0.5 * (d @ H @ d)

    def project_into_ball(p):
        d = _project(x + p, w, s) - x
        nd = np.linalg.norm(d)
        return d * (Delta / nd) if nd > Delta else d

    cands = [(project_into_ball(_dogleg(g, H, Delta)), "dogleg")]
    if o.subspace_step:
        wv = np.ones_like(x) if w is None else w
        gap = np.linalg.norm(_project(x - g, w, s) - x, np.inf)
        F = x > min(1e-3 * s / wv.sum(), gap)
        if F.sum() >= 2:
            Z = _tangent_basis(wv[F])
            HF = H[np.ix_(F, F)]
            pr = _dogleg(Z.T @ g[F], Z.T @ HF @ Z, Delta)
            p = np.zeros_like(x)
            p[F] = Z @ pr
            cands.append((project_into_ball(p), "face"))
    R, nu = o.R, o.nu
    bound = nu / (2 * R) * theta * min(R, Delta, theta / (R * Hnorm))
    # (d, pred = f - q_k(d), Cauchy right-hand side, label) for the BFGS model
    options = [(b, -model(b), bound, "cauchy")]
    for a, label in cands:
        c = _best_combination(a, b, g, H)
        options.append((c, -model(c), bound, label))
    valid = [c for c in options if c[1] >= c[2] and c[1] > 0]
    if not valid:  # rounding only: the Cauchy point satisfies Step 8 in exact arithmetic
        return options[0]
    return _plane_choice(x, f, g, valid, theta, Delta, w, s, o, planes, info)


def _errors(x, f, Y, fY, G):
    """alpha_j = |f - f(y_j) - <g_j, x - y_j>|: the cutting planes at x are f + <g_j, d> - alpha_j."""
    return np.abs(f - fY - np.einsum("ij,ij->i", G, x[None, :] - Y))


def _forecast_choice(valid, forecast, o):
    """The candidate forecast to pass the rho-test of Step 9 (eta2, else eta1) with the largest
    forecast decrease; None if none is."""
    scored = [(forecast(c), c) for c in valid]
    for level in (o.eta2, o.eta1):
        good = [(e, c) for e, c in scored if e >= level * c[1]]
        if good:
            return max(good, key=lambda ec: ec[0])[1]
    return None


def _plane_choice(x, f, g, valid, theta, Delta, w, s, o, planes, info=None):
    """Pick among the Step 8 candidates ``valid``, with the forecast of the cutting planes.

    ``valid``: nonempty list of (d, pred, Cauchy right-hand side, label), all
    satisfying the Cauchy decrease.  Without planes the largest pred wins.
    """
    best = max(valid, key=lambda c: c[1])
    if planes is None:
        return best
    R, nu = o.R, o.nu
    Y, fY, GY = planes
    alpha = _errors(x, f, Y, fY, GY)

    def forecast(c):
        # f - max(q(d), cutting-plane model(d)): a sharper forecast of the actual decrease
        return min(c[1], -float(np.max(GY @ c[0] - alpha)))

    if forecast(best) >= o.eta2 * best[1]:
        return best  # the planes agree with the quadratic model (smooth regime)
    db = _planes_lp(x, GY, alpha, Delta, w, s)
    if db is not None:
        mu = o.H0  # H_k = H0 I for this candidate (Step 3 leaves H_k free)
        bound_b = nu / (2 * R) * theta * min(R, Delta, theta / (R * mu))
        cb = (db, -(g @ db + 0.5 * mu * (db @ db)), bound_b, "bundle")
        if cb[1] >= bound_b and cb[1] > 0:
            valid.append(cb)
    chosen = _forecast_choice(valid, forecast, o)
    if chosen is not None:
        return chosen
    if info is not None:
        info["forecast_fail"] = True  # every Step 8 candidate is forecast to fail Step 9
    return best


def _newton_step(x, f, g, hess, Delta, theta, d_theta, w, s, o, rtol, planes=None):
    """Step 8 with the exact Hessian (``hessp``): Cauchy point, projected Newton-CG, bundle-Newton.

    The candidates of :func:`femot.optim._newton.newton_candidate` (the
    generalized Cauchy point b along the theta_R direction and the q_k-best
    convex combination of b with the projected Newton-CG point).  The Cauchy
    decrease of Step 8 is enforced as pred(d) >= nu * pred(b): b satisfies it
    with the exact Hessian as with any symmetric H_k, so every such step does
    (the recorded Cauchy right-hand side is nu * pred(b)).

    With planes (Y, f(Y), G) that forecast that the best of
    these fails the rho-test (it crosses a kink), the bundle-Newton step of
    :func:`femot.optim._newton.bundle_newton` joins: the minimizer of
    max_j(<g_j, d> - alpha_j) + 1/2 <d, H d>.  Its predicted decrease is taken
    in that model (the collective model of the planes, as phi in Step 11) and it
    must satisfy the Cauchy decrease of Step 8 with |H_k| the norm of the
    reduced Hessian of its subspace.  The candidate forecast to pass the
    rho-test with the largest forecast decrease is taken.

    Returns (d, pred, Cauchy right-hand side, label, info).
    """
    options, info = newton_candidate(x, g, hess, Delta, theta, d_theta, w, s, o, rtol)
    bound = o.nu * options[0][1]
    cands = [(d, p, bound, label) for d, p, label in options]
    valid = [c for c in cands if c[1] >= c[2] and c[1] > 0]
    if not valid:  # rounding only
        return cands[0] + (info,)
    best = max(valid, key=lambda c: c[1])
    if planes is None:
        return best + (info,)
    Y, fY, GY = planes
    alpha = _errors(x, f, Y, fY, GY)
    GY = np.vstack([g[None, :], GY])
    alpha = np.append(0.0, alpha)

    def forecast(c):
        return min(c[1], -float(np.max(GY @ c[0] - alpha)))

    if forecast(best) >= o.eta2 * best[1]:
        return best + (info,)
    bn = bundle_newton(x, f, g, hess, GY, alpha, Delta, w, s, [c[0] for c in cands])
    d_lp = _planes_lp(x, GY, alpha, Delta, w, s)
    if bn is not None and d_lp is not None:
        d, _, pred_max, Mnorm = bn
        R, nu = o.R, o.nu
        # Cauchy decrease of the planes model (as Step 11 for phi): its stationarity
        # measure psi_B = -min max_j(<g_j, d> - alpha_j) over the ball (the LP step)
        psi_b = max(-float(np.max(GY @ d_lp - alpha)), 0.0)
        lim = psi_b / (R * Mnorm) if Mnorm > 0 else np.inf
        bound_bn = nu / (2 * R) * psi_b * min(R, Delta, lim)
        if pred_max >= bound_bn and pred_max > 0:
            valid.append((d, pred_max, bound_bn, "bundle-newton"))
    chosen = _forecast_choice(valid, forecast, o)
    return (best if chosen is None else chosen) + (info,)


def _planes_lp(x, GY, alpha, Delta, w, s):
    """min_d max_j <g_j, d> - alpha_j over (S_w(s) - x) ∩ box(Delta), scaled into the ball."""
    res = _minmax_lp(x, GY, alpha, Delta, w, s)
    if res.status != 0 or res.x is None:
        return None
    d = _project(res.x[:x.size], w, s) - x
    nd = np.linalg.norm(d)
    if nd > Delta:
        d *= Delta / nd
    return d


def _sample_subgradients(fun, x, g, Delta, w, s, rng, o, n):
    """Initial subgradients at points of the ball B(x, Delta) ∩ S_w(s) (Remark 4.2).

    Points: x + Delta*u projected onto the simplex (|P(x+Delta u) - x| <= Delta),
    for u pointing from the ``n_coord`` coordinates with the largest g_i/w_i
    toward the one with the smallest (the directions the linear model wants),
    and for ``n_random`` random unit tangent directions (seeded rng).  The
    main loop then probes along the psi_R direction (``n_probe``).  Returns (G, evaluations, nonfinite)
    with evaluations a list of (point, f, g).
    """
    wv = np.ones(n) if w is None else w
    r = g / wv
    j = int(np.argmin(r))
    dirs = []
    supp = [i for i in np.argsort(-r) if x[i] > 0 and i != j][: o.n_coord]
    for i in supp:
        u = np.zeros(n)
        u[j] += 1.0 / wv[j]
        u[i] -= 1.0 / wv[i]
        dirs.append(u / np.linalg.norm(u))
    for _ in range(o.n_random):
        u = rng.standard_normal(n)
        u -= (wv @ u) / (wv @ wv) * wv
        nu_ = np.linalg.norm(u)
        if nu_ > 0:
            dirs.append(u / nu_)
    G = [g]
    evals = []
    for u in dirs:
        xs = _project(x + Delta * u, w, s)
        if not np.any(xs != x):
            continue
        fs, gs = call(fun, xs, n, "a sample point of the Bouligand model")
        evals.append((xs, fs, gs))
        if not finite(fs, gs):
            return np.array(G), evals, True
        G.append(gs)
    return np.array(G), evals, False



def minimize_trust_region(fun, x0, hessp, weights, mass, n, options, callback, collect_subgradients):
    """Run Algorithm 4.1 (arguments checked by :func:`femot.optim.minimize_simplex`)."""
    st = _State(fun, x0, hessp, weights, mass, n, options, callback, collect_subgradients)
    while st.status is None:
        try:
            _iteration(st)
        except NonFinite as exc:
            # fun (or hessp) returned NaN/inf inside the iteration: stop with the last finite iterate
            st.status, st.stat_value = 3, st.rec["theta"]
            if exc.message is not None:
                st.message_override = exc.message
                st.rec["nhev"] = st.hess.calls
            st.log(st.rec)
    return _finish(st)


class _State(RunState):
    """State of one run of Algorithm 4.1: adds the model, the cutting planes and the sampling rng."""

    def __init__(self, fun, x0, hessp, weights, mass, n, options, callback, collect_subgradients):
        super().__init__(fun, x0, hessp, weights, mass, n,
                         lambda n_, w, s: TrustRegionOptions.coerce(options).resolved(n_, w, s), callback)
        self.rng = np.random.default_rng(self.o.seed)
        self.collect = collect_subgradients
        self.planes = _CuttingPlanes(self.o.bundle_size)
        self.remember(self.x.copy(), self.f, self.g)
        # BFGS matrix; with hessp the model uses exact Hessian-vector products instead
        self.H = self.o.H0 * np.eye(self.n) if self.hess is None else None
        self.scale = self.o.H0  # identity scaling used at resets
        self.since_reset = 0
        self.theta_start = None
        self.q_failed_here = False  # the last iteration was a BFGS step from x rejected with rho < 0
        self.fw_stop = False

    def remember(self, y, fy, gy):
        self.planes.add(y, fy, gy, self.x, self.f)

    def evaluate(self, y, where):
        """fun(y), counted and remembered; non-finite output raises NonFinite."""
        fy, gy = call(self.fun, y, self.n, where)
        self.nfev += 1
        self.remember(y, fy, gy)
        if not finite(fy, gy):
            raise NonFinite
        return fy, gy


def _stop_test(st, theta, fw):
    """Steps 4-5 and the safeguards; sets st.status (and what certified it) when the run ends."""
    o = st.o
    if o.convex:
        # certified stop: for convex f, fw_gap >= f(x) - min f
        if fw <= o.fw_rtol * max(abs(st.f), o.fw_floor):
            st.status, st.stat_value, st.stat_kind, st.fw_stop = 0, fw, "fw_gap", True
    elif theta <= o.tol:
        st.status, st.stat_value = 0, theta
    if st.status is None and st.k >= o.max_iter:
        st.status, st.stat_value = 1, theta
    if st.status is None and st.Delta < o.radius_floor:
        st.status, st.stat_value = 2, theta
    return st.status is not None


def _bfgs_norm(st):
    """|H_k| of the BFGS matrix, resetting it first if it lost definiteness or exceeds max_cond."""
    ev = np.linalg.eigvalsh(st.H)
    if not (ev[0] > 0 and ev[-1] <= st.o.max_cond * ev[0]):
        # BFGS failure: lost definiteness or ill-conditioned beyond max_cond
        st.H = st.o.H0 * np.eye(st.n)
        st.since_reset = 0
        st.n_resets += 1
        ev = np.linalg.eigvalsh(st.H)
    return float(ev[-1])


def _iteration(st):
    """One iteration k of Algorithm 4.1 (Steps 3-14) on the state ``st``."""
    o, x, g, w, s = st.o, st.x, st.g, st.w, st.s
    theta, d_theta, _ = _theta(x, g, o.R, w, s)
    fw = fw_gap(x, g, w, s)
    if st.theta_start is None:
        st.theta_start = theta
    if _stop_test(st, theta, fw):
        return
    hess = st.hess
    Hnorm = _bfgs_norm(st) if hess is None else None
    st.rec = rec = {"k": st.k, "f": st.f, "theta": theta, "psi": None, "Delta": st.Delta, "rho": None,
                    "step_norm": 0.0, "model": None, "step": None, "accepted": False, "pred": None,
                    "cauchy": None, "nfev": st.nfev, "fw_gap": fw, "nhev": 0 if hess is None else hess.calls,
                    "cg": None, "faces": None}
    bfgs_choice, forecast_fail = None, False
    if st.Delta >= o.Delta_min and hess is None:
        # Step 8 with the BFGS model.  At a point on a kink the oracle's single
        # gradient g can make theta_R(g) large while f decreases only slowly in
        # every direction: then no step with the Cauchy decrease of Step 8 can pass
        # the rho-test, and the cutting planes of the evaluated points typically
        # forecast exactly that.  Shrinking Delta below Delta_min by rejected trials
        # to reach the Bouligand model (Steps 11-12), which uses the subgradients
        # of the whole ball, costs one evaluation per halving and restarts every
        # such cycle at Delta_min; with ``forecast_switch`` the Bouligand model is
        # used at once, at the current radius.
        planes = st.planes.arrays() if len(st.planes) >= 2 else None
        finfo = {}
        bfgs_choice = _bfgs_step(x, st.f, g, st.H, Hnorm, st.Delta, theta, d_theta, w, s, o, planes, finfo)
        # switch only once a q_k step from this x has actually increased f across a
        # kink through x (the forecast is confirmed), not on the planes' word alone
        forecast_fail = o.forecast_switch and st.q_failed_here and finfo.get("forecast_fail", False)
    if st.Delta >= o.Delta_min and (hess is not None or not forecast_fail):
        trial = _model_trial(st, rec, theta, d_theta, bfgs_choice)
    else:
        trial = _bouligand_trial(st, rec, theta, forecast_fail)
        if trial is None:
            return  # psi_R-certified stop
    _step14(st, rec, *trial)


def _model_trial(st, rec, theta, d_theta, bfgs_choice):
    """Steps 8-9 with the BFGS or the exact second-order model: (d, pred, bound, rho, trial, failed_model)."""
    o, x, hess = st.o, st.x, st.hess
    if hess is not None:
        # -------- exact second-order model (hessp)
        rec["model"] = "newton"
        if st.last[0] is None or not np.array_equal(st.last[0], x):
            # hessp(x, .) is called only right after fun(x) (see the docstring)
            call(st.fun, x, st.n, f"iteration {st.k} (re-evaluation for hessp)")
            st.nfev += 1
        hess.at(x)
        planes = st.planes.arrays() if len(st.planes) >= 2 else None
        # forcing term of CG: eta_k = min(cg_rtol, theta_k / theta_0) -> 0 (superlinear)
        rtol_cg = min(o.cg_rtol, theta / st.theta_start) if st.theta_start > 0 else o.cg_rtol
        try:
            d, pred, bound, rec["step"], info = _newton_step(x, st.f, st.g, hess, st.Delta, theta, d_theta,
                                                             st.w, st.s, o, rtol_cg, planes)
        except HessianNonFinite:
            raise NonFinite(HESSP_NAN_MESSAGE) from None
        rec["cg"], rec["faces"] = info["cg"], info["minor"]
    else:
        rec["model"] = "bfgs"
        d, pred, bound, rec["step"] = bfgs_choice
    xt = _project(x + d, st.w, st.s)
    if np.linalg.norm(xt - x) <= 100 * EPS * max(1.0, np.abs(x).max()):
        # The model step does not move x at working precision; for BFGS (typically
        # an ill-conditioned matrix after crossing kinks) a model failure.
        return d, pred, bound, 0.0, None, hess is None
    ft, gt = st.evaluate(xt, f"iteration {st.k}")
    return d, pred, bound, _ratio(st.f, ft, pred), (xt, ft, gt), False


def _bouligand_subgradients(st, Delta):
    """Subgradients for the Bouligand model at x: the user's ``collect_subgradients`` or samples."""
    x, g, n = st.x, st.g, st.n
    if st.collect is not None:
        extra = [np.asarray(gg, dtype=float).reshape(-1) for gg in st.collect(x.copy(), Delta)]
        if st.hess is not None:
            st.last[0] = None  # the user's state may have moved: re-evaluate before hessp
        if any(e.shape != (n,) for e in extra):
            raise ValueError(f"collect_subgradients must return vectors of length {n}")
        G = np.vstack([g] + extra)
        bad = not np.all(np.isfinite(G))
    else:
        G, evals, bad = _sample_subgradients(st.fun, x, g, Delta, st.w, st.s, st.rng, st.o, n)
        st.nfev += len(evals)
        for e in evals:
            st.remember(*e)
    if bad:
        raise NonFinite
    return G


def _bouligand_trial(st, rec, theta, forecast_fail):
    """Steps 11-13 with phi(d) = max_j <g_j, d>; None after a psi_R-certified stop."""
    o, x, w, s, Delta = st.o, st.x, st.w, st.s, st.Delta
    R, tol = o.R, o.tol
    rec["model"], rec["step"] = "bouligand", "psi"
    G = _bouligand_subgradients(st, Delta)
    psi, d_psi, _ = _psi(x, G, R, w, s)
    st.psi = psi
    # Explore the ball along the model's own direction (Remark 4.2: "iteratively
    # exploring the ball"): a subgradient at x + t d_psi that does not confirm
    # the predicted slope is a missing Bouligand element; add it and re-solve.
    probe = None
    for _ in range(o.n_probe):
        if psi <= tol:
            break
        tp = min(1.0, Delta / np.linalg.norm(d_psi))
        y = _project(x + tp * d_psi, w, s)
        fy, gy = st.evaluate(y, "a probe point of the Bouligand model")
        probe = (y, fy, gy)
        if gy @ (y - x) <= -0.5 * tp * psi:
            break
        G = np.vstack([G, gy[None, :]])
        psi, d_psi, _ = _psi(x, G, R, w, s)
        st.psi = psi
    rec["psi"] = psi
    if psi <= tol and Delta <= o.psi_stop_radius and not o.convex:
        st.status, st.stat_value, st.stat_kind = 0, psi, "psi"
        st.log(rec)
        return None
    if o.bouligand_H == "bfgs" and st.hess is None:
        Hk, Hkn = st.H, float(np.linalg.eigvalsh(st.H)[-1])
    else:
        # Step 3 leaves H_k free; the kink is now modeled by phi itself, so
        # the BFGS curvature learned across it would only shrink the step.
        # (With hessp the Bouligand model uses H0 I as well.)
        Hk, Hkn = o.H0, o.H0
    d = _scaled_step(d_psi, -psi, Hk, Delta)
    pred = -(np.max(G @ d) + 0.5 * _quad(Hk, d))
    bound = o.nu / (2 * R) * psi * min(R, Delta, psi / (R * Hkn))
    # Step 13: rho = 0 unless psi_R > theta_R(g) Delta.  The rule belongs to the
    # small radii of Step 10; a forecast switch at Delta >= Delta_min (above) is
    # judged by the rho-test alone.
    if not ((psi > theta * Delta or forecast_fail) and pred > 0):
        return d, pred, bound, 0.0, None, False
    xt = _project(x + d, w, s)
    if probe is not None and np.array_equal(xt, probe[0]):
        ft, gt = probe[1], probe[2]
    else:
        ft, gt = st.evaluate(xt, f"iteration {st.k}")
    return d, pred, bound, _ratio(st.f, ft, pred), (xt, ft, gt), False


def _step14(st, rec, d, pred, bound, rho, trial, failed_model):
    """Step 14 (acceptance, radius), the BFGS update, resets and the callback."""
    o = st.o
    accepted = rho > o.eta1
    rec.update(rho=float(rho), step_norm=float(np.linalg.norm(d)), accepted=bool(accepted),
               pred=float(pred), cauchy=float(bound), nfev=st.nfev)
    if st.hess is not None:
        rec["nhev"] = st.hess.calls
    st.log(rec)
    # a q_k step increased f, and the subgradient of its trial point is exact
    # (to eta1 * pred) at x as well: a kink through x itself, not curvature
    st.q_failed_here = (rec["model"] == "bfgs" and trial is not None and rho < 0
                        and abs(st.f - trial[1] - trial[2] @ (st.x - trial[0])) <= o.eta1 * pred)
    if rho <= o.eta1:
        if rec["model"] == "newton":
            # The Newton step is often much shorter than Delta; shrinking Delta alone
            # would recompute the same rejected step.  beta1 * min(Delta, |d|) is the
            # usual rule (Conn, Gould, Toint, "Trust-Region Methods", Sec. 6.1);
            # Step 14 of Algorithm 4.1 (beta1 * Delta) is kept for the BFGS model.
            # (not below beta1 * Delta_min from a tiny step: the Bouligand model
            # of Step 11 then gets its turn instead of a collapse of the radius)
            st.Delta = o.beta1 * min(st.Delta, max(float(np.linalg.norm(d)), o.Delta_min))
        else:
            st.Delta = o.beta1 * st.Delta
    elif rho <= o.eta2:
        st.Delta = max(o.Delta_min, st.Delta)
    else:
        st.Delta = max(o.Delta_min, o.beta2 * st.Delta)
    st.Delta = min(st.Delta, o.Delta_max)
    # -------- BFGS update (Step 3 of the next iteration), on every evaluated step
    if trial is not None and st.hess is None:
        sv, yv = d, trial[2] - st.g
        st.H, tag = _bfgs_update(st.H, sv, yv)
        sy = sv @ yv
        if tag == "bfgs" and sy > 0:
            st.scale = float(yv @ yv / sy)
    if accepted:
        st.x, st.f, st.g = trial
    st.k += 1
    st.since_reset += 1
    if st.hess is None and (failed_model or not np.all(np.isfinite(st.H))):
        st.H = o.H0 * np.eye(st.n)
        st.since_reset = 0
        st.n_resets += 1
    elif st.hess is None and o.bfgs_reset and st.since_reset >= o.bfgs_reset:
        st.H = (st.scale if o.reset_scaling else o.H0) * np.eye(st.n)
        st.since_reset = 0
        st.n_resets += 1
    if st.callback_stops(rec["theta"]):
        st.status, st.stat_value = 4, _theta(st.x, st.g, o.R, st.w, st.s)[0]


def _finish(st):
    """The :class:`femot.optim.SimplexTRResult` of the run, with the message of its stop."""
    o = st.o

    def message(theta_final, fw_final):
        msg = STATUS_MESSAGES[st.status]
        if st.fw_stop:
            return _FW_MESSAGE + f" (fw_gap = {fw_final:.3e}, f = {st.f:.6e})"
        if st.status == 0 and st.stat_kind == "psi":
            return ("Converged: psi_R over the subgradients collected in the ball of radius "
                    f"{st.Delta:.3g} is below tol (Clarke stationarity up to tol).")
        if st.status == 1 and o.convex:
            return msg + (f" (max_iter = {o.max_iter}, fw_gap = {fw_final:.3e} > fw_rtol * max(|f|, fw_floor)"
                          f" = {o.fw_rtol * max(abs(st.f), o.fw_floor):.1e})")
        if st.status == 1:
            return msg + f" (max_iter = {o.max_iter}, theta = {theta_final:.3e} > tol = {o.tol:.1e})"
        if st.status == 2:
            return msg + f" (Delta = {st.Delta:.3e}, theta = {theta_final:.3e})"
        return msg

    return finish(st, message)
