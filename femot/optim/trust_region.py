"""Constrained nonsmooth trust-region method over the (weighted) simplex.

Implements Part III, Algorithm 4.1 ("A Constrained Nonsmooth TR Method") with
the implementation choices of Part III, Remark 4.2:

    min f(x)   s.t.  x in S_w(s) = { x >= 0, sum_i w_i x_i = s },

for a locally Lipschitz f given by an oracle ``fun(x) -> (f(x), g)`` that
returns the value and ONE Clarke subgradient g in df(x).

One iteration k (Steps 3-14):

* stationarity: theta_R(x_k, g_k) (Step 4, :func:`femot.optim.simplex.theta_R`);
  stop when theta_R <= tol (Step 5);
* if Delta_k >= Delta_min ("bfgs" phase): quadratic model
  q_k(d) = f + <g, d> + 1/2 d'H_k d with a damped BFGS matrix H_k; the step is
  the best convex combination (Remark 4.2) of the projected dogleg point and
  the generalized Cauchy point along the stationarity direction, checked
  against the constrained Cauchy decrease of Step 8; quality rho_k of Step 9;
* if Delta_k < Delta_min ("bouligand" phase): the model
  phi(d) = max_j <g_j, d> over subgradients collected in B(x_k, Delta_k) (a
  finite inner approximation of the collective Bouligand subdifferential,
  Remark 4.2, eq. (4.2)), the modified stationarity measure psi_R (an LP),
  the modified Cauchy condition of Step 11 and the modified quality
  indicator of Step 12;
* acceptance and radius update of Step 14 (Delta_{k+1} >= Delta_min after a
  successful step).

Implementation choices beyond the text of Algorithm 4.1 (all inside its
freedom: Step 3 allows any symmetric H_k, Steps 8/11 any step satisfying the
respective Cauchy decrease):

* Step 8 candidates also include the dogleg restricted to the current face
  (the Newton step once the active set is known) and, when the cutting planes
  f(y_j) + <g_j, . - y_j> of recently evaluated points disagree with q_k, a
  cutting-plane LP step (with H_k = H0 I).  Among candidates satisfying the
  Cauchy condition, the one forecast (by max(q_k, planes)) to pass the
  rho-test is taken.  ``bundle_size=0``, ``subspace_step=False`` give the
  plain Remark 4.2 step.
* Bouligand subgradients are gathered by probing the ball along the model's
  own minimizing direction until the new subgradient confirms the predicted
  slope (Remark 4.2: "iteratively exploring the ball"), plus optional
  coordinate/random samples or a user-supplied ``collect_subgradients``.
  The Bouligand step uses H_k = H0 I (``bouligand_H``).
* Forecast switch (``forecast_switch``, BFGS path only; a departure from
  Steps 7 and 13).  At an iterate on a kink the oracle's one gradient can give
  a large theta_R although f decreases slowly in every direction; then no step
  with the Step 8 Cauchy decrease passes the rho-test, and the algorithm as
  written reaches the Bouligand model only after rejected trials have halved
  Delta below Delta_min (one evaluation each), restarting every such cycle at
  Delta_min.  When the cutting planes forecast every Step 8 candidate to fail,
  and the last q_k trial from x did increase f with a subgradient whose plane
  is exact at x too (to eta1 * pred: the kink passes through x), femot takes
  the Step 11 Bouligand step at the current radius instead, judged
  by the rho-test alone (the rho = 0 rule for psi_R <= theta_R Delta of Step
  13 is kept for Delta < Delta_min).  Every Step 8 step taken still satisfies
  the Cauchy decrease; every Bouligand step its psi_R analogue.
* H_k is reset to H0 I when it loses definiteness, exceeds ``max_cond``, or
  yields a step that does not move x at working precision; periodically
  (``bfgs_reset``) to the scaled identity.
* Kinks that are minimizers are certified in the Bouligand phase by
  psi_R <= tol (status 0, ``stationarity_measure == "psi"``): a single
  subgradient never makes theta_R small there.

Second-order model (``hessp``).  With a Hessian-vector product
``hessp(x, v)`` of the smooth part of f, Step 3's H_k is the exact Hessian
(matrix-free) and Step 8 uses a projected Newton-CG step (binding set,
Steihaug-Toint CG on the free face, projected search), combined with the
Cauchy point so that the Cauchy decrease holds.  When the cutting planes of
the bundle forecast that this step crosses a kink, a bundle-Newton step
(min max_j(<g_j, d> - alpha_j) + 1/2 <d, H d>) joins the candidates; it is
eligible under the Cauchy decrease of the planes model (its own psi, as in
Step 11).  After a rejected Newton step the radius becomes
beta1 * min(Delta, max(|d|, Delta_min)) (the usual rule; Step 14's
beta1 * Delta would recompute the same short step).  The Bouligand phase is
as above, with H_k = H0 I.  See :mod:`femot.optim._newton`.  On smooth
problems with a nondegenerate minimizer this converges superlinearly, in a
number of iterations that does not grow with the conditioning.

Quadratic cuts (``kinks="bundle"``, with ``hessp``).  For f = Q + P with Q
quadratic (``hessp`` its constant Hessian H) and P continuous piecewise linear
(the plan formulation of the control problem), Algorithm 4.1 is replaced by a
bundle trust region: the cuts f(y_k) + <g_k, z - y_k> + 1/2 (z - y_k)'H(z - y_k)
of the evaluated points (each equal to f on the piece of y_k), a full-space
QP over them (Clarabel; H dense, n <= ``cut_max_n``), serious/null steps, and
the stop on psi = min over convex combinations of the cut gradients at x (of
points within ``cut_radius``) of theta_R plus their linearization errors -- an
LP; see :mod:`femot.optim._bundle`.  The history rows have model 'bundle' and
step 'qp' or 'probe'.

Convex objectives (``convex=True``): the Frank-Wolfe gap
fw_gap = <g, x> - s min_i g_i / w_i = max_{z in S_w(s)} <g, x - z> bounds
f(x) - min f, and the method stops when fw_gap <= fw_rtol max(|f|, fw_floor)
(instead of theta_R <= tol).  fw_gap equals theta_R whenever R is at least the
diameter (the default); it is reported for every f, but it is a certificate
only for convex f.

Default parameters are those of Part III, Section 4.2: R = sqrt(n),
Delta_min = 1e-6, eta1 = 0.1, eta2 = 0.9, beta1 = 0.5, beta2 = 1.5, nu = 1,
x0 = uniform, Delta0 = 1, tol = 1e-5.  On a weighted or rescaled simplex
wider than sqrt(n), R defaults to its diameter, so that theta_R keeps the
closed form (the paper's "R large enough", Remark 4.2).
"""
from __future__ import annotations

import math
import numbers

import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve
from scipy.optimize import OptimizeResult

from femot._docstrings import cite
from femot._threads import blas_one_thread
from femot._validation import as_positive_weights, as_vector, check_positive_scalar
from femot.optim import _bundle as _cuts
from femot.optim._newton import (
    HessianNonFinite,
    HessianOperator,
    bundle_newton,
    fw_gap,
    newton_candidate,
)
from femot.optim.simplex import _check_on_simplex, _diameter, _minmax_lp, _project, _psi, _theta

__all__ = [
    "DEFAULT_OPTIONS",
    "check_options",
    "SimplexTRResult",
    "SimplexPathResult",
    "minimize_simplex",
    "minimize_simplex_path",
]

#: Options of :func:`minimize_simplex` and their defaults (Part III, Sec. 4.2).
DEFAULT_OPTIONS = {
    "R": None,              # radius in theta_R / psi_R; None -> max(sqrt(n), diameter)
    "Delta0": 1.0,          # initial trust-region radius
    "Delta_min": 1e-6,      # below it the Bouligand model is used (Step 7)
    "Delta_max": None,      # cap of the radius; None -> max(Delta0, diameter)
    "eta1": 0.1,
    "eta2": 0.9,
    "beta1": 0.5,
    "beta2": 1.5,
    "nu": 1.0,              # Cauchy decrease fraction, 0 < nu <= 1
    "tol": 1e-5,            # stop when theta_R (or psi_R) <= tol
    "max_iter": 200,
    "bfgs_reset": 100,      # reset H to a scaled identity every so many iterations (0: never)
    "H0": 1.0,              # initial H = H0 * I
    "reset_scaling": True,  # reset to (y'y/s'y) I (last undamped pair) instead of H0 I
    "max_cond": 1e12,       # reset H when its condition number exceeds this (BFGS failure)
    "psi_stop_radius": None,  # stop on psi_R <= tol only if Delta <= this; None -> Delta_min
    "bundle_size": 50,      # cutting-plane candidate from the last evaluations (0: off)
    "bouligand_H": "identity",  # H_k of the Bouligand model: 'identity' (H0 I) or 'bfgs'
    "forecast_switch": True,  # BFGS path: Bouligand model when the planes forecast every Step 8 candidate to fail
    "radius_floor": 1e-14,  # radius collapse -> status 2
    "n_coord": 0,           # Bouligand sampling: coordinate directions
    "n_random": 2,          # Bouligand sampling: random directions
    "n_probe": None,        # Bouligand exploration along the model direction; None -> n + 5
    "seed": 0,              # rng of the random sampling directions
    "subspace_step": True,  # add the face-restricted dogleg as a candidate
    "convex": False,        # f is convex: stop on the Frank-Wolfe gap (a certificate) instead of tol
    "fw_rtol": 1e-8,        # convex stop: fw_gap <= fw_rtol * max(|f|, fw_floor)
    "fw_floor": 0.0,        # floor of |f| in the convex stop (set it when min f may be 0)
    "cg_maxiter": None,     # hessp model: CG iterations per face; None -> min(2 |F| + 10, 500)
    "cg_rtol": 1e-2,        # hessp model: largest CG forcing term (relative residual)
    "newton_minor": 50,     # hessp model: face changes (projected searches) per step
    "kinks": "bouligand",   # hessp model: 'bouligand' (Algorithm 4.1) or 'bundle' (quadratic cuts, constant H)
    "bundle_metric": None,  # kinks='bundle': optional callable (x, v) added to H in the QP (damping)
    "cut_radius": None,     # kinks='bundle': certificate uses cuts of points within it; None -> 1e-3 diameter
    "cut_bundle_size": 100,  # kinks='bundle': cuts kept (nearest to x)
    "cut_max_n": 3000,      # kinks='bundle': larger n falls back to 'bouligand' (dense H)
    "verbose": False,
}

STATUS_MESSAGES = {
    0: "Converged: the stationarity measure is below tol.",
    1: "Maximum number of iterations reached before the stationarity tolerance.",
    2: "Trust-region radius collapsed below radius_floor before the stationarity tolerance.",
    3: "fun returned a non-finite value or subgradient.",
    4: "Stopped by the callback.",
}

_FW_MESSAGE = ("Converged: the Frank-Wolfe gap is below fw_rtol * max(|f|, fw_floor) "
               "(a certified bound on f - min f for convex f).")
_HESSP_NAN_MESSAGE = "hessp returned a non-finite Hessian-vector product."


# --------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------
_COLUMNS = ("k", "f", "theta", "psi", "Delta", "rho", "|d|", "model", "step", "acc")


def _fmt(v, width=11, prec=3):
    if v is None:
        return "-".rjust(width)
    if isinstance(v, (bool, np.bool_)):
        return ("yes" if v else "no").rjust(width)
    if isinstance(v, numbers.Integral):
        return str(int(v)).rjust(width)
    if isinstance(v, numbers.Real):
        return f"{float(v):.{prec}e}".rjust(width)
    return str(v).rjust(width)


_WIDTHS = (5, 14, 11, 11, 11, 11, 11, 10, 15, 5)

#: What the columns of the iteration table mean (``femot identify`` prints it above its tables).
LEGEND = ("columns: f objective; theta stationarity measure theta_R(x, g); psi the measure psi_R over the "
          "subgradients gathered near x ('-': not computed);\n"
          "         Delta trust-region radius; rho actual / predicted decrease; |d| step length; model bfgs, newton "
          "(Hessian-vector products), bundle or bouligand;\n"
          "         step the trial step (dogleg, cauchy, face = dogleg on the current face, newton, bundle-newton, "
          "qp, probe, psi); acc accepted")


def _header():
    return "".join(c.rjust(wd) for c, wd in zip(_COLUMNS, _WIDTHS))


def _row(h):
    w = _WIDTHS
    return (_fmt(h["k"], w[0]) + _fmt(h["f"], w[1], 6) + _fmt(h["theta"]) + _fmt(h["psi"])
            + _fmt(h["Delta"]) + _fmt(h["rho"]) + _fmt(h["step_norm"])
            + _fmt(h["model"], w[7]) + " " + _fmt(h["step"], w[8] - 1) + _fmt(h["accepted"], w[9]))


class SimplexTRResult(OptimizeResult):
    """Result of :func:`minimize_simplex` (a ``scipy.optimize.OptimizeResult``).

    Attributes
    ----------
    x : final iterate (on the simplex)
    fun : f(x)
    jac : the subgradient returned by ``fun`` at x
    nit : number of trust-region iterations (steps computed)
    nfev : number of calls of ``fun`` (including Bouligand sampling)
    success, status, message : 0 converged, 1 max_iter, 2 radius collapse,
        3 non-finite output of fun or hessp, 4 stopped by the callback
    stationarity : final stationarity measure (theta_R, psi_R if the stop
        was certified by the collected subgradients, or fw_gap for the
        convex stop)
    stationarity_measure : ``"theta"``, ``"psi"`` or ``"fw_gap"``
    theta : theta_R at x with ``jac``
    Delta : final trust-region radius
    n_resets : number of BFGS resets
    fw_gap : Frank-Wolfe gap <g, x> - mass min_i g_i / w_i at x (a bound on
        f(x) - min f when f is convex; just a number otherwise)
    nhev : number of calls of ``hessp`` (0 without it)
    history : one dict per iteration with keys k, f, theta, psi, Delta, rho,
        step_norm, model ('bfgs' / 'newton' / 'bouligand'), step (the
        candidate taken: 'cauchy', 'dogleg', 'face', 'newton', 'bundle',
        'bundle-newton' or 'psi'), accepted, pred (model decrease f - q_k(d)), cauchy
        (right-hand side of the Cauchy condition of Step 8/11), nfev,
        fw_gap, nhev (cumulative hessp calls), cg (CG iterations of the
        Newton step, None otherwise).  The last row (model None) records
        the stationarity at the returned point; a row with model
        'bouligand' and rho None is the psi_R-certified stop.
    options : the options used (defaults filled in)
    """

    def table(self) -> str:
        """The iteration history as a printable table."""
        lines = [_header()]
        lines += [_row(h) for h in self.get("history", [])]
        return "\n".join(lines)


class SimplexPathResult(OptimizeResult):
    """Result of :func:`minimize_simplex_path`: one :class:`SimplexTRResult` per level.

    Attributes: params, results, x (final level), fun, success (all levels),
    status (first nonzero status, else 0), message, nit and nfev (totals).
    """

    def table(self) -> str:
        """One summary line per level of the path."""
        head = f"{'level':>5}{'param':>14}{'f':>16}{'stationarity':>14}{'nit':>6}{'nfev':>7}  status"
        lines = [head]
        for i, (p, r) in enumerate(zip(self.params, self.results)):
            lines.append(f"{i:>5}{_fmt(p, 14, 4)}{_fmt(r.fun, 16, 8)}"
                         f"{_fmt(r.stationarity, 14)}{r.nit:>6}{r.nfev:>7}  {r.status}")
        return "\n".join(lines)


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


class _Bundle:
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
        Y, F, G = self.arrays()
        return np.abs(f - F - np.einsum("ij,ij->i", G, x[None, :] - Y))

    def add(self, y, fy, gy, x, f):
        if not self.size or not _finite(fy, gy):
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


# --------------------------------------------------------------------------
# oracle handling and validation
# --------------------------------------------------------------------------
def _call(fun, x, n, where):
    """Evaluate the oracle, checking the shapes of (f, g)."""
    out = fun(x.copy())
    try:
        f, g = out
    except (TypeError, ValueError):
        raise ValueError(f"fun must return a pair (f, g); at {where} it returned {type(out).__name__}") from None
    try:
        fa = np.asarray(f, dtype=float)
        ga = np.asarray(g, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"fun must return numeric (f, g); at {where} it did not") from None
    if fa.size != 1:
        raise ValueError(f"fun must return a scalar value f; at {where} it has shape {fa.shape}")
    if ga.ndim == 2 and 1 in ga.shape:
        ga = ga.reshape(-1)
    if ga.shape != (n,):
        raise ValueError(f"fun must return a subgradient g of shape ({n},); at {where} it has shape {ga.shape}")
    return float(fa.reshape(())), ga.copy()


_EPS = np.finfo(float).eps


def _ratio(f, ft, pred):
    """rho = (f - f_trial) / pred, robust to cancellation near convergence.

    Both differences get the rounding level 10 eps max(1, |f|) added (a
    common trust-region safeguard), so a step whose actual and predicted
    decrease are both at rounding level is not rejected because of noise.
    """
    if not pred > 0:
        return -np.inf
    delta = 10.0 * _EPS * max(1.0, abs(f))
    return (f - ft + delta) / (pred + delta)


def _finite(f, g):
    return math.isfinite(f) and bool(np.all(np.isfinite(g)))


def check_options(options: dict | None, n: int = 2, weights=None, mass: float = 1.0) -> dict:
    """Validate options of :func:`minimize_simplex` without running it.

    Parameters
    ----------
    options : dict or None
        Options as passed to :func:`minimize_simplex` (keys of :data:`DEFAULT_OPTIONS`).
    n : int
        Dimension of the simplex the options are checked for (R and Delta_min depend on it).
    weights : array_like, optional
        Weights of the weighted simplex (default: all ones).
    mass : float
        Its mass.

    Returns
    -------
    dict
        The completed, checked options.

    Raises
    ------
    ValueError
        Naming the first option with an invalid value.
    """
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    return _parse_options(options, n, w, float(mass))


def _parse_options(options, n, w, s):
    opts = dict(DEFAULT_OPTIONS)
    if options is not None:
        if not isinstance(options, dict):
            raise ValueError(f"options must be a dict, got {type(options).__name__}")
        unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
        if unknown:
            raise ValueError(f"options: unknown option(s) {unknown}; valid: {sorted(DEFAULT_OPTIONS)}")
        opts.update(options)
    o = {}
    if opts["R"] is None:
        # Part III, Sec. 4.2: R = sqrt(n) (>= sqrt(2), the diameter of the standard
        # simplex, so theta_R is the closed-form LP value, Remark 4.2).  A weighted
        # or rescaled simplex can be wider; keep the ball inactive there as well.
        o["R"] = max(math.sqrt(n), _diameter(n, w, s))
    else:
        o["R"] = check_positive_scalar(opts["R"], "options['R']")
    for key in ("Delta0", "Delta_min", "beta2", "radius_floor", "H0", "max_cond"):
        o[key] = check_positive_scalar(opts[key], f"options['{key}']")
    o["tol"] = float(opts["tol"])
    if not (o["tol"] >= 0.0 and math.isfinite(o["tol"])):
        raise ValueError(f"options['tol'] must be a nonnegative number, got {opts['tol']!r}")
    for key in ("eta1", "eta2", "beta1", "nu"):
        o[key] = check_positive_scalar(opts[key], f"options['{key}']")
    if not o["eta1"] < o["eta2"] < 1.0:
        raise ValueError(f"options: need 0 < eta1 < eta2 < 1, got eta1={o['eta1']}, eta2={o['eta2']}")
    if not o["beta1"] < 1.0 < o["beta2"]:
        raise ValueError(f"options: need 0 < beta1 < 1 < beta2, got beta1={o['beta1']}, beta2={o['beta2']}")
    if o["nu"] > 1.0:
        raise ValueError(f"options['nu'] must satisfy 0 < nu <= 1, got {o['nu']}")
    if o["Delta0"] <= o["Delta_min"]:
        raise ValueError(f"options: need Delta0 > Delta_min, got Delta0={o['Delta0']}, Delta_min={o['Delta_min']}")
    psr = opts["psi_stop_radius"]
    o["psi_stop_radius"] = o["Delta_min"] if psr is None else check_positive_scalar(psr, "options['psi_stop_radius']")
    dmax = opts["Delta_max"]
    o["Delta_max"] = (max(o["Delta0"], _diameter(n, w, s)) if dmax is None
                      else check_positive_scalar(dmax, "options['Delta_max']"))
    if opts["n_probe"] is None:
        opts["n_probe"] = n + 5
    for key in ("max_iter", "bfgs_reset", "n_coord", "n_random", "seed", "bundle_size", "n_probe"):
        v = opts[key]
        if v is None and key == "bfgs_reset":
            v = 0
        if not isinstance(v, numbers.Integral) or v < 0:
            raise ValueError(f"options['{key}'] must be a nonnegative integer, got {v!r}")
        o[key] = int(v)
    o["subspace_step"] = bool(opts["subspace_step"])
    o["reset_scaling"] = bool(opts["reset_scaling"])
    o["forecast_switch"] = bool(opts["forecast_switch"])
    if opts["bouligand_H"] not in ("identity", "bfgs"):
        raise ValueError(f"options['bouligand_H'] must be 'identity' or 'bfgs', got {opts['bouligand_H']!r}")
    o["bouligand_H"] = opts["bouligand_H"]
    o["verbose"] = bool(opts["verbose"])
    o["convex"] = bool(opts["convex"])
    o["fw_rtol"] = check_positive_scalar(opts["fw_rtol"], "options['fw_rtol']")
    o["fw_floor"] = float(opts["fw_floor"])
    if not (o["fw_floor"] >= 0.0 and math.isfinite(o["fw_floor"])):
        raise ValueError(f"options['fw_floor'] must be a nonnegative number, got {opts['fw_floor']!r}")
    if opts["kinks"] not in ("bouligand", "bundle"):
        raise ValueError(f"options['kinks'] must be 'bouligand' or 'bundle', got {opts['kinks']!r}")
    o["kinks"] = opts["kinks"]
    if opts["bundle_metric"] is not None and not callable(opts["bundle_metric"]):
        raise ValueError("options['bundle_metric'] must be callable or None")
    o["bundle_metric"] = opts["bundle_metric"]
    o["cut_radius"] = (None if opts["cut_radius"] is None
                       else check_positive_scalar(opts["cut_radius"], "options['cut_radius']"))
    for key in ("cut_bundle_size", "cut_max_n"):
        v = opts[key]
        if not isinstance(v, numbers.Integral) or v < 2:
            raise ValueError(f"options['{key}'] must be an integer >= 2, got {v!r}")
        o[key] = int(v)
    o["cg_rtol"] = check_positive_scalar(opts["cg_rtol"], "options['cg_rtol']")
    if o["cg_rtol"] >= 1.0:
        raise ValueError(f"options['cg_rtol'] must be < 1, got {o['cg_rtol']}")
    for key in ("cg_maxiter", "newton_minor"):
        v = opts[key]
        if v is None and key == "cg_maxiter":
            o[key] = None
            continue
        if not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"options['{key}'] must be a positive integer, got {v!r}")
        o[key] = int(v)
    return o


def _setup(x0, weights, mass, n):
    s = check_positive_scalar(mass, "mass")
    if x0 is not None:
        x0 = as_vector(x0, "x0")
        n_ = x0.size
    elif weights is not None:
        n_ = np.asarray(weights).size
    elif n is not None:
        n_ = n
    else:
        raise ValueError("give x0, weights or n: the dimension of the simplex is unknown")
    if n is not None and int(n) != n_:
        raise ValueError(f"n = {n} does not match the length {n_} of x0/weights")
    if not isinstance(n_, numbers.Integral) or n_ < 1:
        raise ValueError(f"n must be a positive integer, got {n_!r}")
    w = None if weights is None else as_positive_weights(weights, "weights", n_)
    if x0 is None:
        x = np.full(n_, s / (n_ if w is None else w.sum()))
    else:
        _check_on_simplex(x0, w, s, "x0")
        x = _project(x0, w, s)  # remove the admissible 1e-8 slack exactly
    return x, w, s, n_


# --------------------------------------------------------------------------
# steps
# --------------------------------------------------------------------------
def _bfgs_step(x, f, g, H, Hnorm, Delta, theta, d_theta, w, s, o, bundle=None, info=None):
    """Inexact solution of the TR subproblem (Q_k) of Algorithm 4.1, Step 8.

    Candidates (Remark 4.2): (b) the generalized Cauchy point along the
    direction realizing theta_R; (a) the dogleg step of the model without the
    simplex constraints, projected onto S_w(s) (nonexpansive, so it stays in
    the ball).  With ``subspace_step`` a second (a)-candidate is the dogleg of
    the model restricted to the current face {d_i = 0 off the support,
    <w, d> = 0}, projected likewise; it recovers the Newton step of the
    constrained problem once the active set is identified.  Each (a) is
    combined with (b) by the q_k-best convex combination.

    With a ``bundle`` (Y, f(Y), G) of evaluated points, the cutting planes
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
    if o["subspace_step"]:
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
    R, nu = o["R"], o["nu"]
    bound = nu / (2 * R) * theta * min(R, Delta, theta / (R * Hnorm))
    # (d, pred = f - q_k(d), Cauchy right-hand side, label) for the BFGS model
    options = [(b, -model(b), bound, "cauchy")]
    for a, label in cands:
        c = _best_combination(a, b, g, H)
        options.append((c, -model(c), bound, label))
    valid = [c for c in options if c[1] >= c[2] and c[1] > 0]
    if not valid:  # rounding only: the Cauchy point satisfies Step 8 in exact arithmetic
        return options[0]
    return _bundle_choice(x, f, g, valid, theta, Delta, w, s, o, bundle, info)


def _bundle_choice(x, f, g, valid, theta, Delta, w, s, o, bundle, info=None):
    """Pick among the Step 8 candidates ``valid``, with the cutting-plane forecast of a bundle.

    ``valid``: nonempty list of (d, pred, Cauchy right-hand side, label), all
    satisfying the Cauchy decrease.  Without a bundle the largest pred wins.
    """
    best = max(valid, key=lambda c: c[1])
    if bundle is None:
        return best
    R, nu = o["R"], o["nu"]
    Y, fY, GY = bundle
    # cutting planes at x: f + <g_j, d> - alpha_j, alpha_j = |linearization error|
    alpha = np.abs(f - fY - np.einsum("ij,ij->i", GY, x[None, :] - Y))

    def forecast(c):
        # f - max(q(d), cutting-plane model(d)): a sharper forecast of the actual decrease
        return min(c[1], -float(np.max(GY @ c[0] - alpha)))

    if forecast(best) >= o["eta2"] * best[1]:
        return best  # the planes agree with the quadratic model (smooth regime)
    db = _bundle_lp(x, GY, alpha, Delta, w, s)
    if db is not None:
        mu = o["H0"]  # H_k = H0 I for this candidate (Step 3 leaves H_k free)
        bound_b = nu / (2 * R) * theta * min(R, Delta, theta / (R * mu))
        cb = (db, -(g @ db + 0.5 * mu * (db @ db)), bound_b, "bundle")
        if cb[1] >= bound_b and cb[1] > 0:
            valid.append(cb)
    # prefer steps forecast to pass the rho-test of Step 9, then the largest forecast
    scored = [(forecast(c), c) for c in valid]
    for level in (o["eta2"], o["eta1"]):
        good = [(e, c) for e, c in scored if e >= level * c[1]]
        if good:
            return max(good, key=lambda ec: ec[0])[1]
    if info is not None:
        info["forecast_fail"] = True  # every Step 8 candidate is forecast to fail Step 9
    return best


def _newton_step(x, f, g, hess, Delta, theta, d_theta, w, s, o, rtol, bundle=None):
    """Step 8 with the exact Hessian (``hessp``): Cauchy point, projected Newton-CG, bundle-Newton.

    The candidates of :func:`femot.optim._newton.newton_candidate` (the
    generalized Cauchy point b along the theta_R direction and the q_k-best
    convex combination of b with the projected Newton-CG point).  The Cauchy
    decrease of Step 8 is enforced as pred(d) >= nu * pred(b): b satisfies it
    with the exact Hessian as with any symmetric H_k, so every such step does
    (the recorded Cauchy right-hand side is nu * pred(b)).

    With a bundle (Y, f(Y), G) whose cutting planes forecast that the best of
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
    bound = o["nu"] * options[0][1]
    cands = [(d, p, bound, label) for d, p, label in options]
    valid = [c for c in cands if c[1] >= c[2] and c[1] > 0]
    if not valid:  # rounding only
        return cands[0] + (info,)
    best = max(valid, key=lambda c: c[1])
    if bundle is None:
        return best + (info,)
    Y, fY, GY = bundle
    alpha = np.abs(f - fY - np.einsum("ij,ij->i", GY, x[None, :] - Y))
    GY = np.vstack([g[None, :], GY])
    alpha = np.append(0.0, alpha)

    def forecast(c):
        return min(c[1], -float(np.max(GY @ c[0] - alpha)))

    if forecast(best) >= o["eta2"] * best[1]:
        return best + (info,)
    bn = bundle_newton(x, f, g, hess, GY, alpha, Delta, w, s, [c[0] for c in cands])
    d_lp = _bundle_lp(x, GY, alpha, Delta, w, s)
    if bn is not None and d_lp is not None:
        d, _, pred_max, Mnorm = bn
        R, nu = o["R"], o["nu"]
        # Cauchy decrease of the planes model (as Step 11 for phi): its stationarity
        # measure psi_B = -min max_j(<g_j, d> - alpha_j) over the ball (the LP step)
        psi_b = max(-float(np.max(GY @ d_lp - alpha)), 0.0)
        lim = psi_b / (R * Mnorm) if Mnorm > 0 else np.inf
        bound_bn = nu / (2 * R) * psi_b * min(R, Delta, lim)
        if pred_max >= bound_bn and pred_max > 0:
            valid.append((d, pred_max, bound_bn, "bundle-newton"))
    scored = [(forecast(c), c) for c in valid]
    for level in (o["eta2"], o["eta1"]):
        good = [(e, c) for e, c in scored if e >= level * c[1]]
        if good:
            return max(good, key=lambda ec: ec[0])[1] + (info,)
    return best + (info,)


def _bundle_lp(x, GY, alpha, Delta, w, s):
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
    supp = [i for i in np.argsort(-r) if x[i] > 0 and i != j][: o["n_coord"]]
    for i in supp:
        u = np.zeros(n)
        u[j] += 1.0 / wv[j]
        u[i] -= 1.0 / wv[i]
        dirs.append(u / np.linalg.norm(u))
    for _ in range(o["n_random"]):
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
        fs, gs = _call(fun, xs, n, "a sample point of the Bouligand model")
        evals.append((xs, fs, gs))
        if not _finite(fs, gs):
            return np.array(G), evals, True
        G.append(gs)
    return np.array(G), evals, False


# --------------------------------------------------------------------------
# the method
# --------------------------------------------------------------------------
@cite("III")
def minimize_simplex(fun=None, x0=None, *, hessp=None, weights=None, mass=1.0, n=None, options=None,
                     callback=None, collect_subgradients=None, path=None, fun_factory=None):
    """Minimize a locally Lipschitz f over the (weighted) simplex.

    Part III, Algorithm 4.1 (constrained nonsmooth trust-region method) with
    the choices of Remark 4.2 (BFGS model, projected dogleg / stationarity
    step, Bouligand safeguard)::

        min f(x)  s.t.  x >= 0,  sum_i w_i x_i = mass.

    Parameters
    ----------
    fun : callable or None
        ``fun(x) -> (f, g)``: value and ONE Clarke subgradient (None only with
        ``path``/``fun_factory``).
    x0 : array_like or None, optional
        Starting point on the simplex (default: uniform, ``mass / sum(w) * ones``).
        A point off the simplex by more than 1e-8 raises ValueError.
    hessp : callable or None, optional
        ``hessp(x, v) -> (n,) array``: the Hessian of the smooth part of f at x
        times v (exact where f is twice differentiable; at a kink any element of
        the limiting Hessians, e.g. the one matching the subgradient ``fun``
        returned).  It is called only at the current iterate x and only right
        after ``fun(x)`` (the method re-evaluates ``fun`` at x first if its last
        call was elsewhere), so an implementation may reuse what ``fun`` computed.
        Without it the model is the damped BFGS matrix (the method is then
        exactly that of Remark 4.2).  A result of the wrong shape raises
        ValueError; NaN/inf stops with status 3.
    weights : array_like or None, optional
        Positive weights w (default: ones, the standard simplex).
    mass : float, optional
        The mass s > 0 of the simplex (default 1).
    n : int or None, optional
        Dimension, needed only if neither x0 nor weights is given.
    options : dict or None, optional
        Overrides of :data:`DEFAULT_OPTIONS`; unknown keys raise.
        Algorithm 4.1 constants: R, Delta0, Delta_min, eta1, eta2, beta1,
        beta2, nu, tol, max_iter.  Safeguards: Delta_max, radius_floor,
        psi_stop_radius.  Model: H0, bfgs_reset, reset_scaling, max_cond,
        subspace_step, bundle_size, bouligand_H.  Second-order model (with
        ``hessp``): cg_maxiter (CG iterations per face, None: min(2|F| + 10,
        500)), cg_rtol (largest CG forcing term; the term used is
        min(cg_rtol, theta_k / theta_0)), newton_minor (face changes per
        step), kinks ('bouligand': Algorithm 4.1; 'bundle': quadratic cuts for
        f = quadratic + piecewise linear, with bundle_metric (optional callable
        (x, v) added to H in the QP), cut_radius, cut_bundle_size, cut_max_n).
        Convex stop: convex (bool), fw_rtol (default 1e-8),
        fw_floor (default 0; set it to the scale of f when min f may be 0).
        Bouligand sampling: n_probe, n_coord, n_random, seed.  Output:
        verbose (print the iteration table while running).
    callback : callable or None, optional
        ``callback(intermediate_result)`` after every iteration (an
        OptimizeResult with x, fun, jac, nit, stationarity, Delta); returning
        True (or raising StopIteration) stops with status 4.
    collect_subgradients : callable or None, optional
        ``collect_subgradients(x, radius) -> list of g``: subgradients from the
        ball B(x, radius) for the Bouligand model (e.g. all Bouligand elements of
        a bilevel map, Part III Thm 3.12); by default they are sampled (see
        ``_sample_subgradients``).
    path : iterable or None, optional
        Parameter values of a sequence of problems solved with warm starts; see
        :func:`minimize_simplex_path` (``fun`` must then be None).
    fun_factory : callable or None, optional
        ``fun_factory(p)`` builds the problem of each ``p`` in ``path`` (given
        together with ``path``).

    Returns
    -------
    SimplexTRResult or SimplexPathResult
        The latter with ``path``.

    Raises
    ------
    ValueError
        If a callable argument is not callable, ``fun`` is combined with ``path``, only
        one of ``path``/``fun_factory`` is given, ``x0`` is off the simplex, or an option
        is unknown or invalid.

    Notes
    -----
    Stopping: theta_R(x, g) <= tol (Step 5, status 0) -- with ``convex=True``
    instead fw_gap <= fw_rtol * max(|f|, fw_floor), the only success then --, or
    -- in the Bouligand
    phase (Delta_k < Delta_min) -- psi_R <= tol, i.e. a convex combination of
    the subgradients collected in B(x, Delta_k) is stationary up to tol
    (Goldstein-type stationarity; this is how kinks that are minimizers are
    certified, where a single subgradient never has small theta).
    """
    if path is not None or fun_factory is not None:
        if fun is not None:
            raise ValueError("fun must be None when path/fun_factory are given")
        if path is None or fun_factory is None:
            raise ValueError("path and fun_factory must be given together")
        return minimize_simplex_path(fun_factory, path, x0, weights=weights, mass=mass, n=n,
                                     options=options, callback=callback,
                                     collect_subgradients=collect_subgradients, hessp=hessp)
    if not callable(fun):
        raise ValueError(f"fun must be callable, got {type(fun).__name__}")
    if callback is not None and not callable(callback):
        raise ValueError("callback must be callable or None")
    if collect_subgradients is not None and not callable(collect_subgradients):
        raise ValueError("collect_subgradients must be callable or None")
    if hessp is not None and not callable(hessp):
        raise ValueError(f"hessp must be callable or None, got {type(hessp).__name__}")
    with blas_one_thread():  # same rounding for any OPENBLAS_NUM_THREADS (femot._threads)
        return _run(fun, x0, hessp, weights, mass, n, options, callback, collect_subgradients)


def _run(fun, x0, hessp, weights, mass, n, options, callback, collect_subgradients):
    st = _State(fun, x0, hessp, weights, mass, n, options, callback, collect_subgradients)
    if st.hess is not None and st.o["kinks"] == "bundle" and st.n <= st.o["cut_max_n"]:
        return _cut_result(st)
    while st.status is None:
        try:
            _iteration(st)
        except _NonFinite as exc:
            # fun (or hessp) returned NaN/inf inside the iteration: stop with the last finite iterate
            st.status, st.stat_value = 3, st.rec["theta"]
            if exc.message is not None:
                st.message_override = exc.message
                st.rec["nhev"] = st.hess.calls
            st.log(st.rec)
    return _finish(st)


class _NonFinite(Exception):
    """``fun`` or ``hessp`` returned NaN/inf during an iteration (status 3)."""

    def __init__(self, message=None):
        super().__init__(message)
        self.message = message


class _State:
    """Mutable state of one run of :func:`minimize_simplex` (iterate, model, radius, counters, log)."""

    def __init__(self, fun, x0, hessp, weights, mass, n, options, callback, collect_subgradients):
        self.x, self.w, self.s, self.n = _setup(x0, weights, mass, n)
        self.o = _parse_options(options, self.n, self.w, self.s)
        self.rng = np.random.default_rng(self.o["seed"])
        self.callback, self.collect = callback, collect_subgradients
        self.hess = None
        self.last = [None]  # the point of the last call of fun (hessp's contract)
        if hessp is not None:
            self.hess = HessianOperator(hessp, self.n)
            user_fun, last = fun, self.last

            def fun(z):
                last[0] = z
                return user_fun(z)
        self.fun = fun
        self.f, self.g = _call(fun, self.x, self.n, "x0")
        if not _finite(self.f, self.g):
            raise ValueError("fun(x0) returned a non-finite value or subgradient")
        self.nfev = 1
        self.bundle = _Bundle(self.o["bundle_size"])
        self.remember(self.x.copy(), self.f, self.g)
        # BFGS matrix; with hessp the model uses exact Hessian-vector products instead
        self.H = self.o["H0"] * np.eye(self.n) if self.hess is None else None
        self.scale = self.o["H0"]  # identity scaling used at resets
        self.since_reset = self.n_resets = self.k = 0
        self.Delta = self.o["Delta0"]
        self.history = []
        self.status, self.stat_value, self.stat_kind, self.psi = None, None, "theta", None
        self.theta_start = None
        self.q_failed_here = False  # the last iteration was a BFGS step from x rejected with rho < 0
        self.fw_stop = False
        self.message_override = None
        self.rec = None
        if self.o["verbose"]:
            print(_header())

    def remember(self, y, fy, gy):
        self.bundle.add(y, fy, gy, self.x, self.f)

    def log(self, rec):
        self.history.append(rec)
        if self.o["verbose"]:
            print(_row(rec), flush=True)

    def evaluate(self, y, where):
        """fun(y), counted and remembered; non-finite output raises _NonFinite."""
        fy, gy = _call(self.fun, y, self.n, where)
        self.nfev += 1
        self.remember(y, fy, gy)
        if not _finite(fy, gy):
            raise _NonFinite
        return fy, gy


def _stop_test(st, theta, fw):
    """Steps 4-5 and the safeguards; sets st.status (and what certified it) when the run ends."""
    o = st.o
    if o["convex"]:
        # certified stop: for convex f, fw_gap >= f(x) - min f
        if fw <= o["fw_rtol"] * max(abs(st.f), o["fw_floor"]):
            st.status, st.stat_value, st.stat_kind, st.fw_stop = 0, fw, "fw_gap", True
    elif theta <= o["tol"]:
        st.status, st.stat_value = 0, theta
    if st.status is None and st.k >= o["max_iter"]:
        st.status, st.stat_value = 1, theta
    if st.status is None and st.Delta < o["radius_floor"]:
        st.status, st.stat_value = 2, theta
    return st.status is not None


def _bfgs_norm(st):
    """|H_k| of the BFGS matrix, resetting it first if it lost definiteness or exceeds max_cond."""
    ev = np.linalg.eigvalsh(st.H)
    if not (ev[0] > 0 and ev[-1] <= st.o["max_cond"] * ev[0]):
        # BFGS failure: lost definiteness or ill-conditioned beyond max_cond
        st.H = st.o["H0"] * np.eye(st.n)
        st.since_reset = 0
        st.n_resets += 1
        ev = np.linalg.eigvalsh(st.H)
    return float(ev[-1])


def _iteration(st):
    """One iteration k of Algorithm 4.1 (Steps 3-14) on the state ``st``."""
    o, x, g, w, s = st.o, st.x, st.g, st.w, st.s
    theta, d_theta, _ = _theta(x, g, o["R"], w, s)
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
                    "cg": None}
    bfgs_choice, forecast_fail = None, False
    if st.Delta >= o["Delta_min"] and hess is None:
        # Step 8 with the BFGS model.  At a point on a kink the oracle's single
        # gradient g can make theta_R(g) large while f decreases only slowly in
        # every direction: then no step with the Cauchy decrease of Step 8 can pass
        # the rho-test, and the cutting planes of the evaluated points typically
        # forecast exactly that.  Shrinking Delta below Delta_min by rejected trials
        # to reach the Bouligand model (Steps 11-12), which uses the subgradients
        # of the whole ball, costs one evaluation per halving and restarts every
        # such cycle at Delta_min; with ``forecast_switch`` the Bouligand model is
        # used at once, at the current radius.
        bundle = st.bundle.arrays() if len(st.bundle) >= 2 else None
        finfo = {}
        bfgs_choice = _bfgs_step(x, st.f, g, st.H, Hnorm, st.Delta, theta, d_theta, w, s, o, bundle, finfo)
        # switch only once a q_k step from this x has actually increased f across a
        # kink through x (the forecast is confirmed), not on the planes' word alone
        forecast_fail = o["forecast_switch"] and st.q_failed_here and finfo.get("forecast_fail", False)
    if st.Delta >= o["Delta_min"] and (hess is not None or not forecast_fail):
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
            _call(st.fun, x, st.n, f"iteration {st.k} (re-evaluation for hessp)")
            st.nfev += 1
        hess.at(x)
        bundle = st.bundle.arrays() if len(st.bundle) >= 2 else None
        # forcing term of CG: eta_k = min(cg_rtol, theta_k / theta_0) -> 0 (superlinear)
        rtol_cg = min(o["cg_rtol"], theta / st.theta_start) if st.theta_start > 0 else o["cg_rtol"]
        try:
            d, pred, bound, rec["step"], info = _newton_step(x, st.f, st.g, hess, st.Delta, theta, d_theta,
                                                             st.w, st.s, o, rtol_cg, bundle)
        except HessianNonFinite:
            raise _NonFinite(_HESSP_NAN_MESSAGE) from None
        rec["cg"] = info["cg"]
    else:
        rec["model"] = "bfgs"
        d, pred, bound, rec["step"] = bfgs_choice
    xt = _project(x + d, st.w, st.s)
    if np.linalg.norm(xt - x) <= 100 * _EPS * max(1.0, np.abs(x).max()):
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
        raise _NonFinite
    return G


def _bouligand_trial(st, rec, theta, forecast_fail):
    """Steps 11-13 with phi(d) = max_j <g_j, d>; None after a psi_R-certified stop."""
    o, x, w, s, Delta = st.o, st.x, st.w, st.s, st.Delta
    R, tol = o["R"], o["tol"]
    rec["model"], rec["step"] = "bouligand", "psi"
    G = _bouligand_subgradients(st, Delta)
    psi, d_psi, _ = _psi(x, G, R, w, s)
    st.psi = psi
    # Explore the ball along the model's own direction (Remark 4.2: "iteratively
    # exploring the ball"): a subgradient at x + t d_psi that does not confirm
    # the predicted slope is a missing Bouligand element; add it and re-solve.
    probe = None
    for _ in range(o["n_probe"]):
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
    if psi <= tol and Delta <= o["psi_stop_radius"] and not o["convex"]:
        st.status, st.stat_value, st.stat_kind = 0, psi, "psi"
        st.log(rec)
        return None
    if o["bouligand_H"] == "bfgs" and st.hess is None:
        Hk, Hkn = st.H, float(np.linalg.eigvalsh(st.H)[-1])
    else:
        # Step 3 leaves H_k free; the kink is now modeled by phi itself, so
        # the BFGS curvature learned across it would only shrink the step.
        # (With hessp the Bouligand model uses H0 I as well.)
        Hk, Hkn = o["H0"], o["H0"]
    d = _scaled_step(d_psi, -psi, Hk, Delta)
    pred = -(np.max(G @ d) + 0.5 * _quad(Hk, d))
    bound = o["nu"] / (2 * R) * psi * min(R, Delta, psi / (R * Hkn))
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
    accepted = rho > o["eta1"]
    rec.update(rho=float(rho), step_norm=float(np.linalg.norm(d)), accepted=bool(accepted),
               pred=float(pred), cauchy=float(bound), nfev=st.nfev)
    if st.hess is not None:
        rec["nhev"] = st.hess.calls
    st.log(rec)
    # a q_k step increased f, and the subgradient of its trial point is exact
    # (to eta1 * pred) at x as well: a kink through x itself, not curvature
    st.q_failed_here = (rec["model"] == "bfgs" and trial is not None and rho < 0
                        and abs(st.f - trial[1] - trial[2] @ (st.x - trial[0])) <= o["eta1"] * pred)
    if rho <= o["eta1"]:
        if rec["model"] == "newton":
            # The Newton step is often much shorter than Delta; shrinking Delta alone
            # would recompute the same rejected step.  beta1 * min(Delta, |d|) is the
            # usual rule (Conn, Gould, Toint, "Trust-Region Methods", Sec. 6.1);
            # Step 14 of Algorithm 4.1 (beta1 * Delta) is kept for the BFGS model.
            # (not below beta1 * Delta_min from a tiny step: the Bouligand model
            # of Step 11 then gets its turn instead of a collapse of the radius)
            st.Delta = o["beta1"] * min(st.Delta, max(float(np.linalg.norm(d)), o["Delta_min"]))
        else:
            st.Delta = o["beta1"] * st.Delta
    elif rho <= o["eta2"]:
        st.Delta = max(o["Delta_min"], st.Delta)
    else:
        st.Delta = max(o["Delta_min"], o["beta2"] * st.Delta)
    st.Delta = min(st.Delta, o["Delta_max"])
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
        st.H = o["H0"] * np.eye(st.n)
        st.since_reset = 0
        st.n_resets += 1
    elif st.hess is None and o["bfgs_reset"] and st.since_reset >= o["bfgs_reset"]:
        st.H = (st.scale if o["reset_scaling"] else o["H0"]) * np.eye(st.n)
        st.since_reset = 0
        st.n_resets += 1
    if st.callback is not None:
        x, g = st.x, st.g
        inter = OptimizeResult(x=x.copy(), fun=st.f, jac=g.copy(), nit=st.k, stationarity=rec["theta"],
                               Delta=st.Delta, fw_gap=fw_gap(x, g, st.w, st.s))
        try:
            stop = st.callback(inter)
        except StopIteration:
            stop = True
        if stop is True:
            st.status, st.stat_value = 4, _theta(x, g, o["R"], st.w, st.s)[0]


def _finish(st):
    """The final stationarity row, the message and the :class:`SimplexTRResult`."""
    o, x, f, g = st.o, st.x, st.f, st.g
    theta_final = _theta(x, g, o["R"], st.w, st.s)[0]
    fw_final = fw_gap(x, g, st.w, st.s)
    nhev = 0 if st.hess is None else st.hess.calls
    st.log({"k": st.k, "f": f, "theta": theta_final, "psi": st.psi if st.stat_kind == "psi" else None,
            "Delta": st.Delta, "rho": None, "step_norm": 0.0, "model": None, "step": None,
            "accepted": False, "pred": None, "cauchy": None, "nfev": st.nfev, "fw_gap": fw_final,
            "nhev": nhev, "cg": None})
    status = st.status
    message = STATUS_MESSAGES[status]
    if st.message_override is not None:
        message = st.message_override
    elif st.fw_stop:
        message = _FW_MESSAGE + f" (fw_gap = {fw_final:.3e}, f = {f:.6e})"
    elif status == 0 and st.stat_kind == "psi":
        message = ("Converged: psi_R over the subgradients collected in the ball of radius "
                   f"{st.Delta:.3g} is below tol (Clarke stationarity up to tol).")
    elif status == 1 and o["convex"]:
        message += (f" (max_iter = {o['max_iter']}, fw_gap = {fw_final:.3e} > fw_rtol * max(|f|, fw_floor)"
                    f" = {o['fw_rtol'] * max(abs(f), o['fw_floor']):.1e})")
    elif status == 1:
        message += f" (max_iter = {o['max_iter']}, theta = {theta_final:.3e} > tol = {o['tol']:.1e})"
    elif status == 2:
        message += f" (Delta = {st.Delta:.3e}, theta = {theta_final:.3e})"
    return SimplexTRResult(
        x=x, fun=f, jac=g, nit=sum(1 for h in st.history if h["model"] is not None and h["rho"] is not None),
        nfev=st.nfev, success=status == 0, status=status, message=message,
        stationarity=float(st.stat_value), stationarity_measure=st.stat_kind, theta=theta_final,
        Delta=st.Delta, n_resets=st.n_resets, history=st.history, options=o, fw_gap=fw_final, nhev=nhev,
    )


@cite("II", "III")
def minimize_simplex_path(fun_factory, path, x0=None, *, weights=None, mass=1.0, n=None,
                          options=None, callback=None, collect_subgradients=None, hessp=None):
    """Path following: solve ``fun_factory(p)`` for each p in ``path``, warm-started.

    Typical use is continuation in the regularization parameters (gamma, eps)
    of Part III, Section 4.2, or in (gamma, delta) with the coupling of
    Part II, (3.1): level i starts from the solution of level i-1.
    ``fun_factory(p)`` returns ``fun``, a pair ``(fun, collect_subgradients)`` or a
    triple ``(fun, collect_subgradients, hessp)`` (``collect_subgradients`` may be
    None); the keywords ``collect_subgradients`` and ``hessp`` are used for the
    levels whose factory does not give its own.

    Returns a :class:`SimplexPathResult` with one :class:`SimplexTRResult` per
    level.  All levels run even if one fails; ``success`` is True only if all
    succeeded.

    Parameters
    ----------
    fun_factory : callable
        ``fun_factory(p)`` builds the objective of level ``p`` (see above); ``fun`` is as in
        :func:`minimize_simplex`.
    path : iterable
        The parameter values, solved in order (at least one).
    x0 : array_like or None, optional
        Starting point of the first level; None (default) lets :func:`minimize_simplex`
        choose it.
    weights : array_like or None, optional
        Positive weights of the simplex ``{x >= 0, sum w_i x_i = mass}``; None means ones.
    mass : float, optional
        Mass of the simplex (default 1).
    n : int or None, optional
        Dimension, needed only when neither ``x0`` nor ``weights`` gives it.
    options : dict or None, optional
        Options of :func:`minimize_simplex`, shared by all levels.
    callback : callable or None, optional
        Called by :func:`minimize_simplex` after every iteration of every level.
    collect_subgradients : callable or None, optional
        Default subgradient collector for levels whose factory gives none.
    hessp : callable or None, optional
        Default Hessian-vector product for levels whose factory gives none.

    Returns
    -------
    SimplexPathResult
        ``params``, the per-level ``results``, the last level's ``x`` and ``fun``, and the
        summed ``nit``/``nfev``; ``success`` only if every level converged.

    Raises
    ------
    ValueError
        If ``fun_factory`` is not callable, ``path`` is not iterable or empty, or a factory
        returns a tuple of the wrong length.
    """
    if not callable(fun_factory):
        raise ValueError("fun_factory must be callable")
    try:
        params = list(path)
    except TypeError:
        raise ValueError("path must be an iterable of parameter values") from None
    if not params:
        raise ValueError("path must contain at least one parameter value")
    results = []
    x = x0
    for p in params:
        made = fun_factory(p)
        collect, hp = collect_subgradients, hessp
        if isinstance(made, tuple):
            if len(made) == 2:
                fun, collect = made
            elif len(made) == 3:
                fun, collect, hp = made
            else:
                raise ValueError("fun_factory(p) must return fun, (fun, collect_subgradients) "
                                 "or (fun, collect_subgradients, hessp)")
        else:
            fun = made
        r = minimize_simplex(fun, x, hessp=hp, weights=weights, mass=mass, n=n, options=options,
                             callback=callback, collect_subgradients=collect)
        results.append(r)
        x = r.x
    bad = [i for i, r in enumerate(results) if not r.success]
    status = results[bad[0]].status if bad else 0
    msg = ("All levels converged." if not bad else
           f"Levels {bad} did not converge; first: {results[bad[0]].message}")
    return SimplexPathResult(
        params=params, results=results, x=results[-1].x, fun=results[-1].fun,
        success=not bad, status=status, message=msg,
        nit=sum(r.nit for r in results), nfev=sum(r.nfev for r in results),
    )


# --------------------------------------------------------------------------
# kinks="bundle": quadratic cuts with the constant Hessian (see femot.optim._bundle)
# --------------------------------------------------------------------------
def _cut_metric(o, H, x, n):
    """The QP metric M = H (+ the user's ``bundle_metric`` at x, as a dense matrix)."""
    if o["bundle_metric"] is None:
        return H
    extra = _cuts.dense_hessian(lambda v: np.asarray(o["bundle_metric"](x.copy(), v), dtype=float), n)
    if not np.all(np.isfinite(extra)):
        raise _NonFinite("options['bundle_metric'] returned a non-finite product.")
    return H + extra


def _minimize_cuts(st, H):
    """The loop of ``kinks="bundle"``: QP over quadratic cuts, serious/null steps, cut certificate.

    Works on the state ``st`` of :func:`minimize_simplex` (x, f, g, nfev, Delta, k, log); the
    cuts are the rows of (Y, F, G).  Sets st.status, st.stat_value (psi) and st.r_cut.
    """
    o, n, w, s = st.o, st.n, st.w, st.s
    wv = np.ones(n) if w is None else w
    st.r_cut = o["cut_radius"] if o["cut_radius"] is not None else 1e-3 * _cuts.diameter(wv, s)
    cuts = [st.x[None, :].copy(), np.array([st.f]), st.g[None, :].copy()]
    st.Delta = min(o["Delta0"], o["Delta_max"])
    M = _cut_metric(o, H, st.x, n)
    while st.status is None:
        x, f = st.x, st.f
        B, e, dist = _cuts.cut_arrays(x, f, *cuts, H)
        near = dist <= st.r_cut
        st.stat_value, _ = _cuts.cut_certificate(x, B[near], np.abs(e[near]), wv, s)
        st.rec = rec = {"k": st.k, "f": f, "theta": _theta(x, st.g, o["R"], w, s)[0], "psi": st.stat_value,
                        "Delta": st.Delta, "rho": None, "step_norm": 0.0, "model": "bundle", "step": "qp",
                        "accepted": False, "pred": None, "cauchy": None, "nfev": st.nfev,
                        "fw_gap": fw_gap(x, st.g, w, s), "nhev": n, "cg": None}
        for status, stop in ((0, st.stat_value <= o["tol"]), (1, st.k >= o["max_iter"]),
                             (2, st.Delta < o["radius_floor"])):
            if stop:
                st.status = status
                return
        ea = np.abs(e)
        out = _cuts.cut_qp(M, B, ea, x, wv, st.Delta)
        d = None if out is None else _cuts.project_step(x, out[0], w, s) - x
        pred = -np.inf if d is None else _cuts.model_decrease(B, ea, M, d)
        noise = 10.0 * _EPS * abs(f)  # rounding of f itself (no absolute floor: f may be small)
        far = np.zeros(B.shape[0], dtype=bool) if out is None else (out[1] > 1e-3 * out[1].sum()) & ~near
        if far.any() and not pred > noise:
            _cut_probes(st, cuts, np.nonzero(far)[0][:5], dist)
            rec.update(step="probe", rho=0.0, pred=float(pred), nfev=st.nfev)
        else:
            moved = _cut_step(st, cuts, H, d, pred, noise)
            if moved and o["bundle_metric"] is not None:
                M = _cut_metric(o, H, st.x, n)
        st.log(rec)
        st.k += 1
        _cut_callback(st)


def _cut_probes(st, cuts, idx, dist):
    """Evaluate f at half the certificate radius toward the cut points ``idx`` (outside the radius).

    Used when the QP model is stationary (to rounding) only with the help of such cuts: the
    probes bring the gradients of those pieces near x (for a kink through x, the piece active at
    x + t (y_k - x), t small, is the steepest along y_k - x: the piece of y_k when convex).
    """
    Y = cuts[0]
    for j in idx:
        yp = _project(st.x + (0.5 * st.r_cut / dist[j]) * (Y[j] - st.x), st.w, st.s)
        fp, gp = _call(st.fun, yp, st.n, f"a probe of iteration {st.k}")
        st.nfev += 1
        if not _finite(fp, gp):
            raise _NonFinite
        cuts[:] = [np.vstack([cuts[0], yp]), np.append(cuts[1], fp), np.vstack([cuts[2], gp])]


def _cut_step(st, cuts, H, d, pred, noise):
    """Trial x + d: serious step (rho > eta1) or null step; radius update.  True if x moved."""
    o, rec = st.o, st.rec
    rho, accepted = 0.0, False
    if not pred > noise:
        # the QP found no decrease the bundle can trust at this radius: shrink it
        st.Delta *= o["beta1"]
    else:
        x, f = st.x, st.f
        y = x + d
        fy, gy = _call(st.fun, y, st.n, f"iteration {st.k}")
        st.nfev += 1
        if not _finite(fy, gy):
            raise _NonFinite
        rho = (f - fy + noise) / (pred + noise)
        accepted = rho > o["eta1"]
        nd = float(np.abs(d).max())
        cuts[:] = [np.vstack([cuts[0], y]), np.append(cuts[1], fy), np.vstack([cuts[2], gy])]
        if accepted:
            if rho > o["eta2"] and nd > 0.5 * st.Delta:
                st.Delta = min(o["beta2"] * st.Delta, o["Delta_max"])
            st.x, st.f, st.g = y, fy, gy
        else:
            dy = x - y
            if f - (fy + gy @ dy + 0.5 * dy @ H @ dy) < -noise:
                # the new cut lies above f at x: a nonconvex kink, the model cannot be trusted that far
                st.Delta = o["beta1"] * min(st.Delta, nd)
        cuts[:] = _cuts.keep_nearest(*cuts, st.x, o["cut_bundle_size"])
    rec.update(rho=float(rho), step_norm=0.0 if d is None else float(np.linalg.norm(d)),
               accepted=bool(accepted), pred=float(pred), nfev=st.nfev)
    return accepted


def _cut_callback(st):
    if st.callback is None:
        return
    inter = OptimizeResult(x=st.x.copy(), fun=st.f, jac=st.g.copy(), nit=st.k, stationarity=st.stat_value,
                           Delta=st.Delta, fw_gap=fw_gap(st.x, st.g, st.w, st.s))
    try:
        stop = st.callback(inter)
    except StopIteration:
        stop = True
    if stop is True:
        st.status = 4


def _cut_result(st):
    """Run :func:`_minimize_cuts` (kinks="bundle") and package its result."""
    o = st.o
    st.hess.at(st.x)
    st.stat_kind, st.r_cut, st.stat_value = "psi", None, float("nan")
    try:
        H = _cuts.dense_hessian(st.hess, st.n)
        _minimize_cuts(st, H)
    except HessianNonFinite:
        st.status, st.stat_value, st.stat_kind = 3, float("nan"), "theta"
        st.message_override = _HESSP_NAN_MESSAGE
    except _NonFinite as exc:
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
            f"<= tol = {o['tol']:.3e} (Clarke stationarity up to tol).")
    elif st.status == 1:
        st.message_override = (STATUS_MESSAGES[1] + f" (max_iter = {o['max_iter']}, psi = {psi:.3e} > tol = "
                               f"{o['tol']:.1e}; cuts within {st.r_cut:.3g})")
    st.psi = psi
    return _finish(st)
