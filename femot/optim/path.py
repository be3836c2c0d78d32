"""Path following: a sequence of simplex problems solved with warm starts (Part II, Part III)."""
from __future__ import annotations

import numpy as np
from scipy.optimize import OptimizeResult

from femot._docstrings import cite
from femot.optim.minimize import minimize_simplex
from femot.optim.result import _fmt

__all__ = ["SimplexPathResult", "minimize_simplex_path"]


class SimplexPathResult(OptimizeResult):
    """Result of :func:`minimize_simplex_path`: one :class:`SimplexTRResult` per level.

    Attributes: params, results, x (final level), fun, success (all levels),
    status (first nonzero status, else 0), message, nit and nfev (totals).

    >>> res = minimize_simplex_path(lambda p: lambda x: (float(p * x @ x), 2 * p * x), [1.0, 2.0], n=2)
    >>> print(res.table().splitlines()[0].split())
    ['level', 'param', 'f', 'stationarity', 'nit', 'nfev', 'status']
    """

    def table(self) -> str:
        """One summary line per level of the path."""
        head = f"{'level':>5}{'param':>14}{'f':>16}{'stationarity':>14}{'nit':>6}{'nfev':>7}  status"
        lines = [head]
        for i, (p, r) in enumerate(zip(self.params, self.results)):
            lines.append(f"{i:>5}{_fmt(p, 14, 4)}{_fmt(r.fun, 16, 8)}"
                         f"{_fmt(r.stationarity, 14)}{r.nit:>6}{r.nfev:>7}  {r.status}")
        return "\n".join(lines)


@cite("II", "III")
def minimize_simplex_path(fun_factory, path, x0=None, *, weights=None, mass=1.0, n=None,
                          options=None, callback=None, collect_subgradients=None, hessp=None, keep=None,
                          method="trust-region", solver=None):
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
    keep : callable or None, optional
        ``keep(p, result) -> bool``: whether level ``p``'s point warm-starts the next level
        (default: always).  A level that is only a warm start can be dropped this way when
        its iterates are no longer trustworthy; the next level then starts where it did.
    method : {"trust-region", "bundle"}, optional
        The method of :func:`minimize_simplex` used at every level.
    solver : callable or None, optional
        Solves one level: ``solver(fun, x, **keywords)`` with the keywords of
        :func:`minimize_simplex` used here; None: :func:`minimize_simplex` itself. A caller's
        own driver around it (e.g. one that also validates the problem) goes here.

    Returns
    -------
    SimplexPathResult
        ``params``, the per-level ``results``, ``x`` (the point of the last kept level, else
        ``x0``, which may be None), the last level's ``fun``, and the summed ``nit``/``nfev``;
        ``success`` only if every level converged.

    Raises
    ------
    ValueError
        If ``fun_factory`` is not callable, ``path`` is not iterable or empty, or a factory
        returns a tuple of the wrong length.

    Examples
    --------
    >>> import numpy as np
    >>> def factory(p):  # f_p(x) = p |x|^2 - x_1
    ...     return lambda x: (float(p * x @ x - x[0]), 2 * p * x - np.array([1.0, 0.0]))
    >>> path = minimize_simplex_path(factory, [1.0, 2.0], n=2)
    >>> print([round(float(v), 4) for v in path.x], path.success, len(path.results))
    [0.625, 0.375] True 2
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
        r = (solver or minimize_simplex)(fun, x, method=method, hessp=hp, weights=weights, mass=mass, n=n,
                                         options=options, callback=callback, collect_subgradients=collect)
        results.append(r)
        if keep is None or keep(p, r):
            x = r.x
    bad = [i for i, r in enumerate(results) if not r.success]
    status = results[bad[0]].status if bad else 0
    msg = ("All levels converged." if not bad else
           f"Levels {bad} did not converge; first: {results[bad[0]].message}")
    return SimplexPathResult(
        params=params, results=results, x=None if x is None else np.asarray(x, dtype=float),
        fun=results[-1].fun,
        success=not bad, status=status, message=msg,
        nit=sum(r.nit for r in results), nfev=sum(r.nfev for r in results),
    )
