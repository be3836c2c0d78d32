"""What every upper-level problem of femot shares: the protocol, the lower-level driver, the result.

The three upper-level problems of femot -- transportation identification (Part III,
Section 4), W^{-1,p'} tracking of the plan (Part II, Section 3.2.1) and elliptic
control with a Wasserstein term (Part II, Section 3.2.2) -- are all reduced problems

    min_{x in S}  f(x) = J(S_{gamma,eps}(T x, mu2), x),
    S = {x >= 0, sum_i w_i x_i = mass},

over a simplex, where ``S_{gamma,eps}`` is the marginal-to-plan map of the quadratically
regularized transport problem (Part III, Def. 3.1; Lorenz, Manns, Meyer 2021) and ``T``
is the identity (identification) or a smoothing operator (Part II, (2.6)).  This module
gives them one shape:

* :class:`SimplexProblem` -- the protocol the trust-region method of Part III,
  Algorithm 4.1 (:func:`femot.optim.minimize_simplex`) needs from a problem: ``n``,
  ``mass``, ``weights``, ``uniform()``, ``full(x)``, a cached oracle
  ``problem(x) -> (f, g)`` and ``solve()``; :class:`SecondOrderProblem` adds
  ``hessp(x, v)``.
* :class:`LowerLevel` -- the one driver of the lower level along an optimizer's path:
  warm start from the last converged dual potentials, a cold start if that fails,
  continuation in gamma if both fail; a cache keyed by the marginal; counters.
  :class:`SmoothedLowerLevel` composes it with a smoothing operator ``T``.
* :class:`UpperLevelResult` -- the one result convention (:data:`RESULT_KEYS`), built by
  :func:`upper_level_result`.

Why a ``typing.Protocol`` and not an abstract base class: the problems have nothing to
inherit (their constructors, data and oracles differ completely), and the optimizer only
calls methods.  A structural protocol states that contract without forcing a class
hierarchy on user code: any object with these members -- also a user's own oracle --
can be handed to :func:`solve_on_simplex` or :func:`femot.optim.minimize_simplex`.  It is
``runtime_checkable``, so ``isinstance(problem, SimplexProblem)`` checks that the members
exist (not their signatures).

Why :class:`LowerLevel` lives in ``femot.problems``: it drives only the core
(:func:`femot.core.qrot.solve_qrot`), but what it adds -- reusing the potentials of the
previous point, caching by the marginal the optimizer varies, counting the effort per
upper-level run -- is a policy of the upper level.  The single-shot lower level on meshes
(:func:`femot.fem.solve_lower_level`) needs none of it (its warm start is an explicit
``x0``), and the studies, one layer up, reach the driver through the problems (its public
``warm`` state).  The layers stay ``core <- fem <- problems <- studies``.

References
----------
.. [I] S. Hillbrecht, C. Meyer, "Bilevel optimization of the Kantorovich problem and its
   quadratic regularization, Part I: existence results", arXiv:2206.13220.
.. [II] S. Hillbrecht, P. Manns, C. Meyer, "Bilevel optimization of the Kantorovich
   problem and its quadratic regularization, Part II: convergence analysis",
   arXiv:2211.07287.
.. [III] S. Hillbrecht, "Bilevel optimization of the Kantorovich problem and its quadratic
   regularization, Part III: the finite-dimensional case", arXiv:2406.08992.
.. [LMM] D. A. Lorenz, P. Manns, C. Meyer, "Quadratically regularized optimal transport",
   Appl. Math. Optim. 83(3), 2021.
"""
from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

import numpy as np
from scipy.optimize import OptimizeResult

from femot._docstrings import cite, fill_doc
from femot._validation import as_vector, check_nonnegative_scalar, check_positive_scalar
from femot.core.qrot import QROTResult, solve_qrot
from femot.optim import minimize_simplex, theta_R

__all__ = [
    "SimplexProblem", "SecondOrderProblem", "LowerLevel", "SmoothedLowerLevel", "UpperLevelResult",
    "RESULT_KEYS", "upper_level_result", "solve_on_simplex", "CONTINUATION_SCHEDULES", "VertexControl",
    "UniformStart", "SHARED_DOCS", "shared_doc", "WARM_FLOOR",
]

#: Keys every upper-level result carries (:func:`upper_level_result`).
RESULT_KEYS = ("x", "fun", "nit", "success", "status", "message", "lower_solves", "newton_iterations", "time_s")

#: Smallest Newton budget of a warm start once a cold start has converged (:meth:`LowerLevel._warm_cap`).
WARM_FLOOR = 15

#: Continuation schedules of :class:`LowerLevel` (see :meth:`LowerLevel.solve`).
CONTINUATION_SCHEDULES = ("adaptive", "decades")

#: Appends the References section (the four papers in full) to a docstring.
_cite = cite("I", "II", "III", "LMM")


# --------------------------------------------------------------------------
# the protocol
# --------------------------------------------------------------------------
@runtime_checkable
@_cite
class SimplexProblem(Protocol):
    """A reduced upper-level problem over the simplex ``{x >= 0, sum_i w_i x_i = mass}``.

    The members are what the constrained nonsmooth trust-region method of Part III,
    Algorithm 4.1 needs (:func:`femot.optim.minimize_simplex`) plus what a user needs to
    read a solution.  Implemented by :class:`~femot.problems.TransportIdentification`,
    :class:`~femot.problems.ControlProblem` and :class:`~femot.problems.TrackingProblem`.

    Attributes
    ----------
    n : int
        Number of simplex variables.
    mass : float
        The simplex's mass ``sum_i w_i x_i``.
    weights : numpy.ndarray or None
        The simplex weights ``w`` (None: all ones, the standard simplex).

    Notes
    -----
    ``problem(x)`` returns ``(f, g)``: the reduced objective and ONE Clarke subgradient
    (Part III, Prop. 3.14); the last point is cached, so the optimizer's repeated calls
    at an iterate cost nothing.  A lower level that does not converge gives ``f = nan``
    (never a silent failure).  ``full(x)`` maps the simplex variable to the problem's
    natural unknown (the control masses on all vertices; for identification the
    marginal itself).  ``solve()`` minimizes from ``uniform()`` and returns a result
    following the convention of :func:`upper_level_result`.
    """

    mass: float
    weights: np.ndarray | None

    @property
    def n(self) -> int:
        """Number of simplex variables."""

    def uniform(self) -> np.ndarray:
        """The uniform point of the simplex (the default start)."""

    def full(self, x: np.ndarray) -> np.ndarray:
        """The simplex variable ``x`` as the problem's natural unknown.

        Parameters
        ----------
        x : ndarray, shape (n,)
            A point of the problem's simplex.

        Returns
        -------
        ndarray
            The unknown in the problem's own terms, e.g. the masses at all mesh vertices
            (zero off the admissible ones) for a control problem, ``x`` itself otherwise.
        """

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Value and one Clarke subgradient of the reduced objective at ``x`` (cached)."""

    def solve(self, x0: np.ndarray | None = None) -> OptimizeResult:
        """Minimize over the simplex; a result with the keys :data:`RESULT_KEYS`.

        Implementations may take further (problem-specific) keyword arguments with defaults.

        Parameters
        ----------
        x0 : ndarray, shape (n,), optional
            Starting point on the simplex; default :meth:`uniform`.

        Returns
        -------
        scipy.optimize.OptimizeResult
            At least the keys of :data:`RESULT_KEYS` (success, status, message, ...).
        """


@runtime_checkable
@_cite
class SecondOrderProblem(SimplexProblem, Protocol):
    """A :class:`SimplexProblem` with Hessian-vector products (the optional member).

    ``hessp(x, v)`` is the Hessian of the reduced objective at ``x`` applied to ``v``
    where it is twice differentiable (an element of the generalized Hessian at a kink);
    it is called right after ``problem(x)``, so an implementation may reuse that
    evaluation's lower-level solution.
    """

    def hessp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Hessian of the reduced objective at ``x`` times ``v``.

        Parameters
        ----------
        x : ndarray, shape (n,)
            Point of the simplex, the one of the preceding call ``problem(x)``.
        v : ndarray, shape (n,)
            Direction.

        Returns
        -------
        ndarray, shape (n,)
            The (generalized) Hessian at ``x`` applied to ``v``.
        """


# --------------------------------------------------------------------------
# the lower-level driver
# --------------------------------------------------------------------------
@_cite
class LowerLevel:
    """The lower level ``mu1 -> S_{gamma,eps}(mu1, mu2)`` along an optimizer's path.

    Solves the (doubly) regularized transport problem of Part III, (3.1) (weighted;
    semismooth Newton method of Lorenz, Manns, Meyer 2021, :func:`femot.core.qrot.solve_qrot`)

        min_pi  sum_ij w1_i w2_j (c_ij pi_ij + gamma/2 pi_ij^2) + eps-terms,  pi >= 0,
        sum_j w2_j pi_ij = mu1_i,  sum_i w1_i pi_ij = mu2_j,

    for a fixed ``mu2`` and the marginals ``mu1`` the upper level asks for, by the chain

    1. warm start from the dual potentials of the last converged solve (public state
       :attr:`warm`; at most ``warm_max_iter`` Newton steps),
    2. a cold start (the core's own initialization) if the warm start failed -- the
       better of the two (by residual) is kept,
    3. continuation in gamma if both failed (see ``continuation``).

    A result that still fails is returned (check ``.success``) and counted in
    :attr:`failures`; the upper level turns it into ``f = nan``.

    Parameters
    ----------
    cost : numpy.ndarray or cost object
        The (n1, n2) cost, anything :func:`~femot.core.qrot.solve_qrot` accepts.
    mu2 : array_like
        The fixed second marginal (density w.r.t. ``w2``), length n2.
    gamma : float
        Quadratic regularization gamma > 0.
    eps : float, optional
        Dual regularization eps >= 0 of Part III, (3.1) (default 0).
    w1, w2 : array_like or None, optional
        Quadrature weights of the two marginals (None: unit weights, the Hitchcock case).
    tol : float, optional
        Residual tolerance of the core (default 1e-10).
    max_iter : int, optional
        Newton iterations of a cold start and of every continuation level (default 200).
    warm_max_iter : int or None, optional
        Newton iterations of the warm start (default: ``max_iter``).  A small cap lets a
        stalled warm start fall back to the cold start quickly.  Once a cold start has
        converged, a warm start also gets at most ``max(WARM_FLOOR, its iterations // 2)``.
    solver_options : dict or None, optional
        Further keyword arguments of the core (e.g. ``{"linear_solver": "cg"}``).
    continuation : {"adaptive", "decades"}, optional
        ``"adaptive"`` (default): raise gamma by factors 4 (at most 8 times) until a solve
        converges, then lower it back, warm-starting every step and refining the factor
        to its square root after a failed step; eps stays fixed.  ``"decades"``: the fixed
        levels ``(t gamma, t eps)``, ``t = 10^k, ..., 10, 1`` with ``10^k gamma`` at the
        cost's scale ``max(max |c_ij|, 1)``, each warm-started from the previous one.
    cache_size : int, optional
        Number of solutions kept, keyed by the bytes of ``mu1`` (default 0: no cache).
    solver : callable or None, optional
        The core solver (default :func:`femot.core.qrot.solve_qrot`); same signature.

    Attributes
    ----------
    warm : tuple of numpy.ndarray or None
        ``(alpha, beta)`` of the last converged solve, the next warm start.  A caller
        may set it (e.g. potentials transferred from a coarser level) or clear it.
    solves : int
        Calls of the core (every warm, cold and continuation solve).
    requests : int
        Distinct marginals solved (calls of :meth:`solve` not answered by the cache).
    failures : int
        Requests whose final result did not converge.
    continuations : int
        Requests rescued by continuation in gamma.
    newton_iterations : int
        Newton iterations summed over all core calls.
    solve_time : float
        Wall time spent in :meth:`solve` (seconds).
    """

    def __init__(self, cost, mu2, gamma: float, eps: float = 0.0, *, w1=None, w2=None, tol: float = 1e-10,
                 max_iter: int = 200, warm_max_iter: int | None = None, solver_options: dict | None = None,
                 continuation: str = "adaptive", cache_size: int = 0,
                 solver: Callable[..., QROTResult] | None = None):
        if not hasattr(cost, "evaluate") and not hasattr(cost, "entries"):
            cost = np.asarray(cost, dtype=float)
        self.cost = cost
        self.mu2 = as_vector(mu2, "mu2")
        self.gamma = check_positive_scalar(gamma, "gamma")
        self.eps = check_nonnegative_scalar(eps, "eps")
        self.w1, self.w2 = w1, w2
        self.tol = check_positive_scalar(tol, "tol")
        self.max_iter = int(max_iter)
        if self.max_iter < 0:
            raise ValueError(f"max_iter must be a nonnegative integer, got {max_iter!r}")
        self.warm_max_iter = self.max_iter if warm_max_iter is None else min(self.max_iter, int(warm_max_iter))
        if self.warm_max_iter < 0:
            raise ValueError(f"warm_max_iter must be a nonnegative integer, got {warm_max_iter!r}")
        self.solver_options = dict(solver_options or {})
        if continuation not in CONTINUATION_SCHEDULES:
            raise ValueError(f"continuation must be one of {CONTINUATION_SCHEDULES}, got {continuation!r}")
        self.continuation = continuation
        self.cache_size = max(0, int(cache_size))
        self.solver = solve_qrot if solver is None else solver
        self.reset()

    def reset(self) -> None:
        """Forget the warm start and the cache and set every counter to zero."""
        self.warm: tuple | None = None
        self._cold_nit: int | None = None
        self._cache: OrderedDict = OrderedDict()
        self.solves = 0
        self.requests = 0
        self.failures = 0
        self.continuations = 0
        self.newton_iterations = 0
        self.solve_time = 0.0

    def with_regularization(self, gamma: float, eps: float | None = None) -> LowerLevel:
        """The same lower level at ``(gamma, eps)`` with a fresh state (no warm start, cache, counts).

        Parameters
        ----------
        gamma : float
            The new quadratic regularization (> 0).
        eps : float or None, optional
            The new dual regularization (>= 0); None keeps the current eps.
        """
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        other.gamma = check_positive_scalar(gamma, "gamma")
        other.eps = self.eps if eps is None else check_nonnegative_scalar(eps, "eps")
        other.reset()
        return other

    # -- the chain -------------------------------------------------------------
    def solve(self, mu1) -> QROTResult:
        """``S_{gamma,eps}(mu1, mu2)`` by warm start -> cold start -> continuation (cached).

        Parameters
        ----------
        mu1 : numpy.ndarray
            The first marginal (density w.r.t. ``w1``), length n1.

        Returns
        -------
        QROTResult
            The core's result; ``success`` False when the whole chain failed.
        """
        mu1 = np.asarray(mu1, dtype=float)
        key = mu1.tobytes() if self.cache_size else None
        if key is not None and key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        t0 = time.perf_counter()
        res = None
        if self.warm is not None:
            res = self._call(mu1, self.gamma, self.eps, self.warm, self._warm_cap())
        if res is None or not res.success:
            cold = self._call(mu1, self.gamma, self.eps, None, self.max_iter)
            if cold.success:
                self._cold_nit = int(cold.nit)
            if res is None or cold.success or cold.residual < res.residual:
                res = cold
        if not res.success:
            new = self._adaptive(mu1) if self.continuation == "adaptive" else self._decades(mu1)
            if new is not None and (new.success or new.residual < res.residual):
                res = new
                self.continuations += int(new.success)
        self.solve_time += time.perf_counter() - t0
        self.requests += 1
        if res.success:
            self.warm = (res.alpha, res.beta)
        else:
            self.failures += 1
        if key is not None:
            self._cache[key] = res
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return res

    def _warm_cap(self) -> int:
        """Newton iterations allowed to a warm start: ``warm_max_iter``, and once a cold start
        has converged, at most ``max(WARM_FLOOR, its iterations // 2)``.

        The potentials of a distant marginal (after a long trust-region step) can be a worse
        start than the core's own: on FE data at small gamma such warm starts were seen to end
        unconverged at the iteration limit (200 steps, 7-19 s) where the cold start needed
        60-70.  Capped, a request costs at most about 1.5 cold solves; warm starts that
        succeed took a few to 30 steps there.
        """
        if self._cold_nit is None:
            return self.warm_max_iter
        return min(self.warm_max_iter, max(WARM_FLOOR, self._cold_nit // 2))

    def _call(self, mu1, gamma, eps, x0, max_iter) -> QROTResult:
        res = self.solver(self.cost, mu1, self.mu2, gamma, eps, self.w1, self.w2, x0=x0, tol=self.tol,
                          max_iter=max_iter, **self.solver_options)
        self.solves += 1
        self.newton_iterations += int(res.nit)
        return res

    def _decades(self, mu1, factor: float = 10.0) -> QROTResult:
        """The levels ``(t gamma, t eps)``, ``t = factor^k, ..., 1``, each from the previous potentials."""
        scale = getattr(self.cost, "max_abs", None)
        scale = float(np.abs(self.cost).max()) if scale is None else float(scale)
        k = max(1, int(np.ceil(np.log(max(scale, 1.0) / self.gamma) / np.log(factor))))
        x0 = None
        for t in factor ** np.arange(k, -1, -1.0):
            res = self._call(mu1, t * self.gamma, t * self.eps, x0, self.max_iter)
            x0 = (res.alpha, res.beta)
        return res  # the loop runs at least twice (k >= 1)

    def _adaptive(self, mu1, factor: float = 4.0, max_up: int = 8) -> QROTResult | None:
        """Raise gamma until a solve converges, then lower it back (None if that fails)."""
        start = None
        for k in range(1, max_up + 1):
            g = self.gamma * factor**k
            r = self._call(mu1, g, self.eps, self.warm, self.max_iter)
            if not r.success and self.warm is not None:
                r = self._call(mu1, g, self.eps, None, self.max_iter)
            if r.success:
                start = (g, r)
                break
        if start is None:
            return None
        g, r = start
        while g > self.gamma:  # a failed step is retried with a smaller factor
            g_try = max(g / factor, self.gamma)
            r_try = self._call(mu1, g_try, self.eps, (r.alpha, r.beta), self.max_iter)
            if r_try.success:
                g, r = g_try, r_try
            else:
                factor = np.sqrt(factor)
                if factor < 1.05:
                    return None
        return r

    def counters(self) -> dict:
        """The effort so far: ``lower_solves``, ``newton_iterations``, ``lower_failures``, ...

        Returns
        -------
        dict
            ``lower_solves`` (core calls), ``lower_requests`` (distinct marginals),
            ``newton_iterations``, ``lower_failures``, ``lower_continuations`` and
            ``lower_solve_time_s``.
        """
        return {"lower_solves": self.solves, "lower_requests": self.requests,
                "newton_iterations": self.newton_iterations, "lower_failures": self.failures,
                "lower_continuations": self.continuations, "lower_solve_time_s": round(self.solve_time, 3)}

    # -- names used before this class existed ----------------------------------
    @property
    def n_solves(self) -> int:
        """Alias of :attr:`solves` (the name of the control problems' counter)."""
        return self.solves


@_cite
class SmoothedLowerLevel(LowerLevel):
    """The map ``m -> pi = S_{gamma,eps}(T m, m2)`` and its adjoint (Part II, (BK^delta_gamma)).

    The lower level between the smoothed control ``T m`` (``T`` a
    :class:`~femot.fem.SmoothingOperator`, Part II (2.6), densities at the nodes of
    ``q1``) and a fixed density ``m2`` at the nodes of ``q2``, solved by the chain of
    :class:`LowerLevel` (adaptive continuation, no cache: the problems cache their last
    point themselves).

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
    tol : float, optional
        Residual tolerance of the core (default 1e-10).
    max_iter : int, optional
        Newton iterations per core call (default 200).
    solver_options : dict or None, optional
        Further keyword arguments of the core.

    Attributes
    ----------
    adjoint_time : float
        Wall time of the adjoint solves of :meth:`pullback` (seconds); the counters of
        :class:`LowerLevel` are inherited.
    """

    def __init__(self, q1, q2, T, m2, c, gamma: float, eps: float = 0.0, *, tol: float = 1e-10,
                 max_iter: int = 200, solver_options: dict | None = None):
        if T.shape[0] != q1.n:
            raise ValueError(f"T maps to {T.shape[0]} nodes, but q1 has {q1.n}")
        m2 = as_vector(m2, "m2", length=q2.n)
        if not hasattr(c, "evaluate"):  # a cost object (e.g. femot.GeometricCost) is kept as is
            c = np.asarray(c, dtype=float)
        if tuple(c.shape) != (q1.n, q2.n):
            raise ValueError(f"c has shape {c.shape}, expected {(q1.n, q2.n)}")
        super().__init__(c, m2, gamma, eps, w1=q1.weights, w2=q2.weights, tol=tol, max_iter=max_iter,
                         solver_options=solver_options, continuation="adaptive", cache_size=0)
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
        """Forget the warm start and set every counter (also the adjoint time) to zero."""
        super().reset()
        self.adjoint_time = 0.0

    def density(self, masses) -> np.ndarray:
        """``T m``: the smoothed control as a density at the nodes of ``q1``.

        Parameters
        ----------
        masses : array_like
            Control masses (length :attr:`n_controls`).
        """
        return self.T.apply(masses)

    def solve(self, masses) -> QROTResult:
        """The core's result at the control ``masses`` (the chain of :meth:`LowerLevel.solve` at ``T m``).

        Parameters
        ----------
        masses : array_like
            Control masses (length :attr:`n_controls`).
        """
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
        """:meth:`LowerLevel.counters` plus ``adjoint_time_s``."""
        out = super().counters()
        out["adjoint_time_s"] = round(self.adjoint_time, 3)
        return out


# --------------------------------------------------------------------------
# shared members of the problems with a control on mesh vertices
# --------------------------------------------------------------------------
#: Docstring entries the problems share (:func:`femot._docstrings.fill_doc`).
SHARED_DOCS = {
    "result_keys": """
The keys of the result convention (:data:`femot.problems.base.RESULT_KEYS`, described
in :class:`~femot.problems.base.UpperLevelResult`) and these extras:""",
    "lower_parameters": """
tol : float
    Residual tolerance of the lower-level core solver (default 1e-10).
max_iter : int
    Newton iterations per lower-level core call (default 200).
solver_options : dict, optional
    Further keyword arguments of :func:`femot.solve_qrot`.""",
    "start_parameters": """
x0 : array_like, optional
    Starting control (default :meth:`uniform`).
options : dict, optional
    Options of :func:`femot.optim.minimize_simplex`.""",
    "point_direction": """
x : array_like
    The point (masses on the admissible vertices).
v : array_like
    The direction.""",
    "solve_parameters": """
gamma : float
    Quadratic regularization.
delta : float
    Smoothing parameter.
x0 : array_like, optional
    Starting control (default uniform).
options : dict, optional
    Options of :func:`femot.optim.minimize_simplex`.
callback : callable, optional
    Passed to the optimizer.""",
}
shared_doc = fill_doc(**SHARED_DOCS)


class UniformStart:
    """The default start of a :class:`SimplexProblem` with unit weights: ``mass / n`` everywhere."""

    mass: float

    @property
    def n(self) -> int:
        """Number of simplex variables (set by the problem)."""
        raise NotImplementedError

    def uniform(self) -> np.ndarray:
        """The uniform point of the simplex, ``mass / n`` in every entry (the optimizer's default start)."""
        return np.full(self.n, self.mass / self.n)


class VertexControl(UniformStart):
    """The members that the control problems (:class:`~femot.problems.ControlProblem`,
    :class:`~femot.problems.TrackingProblem`) share: the control is a vector of masses on
    the admissible vertices of a mesh (a point of the standard simplex of mass ``mass``).

    A subclass sets ``control_vertices`` (indices of the admissible vertices),
    ``n_vertices`` (number of all vertices), ``mass``, ``_cache = None``, and provides
    ``evaluate(x) -> dict`` with the entries ``fun`` and ``grad``.
    """

    #: The simplex is the standard one (unit weights).
    weights: np.ndarray | None = None
    control_vertices: np.ndarray
    n_vertices: int
    mass: float
    _cache: tuple[np.ndarray, float, np.ndarray] | None

    def evaluate(self, x: np.ndarray, gradient: bool = True) -> dict:
        """Value and (optionally) a (sub)gradient of the reduced objective at ``x``; set by the subclass.

        Parameters
        ----------
        x : ndarray, shape (n,)
            Masses on the admissible vertices.
        gradient : bool, optional
            Also compute the (sub)gradient.  Default True.

        Returns
        -------
        dict
            At least ``fun`` (float, nan when the lower level fails) and ``grad``
            (ndarray of shape (n,), or None without ``gradient``).
        """
        raise NotImplementedError

    @staticmethod
    def control_radius(rho: float | None, delta: float) -> float:
        """The control radius ``rho`` (default ``delta``), checked against ``rho >= delta`` (Part II (3.1)).

        Parameters
        ----------
        rho : float or None
            Distance of the admissible control vertices from the boundary (None: ``delta``).
        delta : float
            The smoothing parameter (> 0).
        """
        r = delta if rho is None else check_positive_scalar(rho, "rho")
        if r < delta * (1 - 1e-12):
            raise ValueError(f"rho = {r:.4g} must be >= delta = {delta:.4g} (Part II (3.1))")
        return r

    @property
    def n(self) -> int:
        """Number of control variables (admissible vertices)."""
        return int(self.control_vertices.size)

    def full(self, x) -> np.ndarray:
        """Control masses on all vertices of the mesh (zero off the admissible ones).

        Parameters
        ----------
        x : array_like
            Masses on the admissible vertices (length :attr:`n`).
        """
        x = as_vector(x, "x", length=self.n)
        out = np.zeros(self.n_vertices)
        out[self.control_vertices] = x
        return out

    def __call__(self, x) -> tuple[float, np.ndarray]:
        """``(f, g)`` for :func:`femot.optim.minimize_simplex` (the last point is cached).

        Parameters
        ----------
        x : array_like
            Masses on the admissible vertices.
        """
        x = as_vector(x, "x", length=self.n)
        if self._cache is not None and np.array_equal(self._cache[0], x):
            return self._cache[1], self._cache[2].copy()
        e = self.evaluate(x)
        self._cache = (x.copy(), e["fun"], e["grad"].copy())
        return e["fun"], e["grad"]

    def _failed(self, res: QROTResult, fun: float, grad: np.ndarray | None) -> tuple[float, np.ndarray | None]:
        """``(fun, grad)``, or nan in both when the lower level ``res`` did not converge."""
        if res.success:
            return fun, grad
        return float("nan"), None if grad is None else np.full(self.n, np.nan)


# --------------------------------------------------------------------------
# the result convention
# --------------------------------------------------------------------------
@_cite
class UpperLevelResult(OptimizeResult):
    """Result of an upper-level solve: :data:`RESULT_KEYS` plus problem-specific extras.

    Attributes
    ----------
    x : numpy.ndarray
        The computed point of the simplex.
    fun : float
        The reduced objective at ``x``.
    nit : int
        Trust-region iterations (all continuation levels).
    success : bool
        The trust-region method converged AND the lower level at ``x`` converged.
    status : int
        The trust-region method's status code.
    message : str
        Why it stopped (with the lower level's message if that failed at ``x``).
    lower_solves : int
        Calls of the lower-level core solver (every warm, cold and continuation solve).
    newton_iterations : int
        Newton iterations of the lower level, summed over those calls.
    time_s : float
        Wall time (seconds).
    tr : femot.optim.SimplexTRResult
        The optimizer's result (iteration table: :meth:`table`).
    """

    def table(self) -> str:
        """The trust-region iteration table."""
        return self.tr.table()


def upper_level_result(cls: type[UpperLevelResult], tr: OptimizeResult, *, x, fun: float, lower_ok: bool,
                       lower_message: str, counters: dict, time_s: float, **extras) -> UpperLevelResult:
    """Build a result following the convention (:data:`RESULT_KEYS`) from the optimizer's result.

    Parameters
    ----------
    cls : type
        The result class (a subclass of :class:`UpperLevelResult`).
    tr : OptimizeResult
        The trust-region result (``nit``, ``success``, ``status``, ``message``).
    x : numpy.ndarray
        The solution point.
    fun : float
        The objective at ``x``.
    lower_ok : bool
        Whether the final lower-level solve at ``x`` converged.
    lower_message : str
        Its message (appended to ``message`` when it failed).
    counters : dict
        Lower-level effort; must hold ``lower_solves`` and ``newton_iterations``.
    time_s : float
        Wall time (seconds).
    **extras
        Problem-specific entries; names starting with ``_`` are refused.

    Returns
    -------
    UpperLevelResult
        An instance of ``cls``.
    """
    private = [k for k in list(extras) + list(counters) if k.startswith("_")]
    if private:
        raise ValueError(f"result entries must be public; got {private}")
    message = str(tr.message) if lower_ok else f"{tr.message} Lower level at the solution: {lower_message}"
    out = cls(x=x, fun=fun, nit=int(extras.pop("nit", tr.nit)), success=bool(tr.success and lower_ok),
              status=int(tr.status), message=message, time_s=float(time_s), tr=tr)
    out.update(counters)
    out.update(extras)
    missing = [k for k in RESULT_KEYS if k not in out]
    if missing:
        raise ValueError(f"counters: missing {missing}")
    return out


# --------------------------------------------------------------------------
# solving through the protocol
# --------------------------------------------------------------------------
_CONVEX_NEWTON_MINOR = 200


def _options_dict(options) -> dict:
    """The optimizer's options as a dict: a Mapping is copied, an options dataclass gives its fields."""
    if options is None:
        return {}
    if dataclasses.is_dataclass(options) and not isinstance(options, type):
        return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    if isinstance(options, Mapping):
        return dict(options)
    raise ValueError(f"options must be a Mapping or an options dataclass, got {type(options).__name__}")


@_cite
def solve_on_simplex(problem: SimplexProblem, x0=None, *, options=None, callback: Callable | None = None,
                     rtol: float | None = None, hessp: Callable | None = None,
                     collect_subgradients: Callable | None = None, convex: bool = False,
                     fw_rtol: float | None = None) -> OptimizeResult:
    """Run the trust-region method of Part III, Algorithm 4.1 on a :class:`SimplexProblem`.

    The one driver of every upper-level solve: minimizes ``problem(x)`` over
    ``{x >= 0, sum_i w_i x_i = problem.mass}`` with :func:`femot.optim.minimize_simplex`.
    With ``rtol``, the stationarity at the start, ``theta_R(x0)`` (Part III, (4.3)), is
    stored as ``theta0`` in the returned optimizer result (None without ``rtol``).

    Parameters
    ----------
    problem : SimplexProblem
        The reduced problem (the oracle ``problem(x) -> (f, g)``).
    x0 : array_like or None, optional
        Starting point on the simplex; None: the optimizer's uniform point
        (``problem.uniform()``).
    options : Mapping or options dataclass, optional
        Options of :func:`femot.optim.minimize_simplex`.
    callback : callable or None, optional
        Passed to the optimizer.
    rtol : float or None, optional
        Unless ``options`` set ``tol``: ``tol = rtol * theta_R(x0)``, a stopping test
        independent of the scaling of the objective (Part III, (4.3)).  None leaves ``tol``
        alone and skips the evaluation at ``x0`` before the run.
    hessp : callable or None, optional
        ``hessp(x, v)`` for the second-order model.
    collect_subgradients : callable or None, optional
        ``collect_subgradients(x, radius)``: further subgradients near ``x`` for the
        collective Bouligand model (Part III, Remark 4.2).
    convex : bool, optional
        Turn on the optimizer's Frank-Wolfe stop (a certified bound for convex f).
    fw_rtol : float or None, optional
        Relative tolerance of that stop, ``fw_gap <= fw_rtol |f|``.

    Returns
    -------
    femot.optim.SimplexTRResult
        The optimizer's result with ``theta0`` added.

    Raises
    ------
    RuntimeError
        With ``rtol``: when the objective is not finite at ``x0`` (the lower level failed
        there); without, the optimizer's ValueError.

    Examples
    --------
    >>> import numpy as np
    >>> class Quadratic:  # f(x) = |x - a|^2 / 2 on the simplex of mass 1
    ...     n, mass, weights = 3, 1.0, None
    ...     a = np.array([0.6, 0.3, 0.1])
    ...     def uniform(self):
    ...         return np.full(3, 1 / 3)
    ...     def full(self, x):
    ...         return x
    ...     def __call__(self, x):
    ...         return 0.5 * float((x - self.a) @ (x - self.a)), x - self.a
    >>> tr = solve_on_simplex(Quadratic(), options={"tol": 1e-10})
    >>> print([round(float(v), 4) for v in tr.x], bool(tr.success))
    [0.6, 0.3, 0.1] True
    """
    weights = getattr(problem, "weights", None)
    opts = _options_dict(options)
    start = None if x0 is None else as_vector(x0, "x0", length=problem.n)
    theta0 = None
    if rtol is not None:
        # x0 None reaches the optimizer as None: its uniform point is problem.uniform() bit for bit
        x = problem.uniform() if start is None else start
        f0, g0 = problem(x)
        if not (np.isfinite(f0) and np.all(np.isfinite(g0))):
            raise RuntimeError("the objective is not finite at x0 (the lower level failed there)")
        theta0 = float(theta_R(x, g0, weights=weights, mass=problem.mass))
        if "tol" not in opts:
            opts["tol"] = check_positive_scalar(rtol, "rtol") * theta0
    if convex:
        opts.setdefault("convex", True)
        if fw_rtol is not None:
            opts.setdefault("fw_rtol", check_positive_scalar(fw_rtol, "fw_rtol"))
        if hessp is not None:
            # convex f with the exact Hessian: let the projected Newton step change as many
            # faces as it needs (it stops when no new bound is hit); with the default cap the
            # model is exact (rho ~ 1) but the steps stop short and the iterations grow with
            # the number of control vertices on the boundary of the optimal support
            opts.setdefault("newton_minor", _CONVEX_NEWTON_MINOR)
    tr = minimize_simplex(problem, start, weights=weights, n=problem.n, mass=problem.mass, options=opts,
                          callback=callback, hessp=hessp, collect_subgradients=collect_subgradients)
    tr["theta0"] = theta0
    return tr
