"""One entry point for minimization over the (weighted) simplex: :func:`minimize_simplex`."""
from __future__ import annotations

from femot._docstrings import cite
from femot._threads import blas_one_thread
from femot.optim.bundle import minimize_bundle
from femot.optim.trust_region import minimize_trust_region

__all__ = ["minimize_simplex"]

#: The methods of :func:`minimize_simplex`.
_METHODS = {"trust-region": minimize_trust_region, "bundle": minimize_bundle}


@cite("III")
def minimize_simplex(fun, x0=None, *, method="trust-region", hessp=None, weights=None, mass=1.0, n=None,
                     options=None, callback=None, collect_subgradients=None):
    """Minimize a locally Lipschitz f over the (weighted) simplex::

        min f(x)  s.t.  x >= 0,  sum_i w_i x_i = mass.

    ``method="trust-region"`` (default): Part III, Algorithm 4.1, the constrained nonsmooth
    trust-region method with the choices of Remark 4.2 (BFGS model, projected dogleg /
    stationarity step, Bouligand safeguard), or the exact Hessian with ``hessp``.
    ``method="bundle"``: the bundle trust region with quadratic cuts for f = quadratic +
    piecewise linear (needs ``hessp``, the constant Hessian of the quadratic).  See
    docs/trust_region.md.

    Parameters
    ----------
    fun : callable
        ``fun(x) -> (f, g)``: value and ONE Clarke subgradient.
    x0 : array_like or None, optional
        Starting point on the simplex (default: uniform, ``mass / sum(w) * ones``).
        A point off the simplex by more than 1e-8 raises ValueError.
    method : {"trust-region", "bundle"}, optional
        The method (see above).
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
    options : TrustRegionOptions, BundleOptions, Mapping or None, optional
        The options of the method (:class:`TrustRegionOptions` for "trust-region",
        :class:`BundleOptions` for "bundle"); a Mapping of their fields is converted (unknown
        keys raise), None means the defaults.
    callback : callable or None, optional
        ``callback(intermediate_result)`` after every iteration (an
        OptimizeResult with x, fun, jac, nit, stationarity, Delta); returning
        True (or raising StopIteration) stops with status 4.
    collect_subgradients : callable or None, optional
        ``collect_subgradients(x, radius) -> list of g``: subgradients from the
        ball B(x, radius) for the Bouligand model (e.g. all Bouligand elements of
        a bilevel map, Part III Thm 3.12); by default they are sampled.

    Returns
    -------
    SimplexTRResult

    Raises
    ------
    ValueError
        If a callable argument is not callable, the method is unknown (or "bundle" without
        ``hessp``), ``x0`` is off the simplex, or an option is unknown or invalid.

    Notes
    -----
    Stopping: theta_R(x, g) <= tol (Step 5, status 0) -- with ``convex=True``
    instead fw_gap <= fw_rtol * max(|f|, fw_floor), the only success then --, or
    -- in the Bouligand phase (Delta_k < Delta_min) -- psi_R <= tol, i.e. a convex
    combination of the subgradients collected in B(x, Delta_k) is stationary up to tol
    (Goldstein-type stationarity; this is how kinks that are minimizers are
    certified, where a single subgradient never has small theta).

    Examples
    --------
    >>> import numpy as np
    >>> c = np.array([0.2, 0.3, 0.5])
    >>> fun = lambda x: (float((x - c) @ (x - c)), 2 * (x - c))
    >>> res = minimize_simplex(fun, n=3)
    >>> print([round(float(v), 4) for v in res.x], res.success)
    [0.2, 0.3, 0.5] True
    >>> res = minimize_simplex(fun, n=3, method="bundle", hessp=lambda x, v: 2 * v)
    >>> print([round(float(v), 4) for v in res.x], res.stationarity_measure)
    [0.2, 0.3, 0.5] psi
    """
    if not callable(fun):
        raise ValueError(f"fun must be callable, got {type(fun).__name__}")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {sorted(_METHODS)}, got {method!r}")
    if callback is not None and not callable(callback):
        raise ValueError("callback must be callable or None")
    if collect_subgradients is not None and not callable(collect_subgradients):
        raise ValueError("collect_subgradients must be callable or None")
    if hessp is not None and not callable(hessp):
        raise ValueError(f"hessp must be callable or None, got {type(hessp).__name__}")
    if method == "bundle" and hessp is None:
        raise ValueError("method='bundle' needs hessp (the constant Hessian of the quadratic part of f)")
    with blas_one_thread():  # same rounding for any OPENBLAS_NUM_THREADS (femot._threads)
        return _METHODS[method](fun, x0, hessp, weights, mass, n, options, callback, collect_subgradients)
