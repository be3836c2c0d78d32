"""Quadratically regularized optimal transport: semismooth Newton on the (doubly) regularized dual.

Solves Part III (H_gamma) with quadrature weights ((3.1) when eps > 0) through its dual
equations, ``pi = (alpha (+) beta - c)_+ / gamma`` (Part III Thm 2.7, Def. 3.1).  The method
(Levenberg-Marquardt shift, exact line search, curved steps, cold starts, continuation in gamma)
is described in docs/core.md, sections 2-4; cold starts live in ``starting_points``, step
lengths in ``line_search``, the passes over all pairs in the cost objects and ``kernels``.
"""
from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp

from femot._docstrings import cite
from femot._validation import (
    as_nonnegative_vector,
    as_positive_weights,
    as_vector,
    check_equal_mass,
    check_nonnegative_scalar,
    check_positive_scalar,
    check_qrot_data,
    floor_acceptance_message,
    mass_rtol,
)
from femot.core import kernels
from femot.core.cost import as_cost
from femot.core.linalg import NewtonMatrix
from femot.core.line_search import _curved_step, _exact_line_search, _streamed_root
from femot.core.qrot_options import QROTOptions
from femot.core.qrot_result import QROTResult
from femot.core.starting_points import (
    _CONT_RTOL,
    _auto_init,
    _continuation_gammas,
    _initial_point,
    _is_monge,
    _level,
    _monge_start,
    has_coarser_level,
)

__all__ = ["solve_qrot", "residual_floor"]

_U = np.finfo(float).eps
# Width of the first Newton matrix's band after an exact-potential start, in units
# of gamma * max(mu): the regularized plan lives where z > -gamma * pi.
_FIRST_BAND = 2.0
# Adaptive Levenberg-Marquardt factor (``_adapt_shift``): raised after a step shorter
# than _SHORT_STEP (by 1/t, at most _LM_JUMP), lowered by _LM_DROP after one of at least
# _FULL_STEP, capped at _LM_MAX.
_SHORT_STEP = 0.1
_FULL_STEP = 0.9
_LM_JUMP = 100.0
_LM_DROP = 1000.0
_LM_MAX = 1e8
# The cold-start continuation is tried only after the plain cold start has had this many steps cut short
_CRAWL_STEPS = 3

STATUS_MESSAGES = {
    0: "converged: residual below tolerance",
    1: "maximum number of Newton iterations reached",
    2: "line search failed: no descent along the Newton direction",
    3: "non-finite values encountered",
    4: "gamma too small for double precision at this cost scale: the plan cannot be resolved",
    5: "accepted at the double-precision floor",
}
# A residual may be accepted at the rounding floor (instead of ``tol``) only when
# that floor is this small against the data: PRECISION_RTOL * max(mu1, mu2), a
# bound in the density units of the residual, so weights do not enter it.
PRECISION_RTOL = 1e-3


def residual_floor(w1, w2, scale: float, gamma: float) -> float:
    """Smallest residual double precision can certify.

    Rounding in ``alpha_i + beta_j - c_ij`` is about ``u * scale`` per entry,
    ``scale = max(|c|, |alpha| + |beta|)``; summing over a row and dividing by
    gamma gives ``n_eff * u * scale / gamma`` with ``n_eff = max(sum w1, sum w2)``.

    Parameters
    ----------
    w1, w2 : array_like
        Quadrature weights of the two marginals, shapes ``(n1,)`` and ``(n2,)``.
    scale : float
        Magnitude of the evaluated entries, ``max(|c|, |alpha| + |beta|)``.
    gamma : float
        Regularization parameter (> 0).

    Returns
    -------
    float
        The floor ``max(sum w1, sum w2) * u * scale / gamma`` (``u`` the unit roundoff), in the
        units of the marginal residual.

    Examples
    --------
    >>> import numpy as np
    >>> print(f"{residual_floor(np.ones(5), np.ones(5), 1.0, 1e-3):.3e}")
    1.110e-12
    """
    n_eff = max(float(np.sum(w1)), float(np.sum(w2)))
    return n_eff * _U * scale / gamma


def _active_floor(ip, ind, z, alpha, beta, m1, m2, w1, w2, gamma, eps, cost=None):
    """Rounding floor of the residual from the potentials on the active set.

    Only active entries enter the row and column sums, so only they matter
    (:func:`residual_floor` charges ``max|c|`` to every pair instead).  Per
    active entry two effects limit the accuracy of ``pi_ij = z_ij / gamma``:

    * evaluation: ``fl(fl(alpha_i + beta_j) - c_ij)`` is off by at most about
      ``u (|alpha_i + beta_j| + |z_ij|) <= u (|c_ij| + 2 z_ij)``;
    * resolution: alpha_i and beta_j move in steps of about ``u |alpha_i|``,
      ``u |beta_j|``, so z_ij cannot be tuned more finely than
      ``u (|alpha_i| + |beta_j|)``.

    Dividing by gamma and summing with the weights over each row (column)
    gives the floor of that residual component; ``u (mu + eps |alpha|)`` is the
    rounding of the remaining terms.  ``|c_ij|`` is read from the cost when it
    provides ``entries``, else bounded by ``|alpha_i| + |beta_j| + z_ij``.
    """
    n1, n2 = alpha.size, beta.size
    rows = np.repeat(np.arange(n1), np.diff(ip))
    pot = np.abs(alpha)[rows] + np.abs(beta)[ind]
    zabs = np.abs(z)
    if cost is not None and hasattr(cost, "entries") and rows.size:
        cabs = np.abs(np.asarray(cost.entries(rows, ind), dtype=float))
    else:
        cabs = pot + zabs
    e = pot + cabs + 2.0 * zabs
    row_err = np.bincount(rows, w2[ind] * e, minlength=n1)
    col_err = np.bincount(ind, w1[rows] * e, minlength=n2)
    worst = max(float(row_err.max(initial=0.0)), float(col_err.max(initial=0.0)))
    rest = max(float(np.max(m1 + eps * np.abs(alpha))), float(np.max(m2 + eps * np.abs(beta))))
    return _U * worst / gamma + 4.0 * _U * rest


def _precision_message(gamma, floor, residual, thresh):
    """Message of status 4, naming the smallest gamma that would work.

    At fixed potentials and active set the floor scales like 1/gamma, so it
    reaches the admissible level ``thresh`` at ``gamma * floor / thresh``.  A
    larger gamma also widens the active set (more terms in each row sum), so
    the suggestion carries a factor 2 and is rounded up to two digits.
    """
    g_min = 2.0 * gamma * floor / max(thresh, np.finfo(float).tiny)
    if np.isfinite(g_min) and g_min > 0:
        e = np.floor(np.log10(g_min)) - 1
        g_min = np.ceil(g_min / 10 ** e) * 10 ** e
    return (f"{STATUS_MESSAGES[4]}: the residual {residual:.2e} cannot be certified below the rounding "
            f"floor {floor:.2e}, which exceeds {PRECISION_RTOL:g} * max(mu1, mu2) = {thresh:.2e}; "
            f"use gamma >= {g_min:.2g}")


class _Engine:
    """Streaming passes with safe screening.

    After a dense pass keeps the working set W = {z > -delta}, every entry
    outside W stays inactive as long as the potentials move by less than delta
    in total (|dz_ij| <= |d alpha_i| + |d beta_j|).  Passes then run over W
    only, and the result is exact, not a heuristic.  W is rebuilt with a
    smaller margin when the budget is used up.
    """

    def __init__(self, cost, w1, w2, screening=True, max_fraction=0.3):
        self.cost, self.w1, self.w2 = cost, w1, w2
        self.n1, self.n2 = cost.shape
        # a cost whose passes already search only the pairs above the threshold (a
        # GeometricCost's k-d tree) gains nothing from a screening band
        self.screening = bool(screening) and hasattr(cost, "candidates") and getattr(cost, "screening", True)
        self.max_fraction = max_fraction
        self.ws = None
        self.slack = 0.0
        self.failed_delta = np.inf
        self.dense_passes = 0
        self.nchunk = kernels.num_chunks(self.n1)

    def prepare(self, alpha, beta, reach):
        """Make exact evaluation possible for any move of size <= reach."""
        if not self.screening or (self.ws is not None and reach <= self.slack):
            return
        delta = 2.0 * reach
        if delta >= 0.5 * self.failed_delta or not np.isfinite(delta) or delta <= 0:
            self.ws = None
            return
        self.dense_passes += 1
        ws = self.cost.candidates(alpha, beta, -delta, max_count=self.max_fraction * self.n1 * self.n2)
        if ws is None:
            self.ws, self.failed_delta = None, delta
        else:
            self.ws, self.slack, self.failed_delta = ws, delta, np.inf

    def moved(self, amount):
        self.slack -= amount

    def evaluate(self, alpha, beta, da=None, db=None, t=0.0):
        if da is None:
            da, db = np.zeros_like(alpha), np.zeros_like(beta)
        if self.ws is None:
            self.dense_passes += 1
            return self.cost.evaluate(alpha, beta, self.w1, self.w2, da, db, t)
        ip, ind, cv = self.ws
        return kernels.ws_evaluate(ip, ind, cv, self.n2, alpha, beta, da, db, float(t), self.w1, self.w2,
                                   self.nchunk)

    def active(self, alpha, beta, count):
        if self.ws is None:
            self.dense_passes += 1
            return self.cost.active(alpha, beta, count)
        ip, ind, cv = self.ws
        return kernels.ws_active(ip, ind, cv, alpha, beta, 0.0)

    def line_candidates(self, alpha, beta, da, db):
        """Candidates of the exact line search, or None when they would not fit the memory budget."""
        if self.ws is None:
            self.dense_passes += 1
            return self.cost.line_candidates(alpha, beta, da, db, 1.0, self.w1, self.w2,
                                             max_count=self.max_fraction * self.n1 * self.n2)
        ip, ind, cv = self.ws
        return kernels.ws_line_candidates(ip, ind, cv, alpha, beta, da, db, 1.0, self.w1, self.w2)


@cite("III", "LMM")
def solve_qrot(c, mu1, mu2, gamma, eps=0.0, w1=None, w2=None, *, x0=None, tol=1e-10, max_iter=200,
               init="auto", linear_solver="auto", lm=1e-4, screening=True, curve=True,
               verbose=False, callback=None) -> QROTResult:
    """Quadratically regularized optimal transport (docs/core.md; Part III (H_gamma), (3.1)).

    Parameters
    ----------
    c : array_like of shape (n1, n2) or Cost
        Cost matrix or cost object (see ``femot.core.cost``).
    mu1, mu2 : array_like, shapes (n1,) and (n2,)
        Nonnegative densities w.r.t. the weights ``w1``, ``w2``.  With
        eps = 0 their masses must agree to 1e-9 (relative; 16 machine epsilons
        of a lower-precision floating input such as float32), and mu2 is then
        rescaled to the mass of mu1 so the marginal equations are consistent.
    gamma : float
        Regularization parameter (> 0).
    eps : float, optional
        Dual Tikhonov parameter (>= 0, default 0); eps > 0 admits unequal masses.
    w1, w2 : array_like or None, optional
        Positive quadrature weights (default ones: the Hitchcock problem).
    x0 : tuple of two arrays or None, optional
        ``(alpha, beta)`` warm start.
    tol : float, optional
        Target for the residual ``max_i |sum_j w2_j pi_ij + eps alpha_i - mu1_i|``
        (and its twin), in the density units of mu (default 1e-10).  A residual above ``tol``
        but below the rounding floor (the accuracy double precision can
        certify at these potentials, see ``_active_floor``) counts as converged
        only when that floor is at most ``PRECISION_RTOL * max(mu1, mu2)``
        (1e-3 of the largest density); otherwise the result has status 4.
    max_iter : int, optional
        Largest number of Newton iterations (default 200).
    init : {'auto', 'monge', 'exact', 'mean', 'coarse', 'zero', 'x0'}, optional
        Cold start: 'monge' (staircase potentials of the eps-corrected marginals, for Monge
        costs), 'exact' (LP duals), 'mean' (closed form with every pair active), 'zero', or
        'coarse' (for a GeometricCost with more than 2000 points on a side: potentials
        solved on coarsened point sets, coarse to fine; the result's ``levels`` lists them
        and this solve; otherwise the same as 'auto').  'auto' (default) picks 'monge' for
        Monge costs, 'exact' for n1*n2 <= 40000, 'coarse' for a GeometricCost with more than
        4000 points on a side, else 'mean'.  When 'auto' resolves to 'mean' or 'coarse' and
        ``gamma M / (max|c| W1 W2) < 1e-4`` (M the mass, W1, W2 the total weights: the plan
        then has few entries per row) and the plain start crawls, the cold start is a
        continuation instead: solves at ``gamma * 10^(k/3), ..., gamma * 10^(1/3)``, each from the
        previous potentials (the result's ``init`` is 'continuation', its ``continuation``
        lists the stages and ``nit_total`` counts their iterations too).  With ``x0`` and a
        Monge cost, 'auto'/'monge' also run the sweeps seeded by x0 and start from whichever
        has the smaller residual; 'x0' (or any other name) uses x0 as is.
    linear_solver : {'auto', 'direct', 'cg'}, optional
        Solver of the Newton systems: sparse LU, Jacobi-PCG, or chosen by size (default).
    lm : float, optional
        Initial and smallest Levenberg-Marquardt factor (shift = lm * gamma * residual;
        default 1e-4); the factor is raised after steps the line search cut short and
        lowered back after full steps.
    screening : bool, optional
        Restrict passes to a provably sufficient working set (exact; default True).
    curve : bool, optional
        When the exact line search stops early, also search along the
        semi-duals and keep the best point (does not change what a solution is; default True).
    verbose : bool, optional
        Print an iteration table (default False).
    callback : callable or None, optional
        Called as ``callback(entry)`` after every Newton iteration with a copy of that
        iteration's history entry (residual, step, active-set size, ...).

    Returns
    -------
    QROTResult
        Alpha, beta, plan (CSR), residual, residual_floor, success,
        status, message, nit, history, and the derivative methods jvp/vjp; after a
        continuation also ``continuation`` (per stage: gamma, nit, status, residual,
        init) and ``nit_total``; after coarse levels also ``levels`` (per level, coarsest
        first and this solve last: n1, n2, gamma, nit, success, time_s, init, dense_passes).
        ``time_s`` includes the stages and levels.
        ``success`` is ``status in (0, 5)``; the codes (``STATUS_MESSAGES``) are

        * 0 converged: residual <= tol;
        * 1 maximum number of Newton iterations reached;
        * 2 line search failed (no descent along the Newton direction);
        * 3 non-finite values encountered;
        * 4 gamma too small for double precision at this cost scale: the rounding
          floor exceeds 1e-3 * max(mu1, mu2), so the plan cannot be resolved (the
          message names a gamma that would work).  Replaces 0, 1 and 2 then;
        * 5 accepted at the double-precision floor: tol < residual <= floor, and the
          floor is at most 1e-3 * max(mu1, mu2) (``success`` is True; the message
          gives residual, tol and floor).

    Raises
    ------
    ValueError
        If an argument is malformed: a cost that is not a finite matrix or cost object, marginals
        or weights of the wrong length or shape, complex, negative or non-finite, ``gamma <= 0``,
        gamma so large that the cost vanishes in the rounding of the potentials, ``eps < 0``, or
        unequal masses with eps = 0; or an invalid option (checked by
        :class:`~femot.core.QROTOptions`, which holds these keywords and their defaults).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.linspace(0.0, 1.0, 5)
    >>> c = (x[:, None] - (x[None, :] + 0.5)) ** 2  # every point moves by 0.5
    >>> res = solve_qrot(c, np.full(5, 0.2), np.full(5, 0.2), 1e-3)
    >>> res.success, f"{res.transport_cost():.4f}"
    (True, '0.2500')
    """
    cost = as_cost(c)
    opts = QROTOptions(tol=tol, max_iter=max_iter, init=init, linear_solver=linear_solver, lm=lm,
                       screening=screening, curve=curve, verbose=verbose)
    with kernels.threads_for(cost.shape[0] * cost.shape[1]):
        return _solve_qrot(cost, mu1, mu2, gamma, eps, w1, w2, x0=x0, callback=callback, **opts.as_kwargs())


class _Crawl(Exception):
    """Raised by a solve with ``crawl_limit`` once that many steps were cut short."""

    def __init__(self, nit):
        super().__init__(nit)
        self.nit = nit


def _solve_qrot(cost, mu1, mu2, gamma, eps, w1, w2, *, x0, tol, max_iter, init, linear_solver, lm, screening,
                curve, verbose, callback, crawl_limit=None) -> QROTResult:
    """The semismooth Newton loop: initialization, one iteration at a time, output."""
    p = _QROTData(cost, mu1, mu2, gamma, eps, w1, w2, tol=tol, max_iter=max_iter, linear_solver=linear_solver,
                  screening=screening, curve=curve)
    stages: list = []
    crawled = None
    if x0 is None and init == "coarse" and not has_coarser_level(cost):
        # no coarsened point sets to solve: the automatic cold start, listed as the one level
        out = _solve_qrot(cost, mu1, mu2, gamma, eps, w1, w2, x0=None, tol=tol, max_iter=max_iter, init="auto",
                          linear_solver=linear_solver, lm=lm, screening=screening, curve=curve, verbose=verbose,
                          callback=callback, crawl_limit=crawl_limit)
        out.levels = [_level_entry(out, p.t_start)]
        return out
    gammas = _continuation_gammas(p) if x0 is None and init == "auto" else []
    if gammas and _auto_init(cost) in ("mean", "coarse"):
        # Cold start at small gamma.  The plain start first: on data in general position
        # it converges in a few full steps; when its steps are cut short (_CRAWL_STEPS
        # times), continuation from the gamma where the plan is wide (its first stage from
        # the plain start too: 'mean', or coarsened point sets for large ones).
        try:
            return _solve_qrot(cost, p.m1, p.m2, gamma, p.eps, p.w1, p.w2, x0=None, tol=tol, max_iter=max_iter,
                               init=_auto_init(cost), linear_solver=linear_solver, lm=lm, screening=screening,
                               curve=curve, verbose=verbose, callback=callback, crawl_limit=_CRAWL_STEPS)
        except _Crawl as crawl:
            crawled = crawl.nit
        stage_tol = max(tol, _CONT_RTOL * max(float(p.m1.max()), float(p.m2.max())))
        for g in gammas:
            r = _solve_qrot(cost, p.m1, p.m2, g, p.eps, p.w1, p.w2, x0=x0, tol=stage_tol, max_iter=max_iter,
                            init="auto" if x0 is None else "x0", linear_solver=linear_solver, lm=lm,
                            screening=screening, curve=curve, verbose=False, callback=None)
            stages.append({"gamma": g, "nit": int(r.nit), "status": int(r.status), "residual": float(r.residual),
                           "init": r.init})
            if np.all(np.isfinite(r.alpha)) and np.all(np.isfinite(r.beta)):
                x0 = (r.alpha, r.beta)
        if x0 is not None:
            init = "x0"
    st = _init_state(p, x0, init, lm)
    if stages:
        st.init_used = "continuation"
    if verbose:
        print(f"{'it':>4} {'residual':>11} {'floor':>9} {'step':>9} {'active':>9} {'lin':>5} {'shift':>9}")
    for nit in range(p.max_iter + 1):
        st.nit = nit
        entry = _stopping_test(p, st)
        if st.status is not None:
            st.history.append(entry)
            break
        outcome = _newton_iteration(p, st, entry)
        if outcome == "retry":  # no descent: a larger Levenberg-Marquardt shift next time
            continue
        if outcome == "failed":
            st.history.append(entry)
            break
        st.history.append(entry)
        if crawl_limit is not None and entry["step"] < _SHORT_STEP:
            crawl_limit -= 1
            if crawl_limit <= 0:
                raise _Crawl(nit + 1)
        if verbose:
            print(f"{nit:4d} {entry['residual']:11.3e} {entry['floor']:9.2e} {entry['step']:9.2e} "
                  f"{entry['nnz']:9d} {entry['linear_iters']:5d} {entry['shift']:9.2e}")
        if callback is not None:
            callback(dict(entry))
    if st.status is None:  # (not reached: the stopping test ends the loop at max_iter)
        st.status = 1
    out = _output(p, st)
    if st.levels is not None:  # coarse levels, coarsest first, then this solve
        out.levels = st.levels + [_level_entry(out, st.t_levels)]
    if stages:
        out.continuation = stages
        out.crawled = crawled  # iterations of the plain cold start before it was abandoned
        out.nit_total = out.nit + sum(s["nit"] for s in stages) + (crawled or 0)
    if verbose:
        print(f"{out.message} after {st.nit} iterations; residual {out.residual:.3e} "
              f"(floor {out.residual_floor:.2e})")
    return out


def _level_entry(res, t0) -> dict:
    """The entry of a solve in the ``levels`` of a coarse start (its time counted from ``t0``)."""
    n1, n2 = res.plan.shape
    return {"n1": n1, "n2": n2, "gamma": float(res.gamma), "nit": int(res.nit), "success": bool(res.success),
            "time_s": time.perf_counter() - t0, "init": res.init, "dense_passes": int(res.dense_passes)}


class _QROTData:
    """The validated data of one solve (fixed during the iteration) and its pass engine."""

    def __init__(self, cost, mu1, mu2, gamma, eps, w1, w2, *, tol, max_iter, linear_solver, screening, curve):
        n1, n2 = cost.shape
        m1 = as_nonnegative_vector(mu1, "mu1", length=n1)
        m2 = as_nonnegative_vector(mu2, "mu2", length=n2)
        self.gamma = check_positive_scalar(gamma, "gamma")
        self.eps = check_nonnegative_scalar(eps, "eps")
        rtol_mass = mass_rtol(mu1, mu2, w1, w2)  # float32 input: its own rounding (before the casts)
        w1 = as_positive_weights(w1, "w1", n1)
        w2 = as_positive_weights(w2, "w2", n2)
        if self.eps == 0.0:
            # equal masses up to the input's precision; mu2 rebalanced to mu1's mass
            m2 = check_equal_mass(m1, w1, m2, w2, rtol=rtol_mass)
        check_qrot_data(mu1, mu2, self.gamma, cost.max_abs, m1, m2, w1, w2)  # shapes, gamma's upper range
        self.tol, self.max_iter = tol, max_iter  # validated by QROTOptions
        self.cost, self.n1, self.n2 = cost, n1, n2
        self.m1, self.m2, self.w1, self.w2 = m1, m2, w1, w2
        self.kappa = self.gamma * self.eps
        self.W1, self.W2 = float(w1.sum()), float(w2.sum())
        self.linear_solver, self.screening, self.curve = linear_solver, screening, curve
        self.t_start = time.perf_counter()

    def recenter(self, a, b) -> bool:
        """eps = 0: (alpha - s, beta + s) gives the same plan; rebalance when drifting.

        Returns True when it shifted (z is then equal only up to rounding, so
        sums and counts must be recomputed).
        """
        if self.kappa == 0.0:
            s = 0.5 * (self.w1 @ a / self.W1 - self.w2 @ b / self.W2)
            if abs(s) > 1e-3 * (self.cost.max_abs + 1.0):
                a -= s
                b += s
                return True
        return False

    def residuals(self, alpha, beta, rs, cs):
        """The marginal residuals ``(r1, r2)`` of (3.1) from the row and column sums of ``z``."""
        r1 = (rs + self.kappa * alpha) / self.gamma - self.m1
        r2 = (cs + self.kappa * beta) / self.gamma - self.m2
        return r1, r2


class _QROTState:
    """The iterate and the loop's bookkeeping, changed by :func:`_newton_iteration`."""

    def __init__(self, alpha, beta, init_used, engine, lm):
        self.alpha, self.beta, self.init_used, self.engine, self.lm = alpha, beta, init_used, engine, lm
        self.lm0 = lm  # the adaptive factor never drops below the user's value
        self.rowsum = self.colsum = self.count = self.r1 = self.r2 = None
        self.act: tuple | None = None  # active set (ip, ind, z) at the current point, when computed
        self.history: list = []
        self.status: int | None = None  # set when the loop stops
        self.message: str | None = None
        self.nit = 0
        self.ls_fail = 0
        self.stall, self.last_move, self.prev_res = 0, np.inf, np.inf
        self.res0 = None  # residual at the start: the inexact-Newton tolerance is relative to it
        self.levels: list | None = None  # the coarse levels of init='coarse' (and when they ended)
        self.t_levels = 0.0

    def update_sums(self, p: _QROTData, ev) -> None:
        self.rowsum, self.colsum, self.count, _ = ev
        self.r1, self.r2 = p.residuals(self.alpha, self.beta, self.rowsum, self.colsum)


def _init_state(p: _QROTData, x0, init, lm) -> _QROTState:
    """Starting potentials (warm start ``x0`` or a cold start ``init``), their sums and residuals."""
    cost, m1, m2, w1, w2 = p.cost, p.m1, p.m2, p.w1, p.w2
    levels = None
    if x0 is not None:
        try:
            a0, b0 = x0
        except (TypeError, ValueError):
            raise ValueError("x0 must be a pair (alpha, beta)") from None
        alpha = as_vector(a0, "x0[0] (alpha)", length=p.n1).copy()
        beta = as_vector(b0, "x0[1] (beta)", length=p.n2).copy()
        init_used = "warm"
        if init in ("auto", "monge") and _is_monge(cost) and float(w1 @ m1) > 0 and float(w2 @ m2) > 0:
            # x0 competes with staircase sweeps seeded by it (kept only if better)
            a1, b1, swept = _monge_start(cost, m1, m2, w1, w2, p.gamma, p.eps, start=(alpha, beta))
            if swept:
                alpha, beta, init_used = a1.copy(), b1.copy(), "warm+monge"
    else:
        alpha, beta, init_used, levels = _initial_point(cost, m1, m2, w1, w2, p.gamma, p.eps, init, solve_qrot)
    p.recenter(alpha, beta)
    st = _QROTState(alpha, beta, init_used, _Engine(cost, w1, w2, screening=p.screening), lm)
    if levels is not None:
        st.levels, st.t_levels = levels, time.perf_counter()
    st.update_sums(p, st.engine.evaluate(alpha, beta))
    return st


def _stopping_test(p: _QROTData, st: _QROTState) -> dict:
    """The history entry of the current point; sets ``st.status`` when the loop must stop.

    Stops on convergence (residual at most ``max(tol, rounding floor)``), non-finite
    values, a stall at the rounding level of the potentials, or the iteration limit.
    """
    alpha, beta = st.alpha, st.beta
    res = max(float(np.abs(st.r1).max()), float(np.abs(st.r2).max()))
    scale = max(p.cost.max_abs, float(np.abs(alpha).max() + np.abs(beta).max()))
    floor = residual_floor(p.w1, p.w2, scale, p.gamma)
    st.act = None
    if p.tol < res <= floor:
        # about to stop at the coarse floor: sharpen it from the potentials
        # on the active set (the pass is reused by the Newton step or the plan)
        st.act = ip, ind, z = st.engine.active(alpha, beta, st.count)
        floor = min(floor, _active_floor(ip, ind, z, alpha, beta, p.m1, p.m2, p.w1, p.w2, p.gamma, p.eps, p.cost))
    entry = {"it": st.nit, "residual": res, "floor": floor, "n_active": int(st.count.sum())}
    if not np.isfinite(res):
        st.status = 3
    elif res <= max(p.tol, floor):
        st.status = 0
    else:
        # Stall: the last step moved the potentials only at their rounding level
        # and the residual did not drop; the iteration can no longer change the
        # point (it happens when gamma is far below what the potentials resolve).
        pot = float(np.abs(alpha).max() + np.abs(beta).max())
        st.stall = st.stall + 1 if (st.last_move <= 64 * _U * pot and res >= 0.999 * st.prev_res) else 0
        st.prev_res = res
        if st.stall >= 3:
            st.status = 2
            st.message = f"{STATUS_MESSAGES[2]}: the steps stalled at the rounding level of the potentials"
        elif st.nit == p.max_iter:
            st.status = 1
    return entry


def _newton_iteration(p: _QROTData, st: _QROTState, entry: dict) -> str:
    """One damped semismooth Newton step on the dual (3.1) from ``st``, in place.

    Returns ``"ok"`` (``entry`` completed with the step's data), ``"retry"`` (the
    direction was not a descent direction: the shift is raised, the point kept) or
    ``"failed"`` (no descent three times; ``st.status`` is 2).
    """
    cost, engine, gamma, kappa = p.cost, st.engine, p.gamma, p.kappa
    m1, m2, w1, w2, n1, n2 = p.m1, p.m2, p.w1, p.w2, p.n1, p.n2
    alpha, beta, res = st.alpha, st.beta, entry["residual"]
    if st.nit == 0 and st.init_used in ("monge-duals", "exact"):
        # From exact OT potentials only the LP support is active; the
        # regularized plan spreads over {z > -gamma * pi}: take that band as
        # the first Newton matrix so the first step is not vanishingly short.
        tau0 = _FIRST_BAND * gamma * max(float(m1.max()), float(m2.max()))
        ip, ind, _ = cost.active(alpha, beta, None, threshold=-tau0)
    else:
        ip, ind, _ = st.act if st.act is not None else engine.active(alpha, beta, st.count)
    # The shift keeps K nonsingular (eps = 0, rows without active entries)
    # and bounds the step; it vanishes with the residual.
    shift = kappa + st.lm * gamma * res
    K = NewtonMatrix(ip, ind, n2, w1, w2, shift)
    shift_floor = 1e-14 * max(float(K.deg1.max(initial=0.0)), float(K.deg2.max(initial=0.0)), 1e-300)
    if shift < shift_floor:
        shift = shift_floor
        K = NewtonMatrix(ip, ind, n2, w1, w2, shift)
    g = np.concatenate([w1 * (gamma * st.r1), w2 * (gamma * st.r2)])
    if st.nit == 0:
        st.res0 = res
    # Inexact Newton: loose linear solves far away, tight ones near the solution.
    d, lin_its = K.solve(-g, p.linear_solver, rtol=min(0.1, max(1e-10, 0.1 * res / st.res0)))
    da, db = d[:n1], d[n1:]
    if kappa == 0.0:
        # (1, -1) spans the kernel of K when eps = 0; with a tiny shift the
        # solve returns a huge, meaningless component along it that would
        # wreck the rounding of alpha_i + beta_j.  The gradient is orthogonal
        # to it (equal masses), so removing it keeps d a descent direction.
        s = 0.5 * (w1 @ da / p.W1 - w2 @ db / p.W2)
        da -= s
        db += s
    # phi(t) = (gamma * -Phi)(x + t d); phi'(t) = dsum(t) + q0 + t q1 - lin
    q0 = kappa * (w1 @ (alpha * da) + w2 @ (beta * db))
    q1 = kappa * (w1 @ (da * da) + w2 @ (db * db))
    lin = gamma * (w1 @ (m1 * da) + w2 @ (m2 * db))
    dphi0 = float(g @ d)
    if not dphi0 < 0:
        st.ls_fail += 1
        if st.ls_fail > 2:
            st.status = 2
            return "failed"
        st.lm *= 100.0  # fall back towards a gradient step
        return "retry"
    move = float(np.abs(da).max() + np.abs(db).max())
    engine.prepare(alpha, beta, move)
    ev = engine.evaluate(alpha, beta, da, db, 1.0)
    dphi1 = ev[3] + q0 + q1 - lin
    t = 1.0
    if dphi1 > 0:
        cand = engine.line_candidates(alpha, beta, da, db)
        if cand is None:  # too many to store: root of phi' by streaming passes
            t = _streamed_root(lambda t_: engine.evaluate(alpha, beta, da, db, t_)[3] + q0 + t_ * q1 - lin,
                               dphi0, dphi1)
        else:
            z, dz, ws = cand
            t = _exact_line_search(z, dz, ws, q0, q1, lin, 1.0)
        ev = engine.evaluate(alpha, beta, da, db, t)
    path = "line"
    curved = None
    if t < 1.0 and p.curve:
        curved = _curved_step(engine, cost, alpha, beta, da, db, t, move, m1, m2, w1, w2, gamma, kappa, K.nnz)
    if curved is not None:
        a_new, b_new, t, path = curved
        moved = float(np.abs(a_new - alpha).max() + np.abs(b_new - beta).max())
        alpha, beta = a_new, b_new
        st.last_move = moved
        if moved < engine.slack:
            engine.moved(moved)
        else:
            engine.ws = None
        p.recenter(alpha, beta)
        ev = engine.evaluate(alpha, beta)
    else:
        alpha = alpha + t * da
        beta = beta + t * db
        st.last_move = t * move
        engine.moved(t * move)
        if p.recenter(alpha, beta):
            ev = engine.evaluate(alpha, beta)
    if kappa > 0.0:
        # Exact ascent along (1, -1), which leaves z and the plan unchanged:
        # with a mass mismatch the level must reach |M1 - M2| / (eps (W1 + W2)),
        # which the shifted Newton steps (eigenvalue kappa + shift along this
        # direction) approach only by a factor per iteration when eps is small.
        a_lev, b_lev = _level(alpha, beta, m1, m2, w1, w2, gamma, p.eps)
        if p.eps * abs(float(a_lev[0] - alpha[0])) > 1e-2 * res:
            alpha, beta = a_lev, b_lev
            engine.ws = None  # z equal only up to rounding of the shift: re-screen
            ev = engine.evaluate(alpha, beta)
    _adapt_shift(st, t)
    st.alpha, st.beta = alpha, beta
    st.update_sums(p, ev)
    entry.update(step=t, path=path, linear_iters=int(lin_its), shift=shift, nnz=int(K.nnz))
    return "ok"


def _adapt_shift(st: _QROTState, t: float) -> None:
    """Adapt the Levenberg-Marquardt factor to the step length the line search accepted.

    With eps = 0 the Newton matrix is singular along ``(1, -1)`` on every connected
    component of the active pattern, not only globally.  When the plan is nearly that of
    the linear program (a few entries per row: FE data at small gamma), the pattern falls
    apart into many components, and a component whose rows and columns carry unequal
    mass gets a step ``~ 1 / shift`` along its own ``(1, -1)``, far beyond the cost scale.
    The exact line search then stops where the first outside entry turns active
    (t ~ 1e-7) and every iteration adds one entry.  A short step therefore raises the
    factor by ``1 / t`` (the shift that would have made the component's move end at the
    accepted point), at most by ``_LM_JUMP`` per step; a full step lowers it by
    ``_LM_DROP``, never below its initial value (the shift still vanishes with the
    residual, so the local convergence is kept).  The bounded jump keeps one short step
    of an otherwise regular run (a kink met early) from turning the next ones into
    gradient steps.
    """
    if t < _SHORT_STEP:
        st.lm = min(st.lm * min(1.0 / max(t, 1e-300), _LM_JUMP), _LM_MAX)
    elif t >= _FULL_STEP:
        st.lm = max(st.lm / _LM_DROP, st.lm0)


def _output(p: _QROTData, st: _QROTState) -> QROTResult:
    """The result: the plan on the active set, the final floor and the precision verdict (status 4)."""
    alpha, beta, gamma, history = st.alpha, st.beta, p.gamma, st.history
    status: int = 1 if st.status is None else st.status
    m1, m2, w1, w2 = p.m1, p.m2, p.w1, p.w2
    ip, ind, z = st.act if st.act is not None else st.engine.active(alpha, beta, st.count)
    plan = sp.csr_matrix((z / gamma, ind, ip), shape=(p.n1, p.n2))
    res_final = history[-1]["residual"]
    floor_final = history[-1]["floor"]
    message = STATUS_MESSAGES[status] if st.message is None else st.message
    if status != 3:  # (all-zero marginals: thresh = 0, only tol can certify; no gamma would help)
        if st.act is None:
            floor_final = min(floor_final, _active_floor(ip, ind, z, alpha, beta, m1, m2, w1, w2, gamma, p.eps,
                                                         p.cost))
            history[-1]["floor"] = floor_final
        # Precision: a residual certified only by the rounding floor is a
        # success only when that floor is small against the data; otherwise
        # (and whenever the floor blocks convergence) the plan is unresolved.
        thresh = PRECISION_RTOL * max(float(m1.max()), float(m2.max()))
        if status in (1, 2):
            # a failed run: rows (columns) still off by more than thresh need
            # their plan entries tuned, at least one entry each, which moves in
            # steps of u (|alpha_i| + |beta_j|) / gamma (the active-set floor
            # misses this when such a row has no active entry at all)
            r1, r2 = st.r1, st.r2
            g = _U / gamma * max(
                float(w2.min()) * float((np.abs(alpha)[np.abs(r1) > thresh] + np.abs(beta).min()).max(initial=0.0)),
                float(w1.min()) * float((np.abs(beta)[np.abs(r2) > thresh] + np.abs(alpha).min()).max(initial=0.0)))
            if g > thresh:
                floor_final = max(floor_final, g)
        if thresh > 0 and floor_final > thresh and (status in (1, 2) or (status == 0 and res_final > p.tol)):
            status = 4
            message = _precision_message(gamma, floor_final, res_final, thresh)
        elif status == 0 and res_final > p.tol:  # certified by the floor, not by tol: say so
            status = 5
            message = floor_acceptance_message(res_final, p.tol, floor_final)
    out = QROTResult(
        alpha=alpha, beta=beta, plan=plan, residual=res_final, residual_floor=floor_final,
        success=status in (0, 5), status=status, message=message, nit=st.nit, history=history,
        gamma=gamma, eps=p.eps, w1=w1, w2=w2, init=st.init_used, linear_solver=p.linear_solver,
        time_s=time.perf_counter() - p.t_start, dense_passes=st.engine.dense_passes,
    )
    out._cost = p.cost
    out._scale = max(p.cost.max_abs, float(np.abs(alpha).max() + np.abs(beta).max()))
    out._ztol = max(64 * _U * out._scale, 10 * gamma * res_final)
    return out
