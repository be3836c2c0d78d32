"""How :meth:`femot.problems.TransportIdentification.solve` runs: phases, continuation levels, the result.

Every phase and level is one run of :func:`femot.problems.solve_on_simplex`; the
continuation levels go through :func:`femot.optim.minimize_simplex_path`.
docs/problems.md ("Which minimum: the default method") gives the measurements behind
``model="auto"``.
"""
from __future__ import annotations

import time

import numpy as np

from femot.optim import minimize_simplex_path
from femot.problems.plan_maps import MarginalToPlan
from femot.problems.protocol import (
    UpperLevelResult,
    _cite,
    _options_dict,
    shared_doc,
    solve_on_simplex,
    upper_level_result,
)

__all__ = ["IdentificationResult", "DEFAULT_TR_OPTIONS", "MODELS"]


@_cite
@shared_doc
class IdentificationResult(UpperLevelResult):
    """Result of :meth:`femot.problems.TransportIdentification.solve`.

    %(result_keys)s

    Attributes
    ----------
    mu1 : numpy.ndarray
        The computed source marginal (a point of the simplex; the same array as ``x``).
    plan : scipy.sparse.csr_matrix
        Its lower-level plan S_{gamma,eps}(mu1, mu2_d).
    alpha, beta : numpy.ndarray
        The dual potentials of that plan.
    J : float
        The objective value J(plan, mu1) (Part III, eq. (4.1)) recomputed at the solution;
        equal to ``fun`` up to rounding.
    nit, nfev : int
        Trust-region iterations and oracle calls (all phases and continuation levels).
    nhev : int
        Hessian-vector products (Newton model).
    model : str
        ``"auto"``, ``"bfgs"`` or ``"newton"``.
    phases : list of dict
        One dict per phase run (phase, model, levels, nit, J, success, status,
        stationarity, stationarity_measure, time_s, and origin: the phase whose end a
        polish starts from, None for a start): with ``model="auto"`` the J each path
        reached, so that a lower J that was not kept can be seen.
    phase : str
        The name of the phase whose point is returned.
    levels : list of dict
        The levels of that phase, one dict per level (gamma, eps, nit, nfev, fun,
        status, stationarity); a single entry without continuation.
    stationarity, stationarity_measure, theta
        Final theta_R (or psi_R), which one, and theta_R (of the returned phase).
    tol : float
        The stationarity tolerance: ``success`` certifies ``stationarity <= tol``.
    success, status, message
        From the trust-region method of the returned phase; success also requires that
        the final lower-level solve converged.
    mu1_err_max, pi_err_max : float
        max |mu1 - mu1_d| over D1 and max |pi - pi_d| over D.
    eps_bias, eps_bias_relative : float
        ``eps * max(|alpha|_inf, |beta|_inf)``, how far the eps term of (3.1) moves the
        plan's marginals away from (mu1, mu2_d) (mass units), and that over ``max(mu2_d)``.
        When it is not small against the marginals, J cannot approach 0 even at the
        truth: lower eps.
    history : list
        The optimizer's per-iteration records of the returned phase (its last level);
        ``tr`` that optimizer result.
    lower : QROTResult
        The final lower-level solution.
    lower_solves, lower_requests, newton_iterations, lower_failures
        Lower-level effort summed over all levels and phases
        (:meth:`femot.problems.MarginalToPlan.counters`: ``lower_solves`` counts every
        call of the core, ``lower_requests`` the distinct marginals solved).
    lower_time_s, time_s : float
        Wall time in the lower level and in total.
    gamma, eps, lam : float
        The problem's parameters.

    Examples
    --------
    >>> from femot.problems import identification_instance, problem_from_instance
    >>> problem = problem_from_instance(identification_instance(5, seed=0), gamma=1e-2)
    >>> res = problem.solve(model="bfgs")
    >>> print(type(res).__name__, bool(res.success), f"{res.J:.4f}", res.phase)
    IdentificationResult True 0.0144 bfgs
    """

    def summary(self) -> str:
        """A few lines: errors, objective, iterations, stationarity and what it certifies, phases, success."""
        lines = [f"max|mu1_d - mu1| (on D1) = {self.mu1_err_max:.4e}",
                 f"max|pi_d - pi|   (on D)  = {self.pi_err_max:.4e}",
                 f"J                        = {self.J:.4e}",
                 f"iterations               = {self.nit} ({self.nfev} evaluations, {self.lower_requests} "
                 f"lower-level problems solved, {self.time_s:.2f} s)",
                 f"stationarity ({self.stationarity_measure:5s})     = {self.stationarity:.3e} "
                 f"({'certified' if self.success else 'not certified'}: tol {self.tol:.1e})"]
        phases = self.get("phases", [])
        for p in phases if len(phases) > 1 else []:
            lines.append(f"  phase {p['phase']:<30s} J = {p['J']:.6e}, {p['nit']:4d} iterations, "
                         f"{p['stationarity_measure']} = {p['stationarity']:.1e}, {p['time_s']:.1f} s"
                         f"{'' if p['success'] else ' (not certified)'}"
                         f"{'  <- returned' if p['phase'] == self.phase else ''}")
        lines.append(f"eps bias eps*max|alpha|  = {self.eps_bias:.3e} ({self.eps_bias_relative:.1%} of max mu2_d: "
                     f"how far the eps term of (3.1) moves the marginals; a smaller eps reduces it)")
        lines.append(f"success                  = {self.success} ({self.message})")
        return "\n".join(lines)


#: Trust-region options used by :meth:`femot.problems.TransportIdentification.solve` unless overridden.
#: Part III §4.2: R = sqrt(n1), Delta_min = 1e-6, eta = (0.1, 0.9), beta = (0.5, 1.5),
#: nu = 1, mu1_0 uniform, Delta0 = 1, TOL = 1e-5 (the defaults of minimize_simplex).
DEFAULT_TR_OPTIONS = {"tol": 1e-5, "max_iter": 200}


def _continuation_levels(problem, continuation):
    """Factors t > 1 of the intermediate levels (t gamma, t eps), largest first."""
    if continuation is None or continuation is False:
        return []
    if isinstance(continuation, str):
        if continuation != "auto":
            raise ValueError(f"continuation must be None, 'auto' or a sequence of factors > 1, got {continuation!r}")
        # decades from gamma = 1e-2 (the largest gamma of Part III §4.2) down to the problem's gamma
        k = int(np.floor(np.log10(1e-2 / problem.gamma) + 1e-9))
        return [10.0 ** j for j in range(k, 0, -1)]
    try:
        factors = [float(t) for t in continuation]
    except (TypeError, ValueError):
        raise ValueError("continuation must be None, 'auto' or a sequence of factors > 1") from None
    if any(not (t > 1.0 and np.isfinite(t)) for t in factors):
        raise ValueError(f"continuation factors must be finite numbers > 1, got {factors}")
    return sorted(factors, reverse=True)


_EFFORT = ("lower_solves", "lower_requests", "newton_iterations", "lower_failures")


def _effort(lower: MarginalToPlan) -> dict:
    """The additive counters of a :class:`MarginalToPlan` (and its solve time) as a dict."""
    c = lower.counters()
    out: dict = {k: int(c[k]) for k in _EFFORT}
    out["time"] = lower.solve_time
    return out


def _level(problem, r) -> dict:
    return {"gamma": problem.gamma, "eps": problem.eps, "nit": r.nit, "nfev": r.nfev, "fun": r.fun,
            "status": r.status, "stationarity": r.stationarity}


def _run_continuation(problem, x0, opts, callback, bouligand, hessian, continuation, continuation_tol):
    """The intermediate levels (t gamma, t eps) of :meth:`femot.problems.TransportIdentification.solve`.

    Returns the last point, the level records, the summed (nit, nfev, nhev) with the
    number of levels kept (``kept``), and the lower-level effort of these levels.
    """
    its = {"nit": 0, "nfev": 0, "nhev": 0, "kept": 0}
    effort = dict.fromkeys((*_EFFORT, "time"), 0)
    factors = _continuation_levels(problem, continuation)
    if not factors:
        return x0, [], its, effort
    subs = []

    def level(t):
        # 12 significant digits: 1e-6 * 100 is the level 1e-4, not 9.999999999999999e-05
        sub = problem.with_regularization(float(f"{t * problem.gamma:.12g}"), float(f"{t * problem.eps:.12g}"))
        subs.append(sub)
        return sub, sub.bouligand_subgradients if bouligand else None, sub.hessp if hessian else None

    # A level is only a warm start for the next: a looser tolerance, at most 50 iterations, and
    # it is dropped at its first failed lower-level solve (an unconverged plan, as when t eps |alpha|
    # exceeds the marginals): its iterates no longer follow f, so the next level starts where it did.
    sub_opts = dict(opts)
    sub_opts["tol"] = max(float(opts.get("tol", 1e-5)), float(continuation_tol))
    sub_opts["max_iter"] = min(int(opts.get("max_iter", 200)), 50)

    def stop(res):
        user = callback is not None and callback(res) is True  # the caller sees every iteration
        return user or subs[-1].lower.failures > 0

    def one_level(sub, x, *, method, hessp, callback, collect_subgradients, options, **_):
        # weights, mass and n are the sub-problem's own: the driver reads them from it
        return solve_on_simplex(sub, x, options=options, callback=callback, hessp=hessp,
                                collect_subgradients=collect_subgradients, method=method)

    kept = []

    def keep(t, r):
        kept.append(subs[-1].lower.failures == 0)
        return kept[-1]

    path = minimize_simplex_path(level, factors, x0, n=problem.n, mass=problem.mass, options=sub_opts,
                                 callback=stop, keep=keep, solver=one_level)
    its["kept"] = sum(kept)
    levels = [_level(sub, r) for sub, r in zip(subs, path.results)]
    for sub, r in zip(subs, path.results):
        for k in ("nit", "nfev", "nhev"):
            its[k] += getattr(r, k)
        for k, v in _effort(sub.lower).items():
            effort[k] += v
    return path.x, levels, its, effort


#: Models of :meth:`femot.problems.TransportIdentification.solve`.
MODELS = ("auto", "bfgs", "newton")


class _Path:
    """Runs of the trust-region method (phases, each with its continuation levels) on ``problem``.

    With ``fresh`` every phase runs on its own copy of the problem (fresh lower-level cache
    and warm start): which local minimum a path reaches can depend on differences of
    1e-10 in the lower-level solutions, and so on the warm starts a previous phase left.
    Each phase is then the same computation as a single-model run from a new problem.
    """

    def __init__(self, problem, opts, callback, bouligand, fresh=False) -> None:
        self.problem, self.opts, self.callback, self.bouligand = problem, opts, callback, bouligand
        self.fresh = fresh
        self.its = {"nit": 0, "nfev": 0, "nhev": 0}
        self.effort = dict.fromkeys((*_EFFORT, "time"), 0)
        self.phases: list[dict] = []
        self.kept = 0  # continuation levels kept by the last phase

    def run(self, name, x0, hessian, continuation=None, continuation_tol=1e-3, origin=None, tight=False):
        """Run one phase from x0; returns the optimizer's result of its last level.

        ``origin`` names the phase whose end point x0 is (None: a start); ``tight`` runs at
        1/100 of the tolerance and at most 20 iterations (the final polish).
        """
        problem = self.problem
        if self.fresh:
            problem = problem.with_regularization(problem.gamma, problem.eps)
            if self.opts.get("verbose"):  # several phases print tables: say which one follows
                print(f"phase {name}:")
        t0 = time.perf_counter()
        x0, levels, its, effort = _run_continuation(problem, x0, self.opts, self.callback, self.bouligand,
                                                    hessian, continuation, continuation_tol)
        # every Bouligand element at x (Thm 3.12); the optimizer adds the subgradients it
        # meets while probing the ball along its model direction
        opts = self.opts
        if tight:
            opts = dict(opts, tol=_TIGHT * float(opts["tol"]), max_iter=min(int(opts["max_iter"]), 20))
        tr = solve_on_simplex(problem, x0, options=opts, callback=self.callback,
                              hessp=problem.hessp if hessian else None,
                              collect_subgradients=problem.bouligand_subgradients if self.bouligand else None)
        levels.append(_level(problem, tr))
        for k in self.its:
            self.its[k] += its[k] + getattr(tr, k)
        self.kept = its["kept"]
        for k, v in effort.items():
            self.effort[k] += v
        if self.fresh:
            for k, v in _effort(problem.lower).items():
                self.effort[k] += v
        self.phases.append({"phase": name, "model": "newton" if hessian else "bfgs", "levels": levels,
                            "nit": sum(lv["nit"] for lv in levels), "J": float(tr.fun), "success": bool(tr.success),
                            "status": int(tr.status), "stationarity": float(tr.stationarity),
                            "stationarity_measure": tr.stationarity_measure,
                            "time_s": time.perf_counter() - t0, "origin": origin, "tr": tr, "problem": problem})
        return tr


#: The final polish runs at this fraction of the tolerance.
_TIGHT = 1e-2


def _auto(path: _Path, starts, continuation, continuation_tol):
    """The default model: three paths from every start, their best ends polished; the lower certified J.

    ``starts`` is a list of (label, x0).  Path 1 is Algorithm 4.1 with the BFGS model
    (Part III, Remark 4.2), which tends to follow the low path but may stop uncertified
    (iteration limit, radius collapse at a kink); from its point a polish with the exact
    (Gauss-Newton) Hessian certifies stationarity (the method is monotone: J does not
    rise).  Path 2 is the Newton model with continuation in (gamma, eps), polished by the
    BFGS model (Bouligand model at kinks) when it stops uncertified; path 3 the Newton
    model at the problem's (gamma, eps) from x0, run only when a continuation level was
    kept (else path 2 is that run).  The two lowest ends of each start are then polished
    by the Newton model at 1/100 of the tolerance: at tol the test certifies points of
    the same basin whose J differ by about 1 %.  Returns the index of the phase kept:
    the certified one (``success``) of lowest J, else the lowest J.
    """
    ends = []

    def polished(name, tr, hessian):
        # an uncertified end is polished by the other model (monotone: J does not rise)
        if not tr.success and tr.status != 3:
            path.run(f"{name} + {'newton' if hessian else 'bfgs'} polish", tr.x, hessian=hessian, origin=name)
        return len(path.phases) - 1

    for label, x0 in starts:
        own = [polished(f"{label}: bfgs", path.run(f"{label}: bfgs", x0, hessian=False), True)]
        tr = path.run(f"{label}: newton", x0, hessian=True,
                      continuation="auto" if continuation is None else continuation, continuation_tol=continuation_tol)
        kept = path.kept
        # the Newton model can stop at a kink (radius collapse) where the Bouligand model certifies
        own.append(polished(f"{label}: newton", tr, False))
        if kept:
            # the levels moved the start: the Newton model at (gamma, eps) from x0 reaches other minima
            name = f"{label}: newton, no continuation"
            own.append(polished(name, path.run(name, x0, hessian=True), False))
        for i in sorted(own, key=lambda i: path.phases[i]["J"])[:2]:
            end = path.phases[i]
            if end["stationarity"] > _TIGHT * float(path.opts["tol"]):
                path.run(f"{end['phase']} + newton at tol/100", end["tr"].x, hessian=True, origin=end["phase"],
                         tight=True)
                own.append(len(path.phases) - 1)
        ends.extend(own)
    return min(ends, key=lambda i: (not path.phases[i]["success"], path.phases[i]["J"]))


def _starts(problem, x0, starts):
    """The labelled starting points of ``model="auto"``: x0 (default uniform), then the observed start."""
    # the uniform start stays None: the optimizer's own uniform point, bit for bit that of a
    # single-model run (a start projected onto the simplex can differ in the last bit, and
    # the path with it)
    out = [("x0", x0) if x0 is not None else ("uniform", None)]
    first = problem.uniform() if x0 is None else x0
    if starts is None:
        starts = ("observed",)
    for s in starts:
        if s != "observed":
            raise ValueError(f"starts must be a sequence of 'observed' (or empty), got {starts!r}")
        x = problem.observed_start()
        # a second start equal to the first would only repeat its phases
        if np.max(np.abs(x - first)) > 1e-12 * problem.mass:
            out.append(("observed", x))
    return out


def _solve(problem, x0, options, callback, model, bouligand, continuation,
           continuation_tol, starts) -> IdentificationResult:
    """The body of :meth:`femot.problems.TransportIdentification.solve` for ``problem``, an instance."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    if x0 is not None:
        x0 = problem.check_point(x0, "x0")
    opts = dict(DEFAULT_TR_OPTIONS)
    opts.update(_options_dict(options))
    t0 = time.perf_counter()
    start = _effort(problem.lower)
    path = _Path(problem, opts, callback, bouligand, fresh=model == "auto")
    if model == "auto":
        best = _auto(path, _starts(problem, x0, starts), continuation, continuation_tol)
    else:
        path.run(model, x0, hessian=model == "newton", continuation=continuation, continuation_tol=continuation_tol)
        best = 0
    tr = path.phases[best]["tr"]
    mu1 = tr.x
    # the phase's own lower level (its cached solution at mu1): the plan and J the phase reported
    low = path.phases[best]["problem"].lower_level(mu1)
    effort = path.effort
    for k, v in _effort(problem.lower).items():
        effort[k] += v - start[k]
    bias = problem.eps * max(float(np.abs(low.alpha).max()), float(np.abs(low.beta).max()))
    counters = {k: effort[k] for k in _EFFORT}
    phases = [{k: v for k, v in ph.items() if k not in ("tr", "problem")} for ph in path.phases]
    return upper_level_result(
        IdentificationResult, tr, x=mu1, fun=tr.fun, lower_ok=bool(low.success), lower_message=low.message,
        counters=counters, time_s=time.perf_counter() - t0,
        mu1=mu1, plan=low.plan, alpha=low.alpha, beta=low.beta, J=problem.objective(low.plan, mu1),
        nit=path.its["nit"], nfev=path.its["nfev"], nhev=path.its["nhev"], model=model,
        phase=phases[best]["phase"], phases=phases, levels=phases[best]["levels"],
        tol=float(path.opts["tol"]),  # the caller's, also when a tol/100 polish is returned
        stationarity=tr.stationarity, stationarity_measure=tr.stationarity_measure, theta=tr.theta,
        history=tr.history, lower=low, gamma=problem.gamma, eps=problem.eps, lam=problem.lam,
        lower_time_s=effort["time"], eps_bias=bias,
        eps_bias_relative=bias / float(problem.mu2_d.max()), **problem.errors(mu1, low.plan))
