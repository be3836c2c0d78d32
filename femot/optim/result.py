"""Results of the simplex solvers: :class:`SimplexTRResult`, its status messages and iteration table."""
from __future__ import annotations

import numbers

import numpy as np
from scipy.optimize import OptimizeResult

__all__ = ["LEGEND", "STATUS_MESSAGES", "SimplexTRResult"]

STATUS_MESSAGES = {
    0: "Converged: the stationarity measure is below tol.",
    1: "Maximum number of iterations reached before the stationarity tolerance.",
    2: "Trust-region radius collapsed below radius_floor before the stationarity tolerance.",
    3: "fun returned a non-finite value or subgradient.",
    4: "Stopped by the callback.",
}

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
    """Result of :func:`femot.optim.minimize_simplex` (a ``scipy.optimize.OptimizeResult``).

    Attributes
    ----------
    x : final iterate (on the simplex)
    fun : f(x)
    jac : the subgradient returned by ``fun`` at x
    nit : number of iterations (steps computed)
    nfev : number of calls of ``fun`` (including Bouligand sampling and probes)
    success, status, message : 0 converged, 1 max_iter, 2 radius collapse,
        3 non-finite output of fun or hessp, 4 stopped by the callback
    stationarity : final stationarity measure (theta_R; psi_R or the cut certificate psi
        if the stop was certified by several subgradients; fw_gap for the convex stop)
    stationarity_measure : ``"theta"``, ``"psi"`` or ``"fw_gap"``
    theta : theta_R at x with ``jac``
    Delta : final trust-region radius
    n_resets : number of BFGS resets
    fw_gap : Frank-Wolfe gap <g, x> - mass min_i g_i / w_i at x (a bound on
        f(x) - min f when f is convex; just a number otherwise)
    nhev : number of calls of ``hessp`` (0 without it)
    history : one dict per iteration with keys k, f, theta, psi, Delta, rho,
        step_norm, model ('bfgs', 'newton', 'bouligand' or 'bundle'), step (the
        candidate taken: 'cauchy', 'dogleg', 'face', 'newton', 'bundle',
        'bundle-newton', 'psi', 'qp' or 'probe'), accepted, pred (model decrease), cauchy
        (right-hand side of the Cauchy condition of Step 8/11), nfev,
        fw_gap, nhev (cumulative hessp calls), cg (CG iterations of the
        Newton step, None otherwise).  The last row (model None) records
        the stationarity at the returned point; a row with model
        'bouligand' and rho None is the psi_R-certified stop.
    options : the options used, with the defaults that depend on the simplex filled in
        (:class:`femot.optim.TrustRegionOptions` or :class:`femot.optim.BundleOptions`); callable
        options (``precond``, ``metric``) are shown as None so that the result pickles

    Examples
    --------
    >>> from femot.optim import minimize_simplex
    >>> res = minimize_simplex(lambda x: (float(x @ x), 2 * x), n=2)
    >>> print(res.success, res.stationarity_measure, res.history[-1]["model"])
    True theta None
    >>> print(res.table().splitlines()[0].split()[:4])
    ['k', 'f', 'theta', 'psi']
    """

    def table(self) -> str:
        """The iteration history as a printable table."""
        lines = [_header()]
        lines += [_row(h) for h in self.get("history", [])]
        return "\n".join(lines)
