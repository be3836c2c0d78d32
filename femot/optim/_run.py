"""What both simplex solvers share: the oracle's checks, the start, the run state, the result."""
from __future__ import annotations

import math
import numbers

import numpy as np
from scipy.optimize import OptimizeResult

from femot._validation import as_positive_weights, as_vector, check_positive_scalar
from femot.optim._newton import HessianOperator, fw_gap
from femot.optim.result import SimplexTRResult, _header, _row
from femot.optim.simplex import _check_on_simplex, _project, _theta

EPS = np.finfo(float).eps
HESSP_NAN_MESSAGE = "hessp returned a non-finite Hessian-vector product."


class NonFinite(Exception):
    """``fun`` or ``hessp`` returned NaN/inf during an iteration (status 3)."""

    def __init__(self, message=None):
        super().__init__(message)
        self.message = message


def call(fun, x, n, where):
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


def finite(f, g):
    return math.isfinite(f) and bool(np.all(np.isfinite(g)))


def setup(x0, weights, mass, n):
    """(x0 on the simplex, weights or None, mass, n) from what the caller gave."""
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


class RunState:
    """Mutable state of one run (iterate, radius, counters, log), after the first call of ``fun``.

    ``parse(n, w, s)`` gives the options; with ``hessp`` the calls of ``fun`` are tracked
    (``last``) so that ``hessp`` is called only right after ``fun`` at the same point.
    """

    def __init__(self, fun, x0, hessp, weights, mass, n, parse, callback):
        self.x, self.w, self.s, self.n = setup(x0, weights, mass, n)
        self.o = parse(self.n, self.w, self.s)
        self.callback = callback
        self.hess = None
        self.last = [None]  # the point of the last call of fun (hessp's contract)
        if hessp is not None:
            self.hess = HessianOperator(hessp, self.n)
            user_fun, last = fun, self.last

            def fun(z):
                last[0] = z
                return user_fun(z)
        self.fun = fun
        self.f, self.g = call(fun, self.x, self.n, "x0")
        if not finite(self.f, self.g):
            raise ValueError("fun(x0) returned a non-finite value or subgradient")
        self.nfev = 1
        self.n_resets = self.k = 0
        self.Delta = self.o.Delta0
        self.history = []
        self.status, self.stat_value, self.stat_kind, self.psi = None, None, "theta", None
        self.message_override = None
        self.rec = None
        if self.o.verbose:
            print(_header())

    def log(self, rec):
        self.history.append(rec)
        if self.o.verbose:
            print(_row(rec), flush=True)

    def callback_stops(self, stationarity):
        """Call the user's callback (if any) on the current iterate; True if it asks to stop."""
        if self.callback is None:
            return False
        inter = OptimizeResult(x=self.x.copy(), fun=self.f, jac=self.g.copy(), nit=self.k, stationarity=stationarity,
                               Delta=self.Delta, fw_gap=fw_gap(self.x, self.g, self.w, self.s))
        try:
            stop = self.callback(inter)
        except StopIteration:
            stop = True
        return stop is True


def finish(st, message):
    """Log the final stationarity row and package the :class:`SimplexTRResult`.

    ``message(theta_final, fw_final)`` gives the message unless ``st.message_override`` is set.
    """
    o, x, f, g = st.o, st.x, st.f, st.g
    theta_final = _theta(x, g, o.R, st.w, st.s)[0]
    fw_final = fw_gap(x, g, st.w, st.s)
    nhev = 0 if st.hess is None else st.hess.calls
    st.log({"k": st.k, "f": f, "theta": theta_final, "psi": st.psi if st.stat_kind == "psi" else None,
            "Delta": st.Delta, "rho": None, "step_norm": 0.0, "model": None, "step": None,
            "accepted": False, "pred": None, "cauchy": None, "nfev": st.nfev, "fw_gap": fw_final,
            "nhev": nhev, "cg": None})
    status = st.status
    msg = st.message_override if st.message_override is not None else message(theta_final, fw_final)
    return SimplexTRResult(
        x=x, fun=f, jac=g, nit=sum(1 for h in st.history if h["model"] is not None and h["rho"] is not None),
        nfev=st.nfev, success=status == 0, status=status, message=msg,
        stationarity=float(st.stat_value), stationarity_measure=st.stat_kind, theta=theta_final,
        Delta=st.Delta, n_resets=st.n_resets, history=st.history, options=o.without_callables(), fw_gap=fw_final,
        nhev=nhev,
    )
