"""What the upper-level problems share: the protocol, the result convention, the one driver.

Every upper-level problem of femot is a reduced problem over a simplex,
``min_{x in S} J(S_{gamma,eps}(T x, mu2), x)`` (docs/problems.md, "One shape for the
problems"): :class:`SimplexProblem` is what the trust-region method of Part III,
Algorithm 4.1 needs from it, :class:`UpperLevelResult` what a solve returns, and
:func:`solve_on_simplex` the one driver every ``solve()`` goes through.

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
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

import numpy as np
from scipy.optimize import OptimizeResult

from femot._docstrings import cite, fill_doc
from femot._validation import as_vector, check_positive_scalar
from femot.core import QROTResult
from femot.optim import minimize_simplex, theta_R

__all__ = [
    "SimplexProblem", "SecondOrderProblem", "UpperLevelResult", "RESULT_KEYS", "upper_level_result",
    "solve_on_simplex", "VertexControl", "UniformStart", "SHARED_DOCS", "shared_doc",
]

#: Keys every upper-level result carries (:func:`upper_level_result`).
RESULT_KEYS = ("x", "fun", "nit", "success", "status", "message", "lower_solves", "newton_iterations", "time_s")

#: Appends the References section (the four papers in full) to a docstring.
_cite = cite("I", "II", "III", "LMM")
#: The example of both protocols: an identification problem satisfies them.
_protocol_doc = fill_doc(protocol_example="""
>>> from femot.problems import identification_instance, problem_from_instance
>>> problem = problem_from_instance(identification_instance(5, seed=0), gamma=1e-2)
>>> isinstance(problem, SimplexProblem), isinstance(problem, SecondOrderProblem)
(True, True)
""")


# --------------------------------------------------------------------------
# the protocol
# --------------------------------------------------------------------------
@runtime_checkable
@_cite
@_protocol_doc
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

    Examples
    --------
    %(protocol_example)s
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

    def solve(self, x0: np.ndarray | None = None, *, options=None, callback: Callable | None = None) -> OptimizeResult:
        """Minimize over the simplex through :func:`solve_on_simplex`; a result with the keys :data:`RESULT_KEYS`.

        Implementations may take further (problem-specific) keyword arguments with defaults.

        Parameters
        ----------
        x0 : ndarray, shape (n,), optional
            Starting point on the simplex; default :meth:`uniform`.
        options : Mapping or options dataclass, optional
            Options of :func:`femot.optim.minimize_simplex`.
        callback : callable, optional
            Passed to the optimizer.

        Returns
        -------
        scipy.optimize.OptimizeResult
            At least the keys of :data:`RESULT_KEYS` (success, status, message, ...).
        """


@runtime_checkable
@_cite
@_protocol_doc
class SecondOrderProblem(SimplexProblem, Protocol):
    """A :class:`SimplexProblem` with Hessian-vector products (the optional member).

    ``hessp(x, v)`` is the Hessian of the reduced objective at ``x`` applied to ``v``
    where it is twice differentiable (an element of the generalized Hessian at a kink);
    it is called right after ``problem(x)``, so an implementation may reuse that
    evaluation's lower-level solution.

    Examples
    --------
    %(protocol_example)s
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
# shared members of the problems with a control on mesh vertices
# --------------------------------------------------------------------------
#: Docstring entries the problems share (:func:`femot._docstrings.fill_doc`).
SHARED_DOCS = {
    "result_keys": """
The keys of the result convention (:data:`femot.problems.protocol.RESULT_KEYS`, described
in :class:`~femot.problems.UpperLevelResult`) and these extras:""",
    "lower_parameters": """
qrot_options : Mapping or options dataclass, optional
    Options of the lower level's :func:`femot.solve_qrot` (default ``tol=1e-10``,
    ``max_iter=200``, :data:`femot.problems.plan_maps.QROT_DEFAULTS`).""",
    "start_parameters": """
x0 : array_like, optional
    Starting control (default :meth:`uniform`).
options : Mapping or options dataclass, optional
    Options of :func:`femot.optim.minimize_simplex`.""",
    "point_direction": """
x : array_like
    The point (masses on the admissible vertices).
v : array_like
    The direction.""",
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

    Examples
    --------
    >>> from femot.problems import identification_instance, problem_from_instance
    >>> problem = problem_from_instance(identification_instance(5, seed=0), gamma=1e-2)
    >>> res = problem.solve(model="bfgs")
    >>> isinstance(res, UpperLevelResult), all(k in res for k in RESULT_KEYS)
    (True, True)
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


def _options_dict(options, name: str = "options") -> dict:
    """Options as a dict: a Mapping is copied, an options dataclass (femot.optim's, femot.core's) gives its fields."""
    if options is None:
        return {}
    if dataclasses.is_dataclass(options) and not isinstance(options, type):
        return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    if isinstance(options, Mapping):
        return dict(options)
    raise ValueError(f"{name} must be a Mapping or an options dataclass, got {type(options).__name__}")


@_cite
def solve_on_simplex(problem: SimplexProblem, x0=None, *, options=None, callback: Callable | None = None,
                     rtol: float | None = None, hessp: Callable | None = None,
                     collect_subgradients: Callable | None = None, convex: bool = False,
                     fw_rtol: float | None = None, method: str = "trust-region") -> OptimizeResult:
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
    tr = minimize_simplex(problem, start, method=method, weights=weights, n=problem.n, mass=problem.mass,
                          options=opts, callback=callback, hessp=hessp, collect_subgradients=collect_subgradients)
    tr["theta0"] = theta0
    return tr
