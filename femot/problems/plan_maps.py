"""The lower level along an optimizer's path: the marginal-to-plan map with warm starts and a cache.

:class:`MarginalToPlan` is ``mu1 -> S_{gamma,eps}(mu1, mu2)`` (Part III, Def. 3.1) as the
upper-level problems use it; :class:`ControlToPlan` composes it with a smoothing operator,
``m -> S_{gamma,eps}(T m, m2)`` (Part II, (2.6)).  docs/problems.md explains why these
live in ``femot.problems``.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TypeVar

import numpy as np

from femot._validation import as_vector, check_nonnegative_scalar, check_positive_scalar
from femot.core import QROTOptions, QROTResult, solve_qrot
from femot.problems.protocol import _cite, _options_dict

__all__ = ["MarginalToPlan", "ControlToPlan", "QROT_DEFAULTS", "WARM_FLOOR", "WARM_MAX_CHANGE", "newton_steps"]

#: Options of the core every lower level of femot.problems starts from (``qrot_options`` override them).
QROT_DEFAULTS = {"tol": 1e-10, "max_iter": 200}

_M = TypeVar("_M", bound="MarginalToPlan")

#: Smallest Newton budget of a warm start once a cold start has converged (see :class:`MarginalToPlan`).
WARM_FLOOR = 15

#: Largest change of mu1 (max norm, relative to the max of the marginal the warm potentials solve)
#: from which a warm start is tried when the cold start is a continuation in gamma (see
#: :class:`MarginalToPlan`).  The warm start's first residual is exactly this change.
WARM_MAX_CHANGE = 1e-2


def newton_steps(res: QROTResult) -> int:
    """All Newton steps of one core call: its continuation stages, abandoned plain start and coarse levels too.

    ``res.nit`` counts the final stage only.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.linspace(0.0, 1.0, 4)
    >>> res = solve_qrot((x[:, None] - x[None, :]) ** 2, np.full(4, 0.25), np.full(4, 0.25), 1e-2)
    >>> newton_steps(res) == res.nit  # no continuation here
    True
    """
    n = int(res.get("nit_total", res.nit))
    levels = res.get("levels")
    if levels:  # coarsest first, this solve last
        n += sum(int(lev["nit"]) for lev in levels[:-1])
    return n


@_cite
class MarginalToPlan:
    """The map ``mu1 -> S_{gamma,eps}(mu1, mu2)`` along an optimizer's path: warm starts, cache, counters.

    Solves the (doubly) regularized transport problem of Part III, (3.1) (weighted; the
    semismooth Newton method of Lorenz, Manns, Meyer 2021, :func:`femot.core.solve_qrot`)
    for a fixed ``mu2`` and the marginals ``mu1`` the upper level asks for:

    1. warm-started from the dual potentials of the last converged solve (public state
       :attr:`warm`), with at most ``warm_max_iter`` Newton steps, and once a cold start
       has converged at most ``max(WARM_FLOOR, its iterations // 2)`` (a fifth of all
       steps after a continuation in gamma; a warm start from
       a distant marginal can be a worse start than the core's own).  Once a cold start
       was the core's continuation in gamma (small gamma: nearly the plan of the linear
       program, whose support a distant marginal rearranges), the warm start is skipped
       when ``mu1`` moved by more than ``WARM_MAX_CHANGE`` times the largest density of the
       marginal the warm potentials solve (on FE data at gamma = 1e-6 such warm starts
       ended unconverged at their budget, changes of 5e-2 and more, and converged below 4e-3);
    2. if that fails, a cold start: the core's own initialization, which at small gamma
       is its continuation in gamma (``QROTResult.continuation``); the better of the two
       by residual is kept.

    A result that still fails is returned (check ``.success``) and counted in
    :attr:`failures`; the upper level turns it into ``f = nan``.

    Parameters
    ----------
    cost : numpy.ndarray or cost object
        The (n1, n2) cost, anything :func:`~femot.core.solve_qrot` accepts.
    mu2 : array_like
        The fixed second marginal (density w.r.t. ``w2``), length n2.
    gamma : float
        Quadratic regularization gamma > 0.
    eps : float, optional
        Dual regularization eps >= 0 of Part III, (3.1) (default 0).
    w1, w2 : array_like or None, optional
        Quadrature weights of the two marginals (None: unit weights, the Hitchcock case).
    qrot_options : Mapping or options dataclass, optional
        Options of :func:`femot.core.solve_qrot` over :data:`QROT_DEFAULTS`
        (``tol=1e-10``, ``max_iter=200``, the budget of a cold start).
    warm_max_iter : int or None, optional
        Newton iterations of the warm start (default: ``max_iter``).
    cache_size : int, optional
        Number of solutions kept, keyed by the bytes of ``mu1`` (default 0: no cache).
    solver : callable or None, optional
        The core solver (default :func:`femot.core.solve_qrot`); same signature.

    Attributes
    ----------
    warm : tuple of numpy.ndarray or None
        ``(alpha, beta)`` of the last converged solve, the next warm start.  A caller
        may set it (e.g. potentials transferred from a coarser level) or clear it.
    solves : int
        Calls of the core (every warm and cold start).
    requests : int
        Distinct marginals solved (calls of :meth:`solve` not answered by the cache).
    failures : int
        Requests whose final result did not converge.
    newton_iterations : int
        Newton iterations summed over all core calls (:func:`newton_steps`: with their
        continuation stages and coarse levels).
    solve_time : float
        Wall time spent in :meth:`solve` (seconds).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.linspace(0.0, 1.0, 4)
    >>> plan_of = MarginalToPlan((x[:, None] - x[None, :]) ** 2, np.full(4, 0.25), 1e-2, cache_size=2)
    >>> res = plan_of.solve(np.array([0.4, 0.3, 0.2, 0.1]))
    >>> print(bool(res.success), plan_of.solves, plan_of.requests)
    True 1 1
    >>> plan_of.solve(np.array([0.4, 0.3, 0.2, 0.1])) is res  # answered by the cache
    True
    """

    def __init__(self, cost, mu2, gamma: float, eps: float = 0.0, *, w1=None, w2=None,
                 qrot_options: Mapping | object | None = None, warm_max_iter: int | None = None,
                 cache_size: int = 0, solver: Callable[..., QROTResult] | None = None):
        if not hasattr(cost, "evaluate") and not hasattr(cost, "entries"):
            cost = np.asarray(cost, dtype=float)
        self.cost = cost
        self.mu2 = as_vector(mu2, "mu2")
        self.gamma = check_positive_scalar(gamma, "gamma")
        self.eps = check_nonnegative_scalar(eps, "eps")
        self.w1, self.w2 = w1, w2
        self.qrot_options = {**QROT_DEFAULTS, **_options_dict(qrot_options, "qrot_options")}
        if solver is None:  # the core's own checks, now rather than at the first solve
            try:
                QROTOptions.from_mapping(self.qrot_options)
            except ValueError as exc:
                raise ValueError(f"qrot_options: {exc}") from None
        self.tol = check_positive_scalar(self.qrot_options["tol"], "tol")
        self.max_iter = int(self.qrot_options["max_iter"])
        if self.max_iter < 0:
            raise ValueError(f"max_iter must be a nonnegative integer, got {self.max_iter!r}")
        self.warm_max_iter = self.max_iter if warm_max_iter is None else min(self.max_iter, int(warm_max_iter))
        if self.warm_max_iter < 0:
            raise ValueError(f"warm_max_iter must be a nonnegative integer, got {warm_max_iter!r}")
        self.cache_size = max(0, int(cache_size))
        self.solver = solve_qrot if solver is None else solver
        self.reset()

    def reset(self) -> None:
        """Forget the warm start and the cache and set every counter to zero."""
        self.warm: tuple | None = None
        self._cold_nit: int | None = None
        self._cold_continuation = False
        self._warm_of: tuple | None = None  # (warm, the mu1 it solves)
        self._cache: OrderedDict = OrderedDict()
        self.solves = 0
        self.requests = 0
        self.failures = 0
        self.newton_iterations = 0
        self.solve_time = 0.0

    def with_regularization(self: _M, gamma: float, eps: float | None = None) -> _M:
        """The same map at ``(gamma, eps)`` (eps None: unchanged) with a fresh state (no warm start, cache, counts)."""
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        other.gamma = check_positive_scalar(gamma, "gamma")
        other.eps = self.eps if eps is None else check_nonnegative_scalar(eps, "eps")
        other.reset()
        return other

    def carry(self, mu1, warm, gamma_from: float):
        """Potentials at this map's gamma for ``mu1`` from ``warm``, potentials at ``gamma_from``.

        Solves at ``gamma_from * r^-1, ..., gamma`` (``r`` about ``10^(1/3)``, three stages per
        decade as the core's continuation, docs/core.md, section 3), each from the previous
        potentials: a warm start a decade away can fail where such stages do not.  The core
        calls and Newton steps are counted here.  Returns the potentials of the last converged
        stage (``warm`` if none converged); :attr:`warm` is not changed.

        Examples
        --------
        >>> import numpy as np
        >>> x = np.linspace(0.0, 1.0, 6)
        >>> c, mu = (x[:, None] - x[None, :]) ** 2, np.full(6, 1 / 6)
        >>> coarse = MarginalToPlan(c, mu, 1e-2)
        >>> r = coarse.solve(mu)
        >>> fine = MarginalToPlan(c, mu, 1e-3)
        >>> fine.warm = fine.carry(mu, (r.alpha, r.beta), 1e-2)  # stages at 4.6e-3, 2.2e-3, 1e-3
        >>> fine.solves, bool(fine.solve(mu).nit == 0)  # the last stage solved it
        (3, True)
        """
        mu1 = np.asarray(mu1, dtype=float)
        k = max(1, int(round(3 * np.log10(gamma_from / self.gamma))))
        for j in range(k - 1, -1, -1):
            stage = self.with_regularization(self.gamma * (gamma_from / self.gamma) ** (j / k))
            stage.warm = warm
            res = MarginalToPlan.solve(stage, mu1)  # (a density, also for ControlToPlan)
            self.solves += stage.solves
            self.newton_iterations += stage.newton_iterations
            self.solve_time += stage.solve_time
            if not res.success:
                break
            warm = (res.alpha, res.beta)
        return warm

    def solve(self, mu1) -> QROTResult:
        """``S_{gamma,eps}(mu1, mu2)``: warm start, then cold start if that fails (cached).

        Parameters
        ----------
        mu1 : numpy.ndarray
            The first marginal (density w.r.t. ``w1``), length n1.
        """
        mu1 = np.asarray(mu1, dtype=float)
        key = mu1.tobytes() if self.cache_size else None
        if key is not None and key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        t0 = time.perf_counter()
        res = None
        if self.warm is not None and not self._far_from_warm(mu1):
            res = self._call(mu1, self.warm, self._warm_cap())
        if res is None or not res.success:
            cold = self._call(mu1, None, self.max_iter)
            if cold.success:
                self._cold_continuation = cold.get("init") == "continuation"
                # a continuation's final stage is short, its stages cheap: budget on a fifth of all its steps
                self._cold_nit = newton_steps(cold) * 2 // 5 if self._cold_continuation else int(cold.nit)
            if res is None or cold.success or cold.residual < res.residual:
                res = cold
        self.solve_time += time.perf_counter() - t0
        self.requests += 1
        if res.success:
            self.warm = (res.alpha, res.beta)
            self._warm_of = (self.warm, mu1)
        else:
            self.failures += 1
        if key is not None:
            self._cache[key] = res
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return res

    def _far_from_warm(self, mu1) -> bool:
        """Skip the warm start: continuation cold starts, and mu1 far from the marginal of :attr:`warm`."""
        if not self._cold_continuation or self._warm_of is None or self._warm_of[0] is not self.warm:
            return False  # (warm set by the caller: its marginal is unknown)
        old = self._warm_of[1]
        return bool(np.abs(mu1 - old).max() > WARM_MAX_CHANGE * np.abs(old).max())

    def _warm_cap(self) -> int:
        # On FE data at small gamma, warm starts from distant marginals were seen to end
        # unconverged at 200 steps (7-19 s) where the cold start needed 60-70; capped, a
        # request costs at most about 1.5 cold solves.
        if self._cold_nit is None:
            return self.warm_max_iter
        return min(self.warm_max_iter, max(WARM_FLOOR, self._cold_nit // 2))

    def _call(self, mu1, x0, max_iter) -> QROTResult:
        opts = {**self.qrot_options, "tol": self.tol, "max_iter": max_iter}
        res = self.solver(self.cost, mu1, self.mu2, self.gamma, self.eps, self.w1, self.w2, x0=x0, **opts)
        self.solves += 1
        self.newton_iterations += newton_steps(res)
        return res

    def counters(self) -> dict:
        """The effort so far: ``lower_solves`` (core calls), ``lower_requests`` (distinct marginals),
        ``newton_iterations``, ``lower_failures`` and ``lower_solve_time_s``."""
        return {"lower_solves": self.solves, "lower_requests": self.requests,
                "newton_iterations": self.newton_iterations, "lower_failures": self.failures,
                "lower_solve_time_s": round(self.solve_time, 3)}


@_cite
class ControlToPlan(MarginalToPlan):
    """The map ``m -> pi = S_{gamma,eps}(T m, m2)`` and its adjoint (Part II, (BK^delta_gamma)).

    The lower level between the smoothed control ``T m`` (``T`` a
    :class:`~femot.fem.SmoothingOperator`, Part II (2.6), densities at the nodes of
    ``q1``) and a fixed density ``m2`` at the nodes of ``q2``, solved as by
    :class:`MarginalToPlan` (no cache: the problems cache their last point themselves).

    Parameters
    ----------
    q1, q2 : femot.fem.Quadrature
        Quadratures of Omega_1 and Omega_2 (their weights are ``w1``, ``w2``).
    T : femot.fem.SmoothingOperator
        Control masses -> smoothed density at the nodes of ``q1``.
    m2 : array_like
        The smoothed second marginal at the nodes of ``q2``.
    c : numpy.ndarray or cost object
        The (q1.n, q2.n) cost.
    gamma : float
        Quadratic regularization (> 0).
    eps : float, optional
        Dual regularization (>= 0, default 0).
    qrot_options : Mapping or options dataclass, optional
        Options of :func:`femot.core.solve_qrot` over :data:`QROT_DEFAULTS`.

    Attributes
    ----------
    adjoint_time : float
        Wall time of the adjoint solves of :meth:`pullback` (seconds); the counters of
        :class:`MarginalToPlan` are inherited.

    Examples
    --------
    >>> import numpy as np
    >>> from femot.fem import Smoother, quadrature
    >>> from skfem import MeshLine
    >>> q = quadrature(MeshLine(np.linspace(0.0, 1.0, 9)))
    >>> smooth = Smoother(q, 0.25)
    >>> T = smooth.operator(sources=q.nodes[2:7], mass=1.0)
    >>> m2 = T.apply(np.full(5, 0.2))
    >>> c = (q.nodes[:, None, 0] - q.nodes[None, :, 0]) ** 2
    >>> plan_of = ControlToPlan(q, q, T, m2, c, 1e-2)
    >>> print(bool(plan_of.solve(np.full(5, 0.2)).success), plan_of.n_controls)
    True 5
    """

    def __init__(self, q1, q2, T, m2, c, gamma: float, eps: float = 0.0, *,
                 qrot_options: Mapping | object | None = None):
        if T.shape[0] != q1.n:
            raise ValueError(f"T maps to {T.shape[0]} nodes, but q1 has {q1.n}")
        m2 = as_vector(m2, "m2", length=q2.n)
        if not hasattr(c, "evaluate"):  # a cost object (e.g. femot.GeometricCost) is kept as is
            c = np.asarray(c, dtype=float)
        if tuple(c.shape) != (q1.n, q2.n):
            raise ValueError(f"c has shape {c.shape}, expected {(q1.n, q2.n)}")
        super().__init__(c, m2, gamma, eps, w1=q1.weights, w2=q2.weights, qrot_options=qrot_options)
        self.q1, self.q2, self.T = q1, q2, T
        self.adjoint_time = 0.0

    @property
    def c(self):
        """The cost (alias of :attr:`cost`)."""
        return self.cost

    @property
    def m2(self) -> np.ndarray:
        """The fixed second marginal (alias of :attr:`mu2`)."""
        return self.mu2

    @property
    def n_controls(self) -> int:
        """Number of control masses (columns of ``T``)."""
        return int(self.T.shape[1])

    def reset(self) -> None:
        """Forget the warm start; every counter (also the adjoint time) to zero."""
        super().reset()
        self.adjoint_time = 0.0

    def density(self, masses) -> np.ndarray:
        """``T m``: the smoothed control as a density at the nodes of ``q1``."""
        return self.T.apply(masses)

    def solve(self, masses) -> QROTResult:
        """The core's result at the control ``masses``: :meth:`MarginalToPlan.solve` at ``T m``."""
        return super().solve(self.density(masses))

    def pullback(self, res: QROTResult, G) -> np.ndarray:
        """Gradient of ``m -> <G, pi(m)>`` (entrywise pairing) w.r.t. the control masses.

        ``T^T p1`` with ``(p1, p2) = res.vjp(G)`` (Part III, Prop. 3.14; one sparse solve).

        Parameters
        ----------
        res : QROTResult
            The lower-level solution at m.
        G : numpy.ndarray or scipy.sparse matrix
            The (n1, n2) direction paired with the plan.
        """
        t0 = time.perf_counter()
        p1, _ = res.vjp(G)
        self.adjoint_time += time.perf_counter() - t0
        return self.T.transpose(p1)

    def counters(self) -> dict:
        """:meth:`MarginalToPlan.counters` plus ``adjoint_time_s``."""
        out = super().counters()
        out["adjoint_time_s"] = round(self.adjoint_time, 3)
        return out
