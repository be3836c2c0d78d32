"""Wasserstein-regularized elliptic control (Part II, Section 3.2.2): the regularized problem (OCP^delta_gamma).

The plan formulation of Part II and the convex value formulation, over control masses on the
admissible vertices of a mesh; docs/problems.md (sections 3 and 5c) gives the discretization,
the reduced gradient and the choice between the formulations.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from functools import partial

import numpy as np
import scipy.sparse as sp

from femot._docstrings import cite, fill_doc
from femot._validation import as_vector, check_nonnegative_scalar, check_positive_scalar
from femot.fem import Smoother, product_cost, quadrature
from femot.fem.meshes import admissible_vertices
from femot.fem.smoothing import RESOLUTION_RATIO, mesh_spacing, resolution_problem
from femot.optim import TrustRegionOptions
from femot.problems.control_exact import exact_fields
from femot.problems.control_reference import (
    _CONTROL_DATA,
    _as_operator,
    _state_blocks,
    _target,
    _tracking_inverse,
    control_objective,
)
from femot.problems.control_size import MATRIX_FREE_PAIRS, _plan_nnz, estimate_size
from femot.problems.plan_maps import ControlToPlan
from femot.problems.protocol import SHARED_DOCS, UpperLevelResult, VertexControl, solve_on_simplex, upper_level_result

__all__ = ["ControlProblem", "ControlResult", "FORMULATIONS", "EXACT_KEYS", "PATH_GAMMA_HAT", "PATH_FW_RTOL",
           "PRECOND_SHIFT", "MATRIX_FREE_PAIRS", "estimate_size"]

# the shared docstring entries and the one example of the result and the problem classes
_doc = fill_doc(**SHARED_DOCS, solved_control=_CONTROL_DATA + """>>> from femot.problems import ControlProblem
>>> problem = ControlProblem(op, np.zeros(9), mu2, 0.1, 1e-2, 0.25, rho=0.25, transport="value",
...                          check_resolution=False)
>>> res = problem.solve()
>>> print(problem.n, type(res).__name__, bool(res.success), f"{res.fun:.5f}")
5 ControlResult True 0.01100
""")

#: Formulations of the transport term of :class:`ControlProblem`.
FORMULATIONS = ("plan", "value")


# --------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------

@cite()
@_doc
class ControlResult(UpperLevelResult):
    """Solution of the discrete (OCP^delta_gamma) by the trust-region method.

    %(result_keys)s

    Attributes
    ----------
    x : numpy.ndarray
        Control masses on the admissible vertices (the simplex variable).
    masses : numpy.ndarray
        The same on all vertices of the state mesh (zero elsewhere).
    control_vertices : numpy.ndarray
        Indices of the admissible vertices.
    y : numpy.ndarray
        The state ``G m`` (nodal vector).
    formulation : str
        ``"plan"`` (OCP^delta_gamma of Part II) or ``"value"`` (the convex value
        formulation), see :class:`ControlProblem`.
    fun, tracking, transport : float
        Objective ``tracking + nu * transport`` at x; ``transport`` is
        ``sum_ij w_i w_j c_ij pi_ij`` (plan) or the regularized optimal value ``V`` (value).
    transport_cost : float
        ``sum_ij w_i w_j c_ij pi_ij`` of the regularized plan (both formulations).
    fw_gap : float or None
        Frank-Wolfe gap ``<g, x> - mass * min_i g_i`` at x (``"value"`` only; for the
        convex value formulation it bounds ``fun - min f``); ``None`` for ``"plan"``.
    relative_stationarity : float
        Final ``theta_R`` over ``theta_R`` at the start.
    stationarity, theta0, tol : float
        Final stationarity measure of the trust region, its value at the start, the
        tolerance used.
    plan : scipy.sparse.csr_matrix
        Density of pi on the transport quadrature.
    mu1_density, mu2_density : numpy.ndarray
        The smoothed marginals ``T^delta mu1``, ``T^delta mu2^d``.
    lower : QROTResult
        The core's result at x.
    success, status, message, nit
        Of the trust-region method (``nit`` steps); success also requires a converged
        lower level at x.
    nfev, nhev : int
        Oracle calls and Hessian-vector products (0 when the optimizer takes none).
    lower_solves, lower_requests, newton_iterations, lower_failures
        Lower-level effort (:meth:`femot.problems.MarginalToPlan.counters`);
        ``lower_solve_time_s``, ``adjoint_time_s`` its wall times.
    tr : femot.optim.SimplexTRResult
        The optimizer's result; ``time_s`` the wall time.
    gamma, delta, nu : float
        The problem's parameters.
    gamma_levels : list of dict
        With a gamma path (:meth:`ControlProblem.solve`): per level gamma, success, nit, nhev, fun,
        time and lower-level counters (included in the totals above).
    exact_fun, exact_transport, exact_method
        The exact (OCP) objective of the control and its ``W_beta^beta``
        (:func:`femot.problems.control_exact.exact_fields`).  Computed on first access
        (attribute or ``[]``; an exact transport LP can cost as much as the solve), then stored
        as ordinary keys; copying (pickling) or :meth:`exact` computes them too.

    Examples
    --------
    %(solved_control)s
    """

    def __missing__(self, key):
        # the exact fields on demand (dict.__getitem__ calls this for absent keys)
        if key in EXACT_KEYS and self.__dict__.get("_exact_of") is not None:
            self.exact()
            return dict.__getitem__(self, key)
        raise KeyError(key)

    def exact(self) -> dict:
        """The exact fields ``exact_fun, exact_transport, exact_method`` (computed now if still pending)."""
        pending = self.__dict__.pop("_exact_of", None)
        if pending is not None:
            self.update(pending())
        return {k: dict.get(self, k) for k in EXACT_KEYS}

    def __getstate__(self):
        self.exact()  # a copy carries the values, not the problem they are computed from
        return {}


#: The fields of a :class:`ControlResult` computed on first access.
EXACT_KEYS = ("exact_fun", "exact_transport", "exact_method")


# --------------------------------------------------------------------------
# the problem
# --------------------------------------------------------------------------

@cite()
@_doc
class ControlProblem(VertexControl):
    """The discrete regularized control problem of Part II, plan or value formulation.

    ``transport="plan"`` (default, Part II (OCP^delta_gamma))::

        f(m) = 1/2 |G m - y_d|^2_{L2} + nu sum_ij w_i w_j c_ij pi_ij,
        pi = S_{gamma,eps}(T^delta m, T^delta mu2^d);

    ``transport="value"`` (the convex value formulation, docs/problems.md)::

        f(m) = 1/2 |G m - y_d|^2_{L2} + nu V(T^delta m, T^delta mu2^d),
        V(mu1, mu2) = min_pi sum_ij w_i w_j (c_ij pi_ij + gamma/2 pi_ij^2)  (eps = 0)
                    = max_{alpha, beta} Phi(alpha, beta)                     (any eps >= 0),

    with Phi the (doubly) regularized dual objective of Part III (3.1) (weighted); both over
    control masses ``m >= 0`` on the admissible vertices with ``sum m = |mu2^d|``.

    The value formulation is convex with a Frank-Wolfe certificate and has the same limit
    problem (OCP); :meth:`hessp` is exact almost everywhere (docs/problems.md, section 5c).

    Parameters
    ----------
    poisson : PoissonOperator or skfem.Mesh
        State operator ``G`` on Omega_* (a P1 operator is built from a mesh).
    y_d : nodal vector or callable
        Desired state (see ``PoissonOperator.target``).
    mu2 : ndarray
        Masses of the prior ``mu2^d`` at ``target_points`` (default: the vertices of the
        state mesh).  Its support must keep distance >= delta from the boundary.
    nu : float
        Weight of the transport term (>= 0).
    gamma, delta : float
        Quadratic regularization and smoothing parameter (Part II (2.6), (3.1)).
    beta : float
        Cost exponent, ``c_d = |x1 - x2|^beta`` (Part II (3.14)); > 1 in the paper.
    rho : float, optional
        Admissible controls live on vertices with distance >= rho to the boundary;
        default ``delta``.  Part II (3.1) requires ``delta <= rho``.
    eps : float
        Dual regularization of the core (Part III (3.1)); 0 is the plain problem.
    transport : {"plan", "value"}
        Formulation of the transport term (see above); default "plan".
    transport_mesh : skfem mesh, optional
        Mesh of Omega_* whose vertices (lumped weights) carry the transport;
        default: the state mesh.  A coarser mesh keeps the lower level small.
    control_vertices : array of int, optional
        Vertices of the state mesh that carry the control (default: all vertices at
        distance >= rho from the boundary); each must be admissible.
    target_points : ndarray, optional
        Points carrying the masses ``mu2`` (default: the vertices of the state mesh).
    enlarge : bool
        Smooth and transport on the enlarged domain of Part II, Lemma 2.4: the bounding box
        of Omega enlarged by delta, meshed uniformly with the transport mesh's spacing (made
        to divide delta; :meth:`femot.fem.Quadrature.enlarged`), the measures extended by zero.  Then
        ``mu2`` and the controls may touch the boundary: ``rho`` defaults to 0 (controls on
        all vertices) and need not be >= delta.  Default False.
    matrix_free : bool or None
        Use a :class:`femot.GeometricCost` (``c_ij`` computed inside the core's passes,
        O(n_q) memory) instead of a dense ``n_q x n_q`` cost.  None (default): matrix-free
        above :data:`MATRIX_FREE_PAIRS` transport pairs.  Both give the same plan.
    check_resolution : bool
        Refuse (ValueError naming h, delta and the fix) a delta that the transport mesh does
        not resolve, ``h > delta / 4`` with h its node spacing
        (:func:`femot.fem.smoothing.mesh_spacing`).  Default True.
    %(lower_parameters)s

    Notes
    -----
    The problem satisfies :class:`femot.problems.SecondOrderProblem`; its lower level
    is the shared driver :class:`femot.problems.ControlToPlan` (attribute
    ``lower``; ``lower.warm`` is the public warm-start state).

    Examples
    --------
    %(solved_control)s
    """

    def __init__(self, poisson, y_d, mu2, nu: float, gamma: float, delta: float, *, beta: float = 2.0,
                 rho: float | None = None, eps: float = 0.0, target_points=None, transport_mesh=None,
                 control_vertices=None, transport: str = "plan", enlarge: bool = False,
                 matrix_free: bool | None = None, check_resolution: bool = True, qrot_options=None):
        if transport not in FORMULATIONS:
            raise ValueError(f"transport must be one of {FORMULATIONS}, got {transport!r}")
        self.formulation = transport
        self.op = _as_operator(poisson)
        self.nu = check_nonnegative_scalar(nu, "nu")
        self.gamma = check_positive_scalar(gamma, "gamma")
        self.delta = check_positive_scalar(delta, "delta")
        self.beta = check_positive_scalar(beta, "beta")
        if self.beta < 1:
            raise ValueError(f"beta must be >= 1, got {beta!r}")
        self.enlarge = bool(enlarge)
        if self.enlarge:
            # Part II Lemma 2.4: smoothing on Omega + B(0, delta) needs no distance to the boundary
            self.rho = 0.0 if rho is None else check_nonnegative_scalar(rho, "rho")
        else:
            self.rho = self.control_radius(rho, self.delta)
        self.eps = check_nonnegative_scalar(eps, "eps")
        self.target_points, self.mu2 = _target(self.op, mu2, target_points)
        self._target_arg = target_points
        self.mass = float(self.mu2.sum())
        self.y_d = y_d
        self._bd, self._cd = self.op.target(y_d)
        adm = admissible_vertices(self.op.mesh, self.rho)
        if control_vertices is None:
            self.control_vertices = adm
        else:
            cv = np.unique(np.asarray(control_vertices, dtype=np.int64).ravel())
            if cv.size == 0 or cv.min() < 0 or cv.max() >= self.op.nvertices:
                raise ValueError(f"control_vertices must be vertex indices in [0, {self.op.nvertices})")
            bad = np.setdiff1d(cv, adm)
            if bad.size:
                raise ValueError(f"control_vertices: vertex {bad[0]} is closer than rho = {self.rho:.4g} to the "
                                 f"boundary (Part II (OCP): dist(supp mu1, boundary) >= rho)")
            self.control_vertices = cv
        self.n_vertices = int(self.op.nvertices)
        self.x1 = self.op.vertices[self.control_vertices]

        tm = self.op.mesh if transport_mesh is None else transport_mesh
        #: node spacing of the transport mesh (:func:`femot.fem.smoothing.mesh_spacing`)
        self.h_transport = mesh_spacing(tm)
        if check_resolution:
            self._check_resolution(transport_mesh is None)
        self.q = quadrature(tm)
        if self.enlarge:
            # the box Omega + B(0, delta), with a spacing <= the transport mesh's that divides delta
            # (so that a grid aligned with Omega stays aligned)
            self.q = self.q.enlarged(self.delta, self.delta / np.ceil(self.delta / self.h_transport - 1e-9))
        smoother = Smoother(self.q, self.delta)
        # Both smoothed marginals carry the discrete mass |mu2| + delta (equal masses).
        self.T = smoother.operator(sources=self.x1, mass=self.mass)
        pos = self.mu2 > 0
        T2 = smoother.operator(sources=self.target_points[pos], mass=self.mass)
        self.mu2_density = T2.apply(self.mu2[pos])
        pairs = float(self.q.n) ** 2
        self.matrix_free = pairs > MATRIX_FREE_PAIRS if matrix_free is None else bool(matrix_free)
        # matrix-free: c_ij = |x_i - x_j|^beta computed inside the core's passes (O(n) memory)
        self.c = product_cost(self.q, self.q, self.beta, matrix_free=self.matrix_free)
        # <G, pi> = nu sum_ij w_i w_j c_ij pi_ij: the plan term as an entrywise pairing (lazy, dense cost only)
        self._G = None
        self.lower = ControlToPlan(self.q, self.q, self.T, self.mu2_density, self.c, self.gamma, self.eps,
                                   qrot_options=qrot_options)
        self.n_evaluations = self.n_hessp = 0
        self.last: dict | None = None
        self._last_x: np.ndarray | None = None
        self._cache = None
        self._evaluations: OrderedDict[bytes, dict] = OrderedDict()
        self._state_blocks: tuple | None = None  # K, M, controls on the interior dofs (preconditioner)
        self._sigma: tuple | None = None  # (x bytes, shifts) of the last preconditioner

    # ----------------------------------------------------------- helpers
    def _check_resolution(self, state_mesh: bool) -> None:
        """ValueError naming h, delta and the fix when the transport mesh does not resolve delta."""
        msg = resolution_problem(self.h_transport, self.delta,
                                 what="delta on the " + ("state mesh (the transport mesh by default)"
                                                         if state_mesh else "transport_mesh"))
        if msg is not None:
            fine = self.delta / RESOLUTION_RATIO
            raise ValueError(f"{msg} (h = node spacing, femot.fem.smoothing.mesh_spacing). Fix: pass "
                             f"transport_mesh= a mesh of Omega with spacing <= {fine:.4g} (the transport "
                             f"need not live on the state mesh), or delta >= {RESOLUTION_RATIO * self.h_transport:.4g}"
                             f"; check_resolution=False proceeds anyway (T^delta is then a mesh artefact and "
                             f"the lower level may stall)")

    def state(self, x) -> np.ndarray:
        """The state ``y = G m`` (nodal vector).

        Parameters
        ----------
        x : array_like
            Masses on the admissible vertices.
        """
        return self.op.state(self.full(x))

    def tracking(self, x) -> tuple[float, np.ndarray, np.ndarray]:
        """``1/2 |G m - y_d|^2_{L2}``, its gradient w.r.t. x (adjoint Poisson solve) and the state.

        Parameters
        ----------
        x : array_like
            Masses on the admissible vertices.
        """
        y = self.state(x)
        My = self.op.M @ y
        val = 0.5 * float(y @ My) - float(self._bd @ y) + 0.5 * self._cd
        grad = self.op.state_adjoint(My - self._bd)[self.control_vertices]
        return val, grad, y

    def tracking_hessp(self, v) -> np.ndarray:
        """``G^T M G v``: the (exact, constant) Hessian of the tracking term times v (two Poisson solves).

        Parameters
        ----------
        v : array_like
            A direction (length :attr:`n`).
        """
        v = as_vector(v, "v", length=self.n)
        y = self.state(v)
        return self.op.state_adjoint(self.op.M @ y)[self.control_vertices]

    # ----------------------------------------------------------- the oracle
    def evaluate(self, x, gradient: bool = True) -> dict:
        """Value, parts and (optionally) the reduced gradient at the control ``x``.

        Returns a dict with fun, tracking, transport (the transport term of the formulation:
        ``<c, pi>`` for "plan", ``V`` for "value"), transport_cost (``<c, pi>``), grad (or
        None), y, lower (core result).  A lower level that does not converge gives
        fun = nan (never a silent failure).

        Parameters
        ----------
        x : array_like
            Masses on the admissible vertices.
        gradient : bool
            Also compute the reduced gradient (one adjoint solve).
        """
        x = as_vector(x, "x", length=self.n)
        self.n_evaluations += 1
        tr, g_tr, y = self.tracking(x)
        res = self.lower.solve(x)
        cost = res.transport_cost()
        value = self.formulation == "value"
        term = res.dual_value(self.lower.density(x), self.mu2_density) if value else cost
        fun = tr + self.nu * term
        grad = None
        if gradient:
            if self.nu == 0:
                grad = g_tr
            elif value:
                # envelope theorem: grad_mu1 V = w alpha (Euclidean gradient w.r.t. the density)
                grad = g_tr + self.nu * self.T.transpose(self.q.weights * res.alpha)
            else:
                grad = g_tr + self.lower.pullback(res, self._plan_pairing(res))
        fun, grad = self._failed(res, fun, grad)
        out = {"fun": fun, "tracking": tr, "transport": term, "transport_cost": cost, "grad": grad, "y": y,
               "lower": res}
        self.last = out
        self._last_x = x.copy()
        if grad is not None:  # the optimizer's points, so that the result reports what it saw
            self._evaluations[x.tobytes()] = out
            while len(self._evaluations) > 4:
                self._evaluations.popitem(last=False)
            for older in list(self._evaluations.values())[:-2]:  # LUs of dual_jvp: GBs at 66k nodes
                older["lower"].__dict__.pop("_dual_cache", None)
        return out

    def _plan_pairing(self, res):
        """``G_ij = nu w_i w_j c_ij``: the plan term as an entrywise pairing.

        Dense cost: the full matrix (built on first use).  Matrix-free: only the entries on
        the support of the plan of ``res``, the only ones the adjoint reads.
        """
        w = self.q.weights
        if self.matrix_free:
            P = res.plan.tocoo()
            vals = self.nu * w[P.row] * w[P.col] * self.c.entries(P.row, P.col)
            return sp.csr_matrix((vals, (P.row, P.col)), shape=P.shape)
        if self._G is None:
            self._G = self.nu * (w[:, None] * self.c * w[None, :])
        return self._G

    @_doc
    def hessp(self, x, v) -> np.ndarray:
        """Hessian-vector product of the reduced objective at ``x`` (docs/problems.md).

        * tracking: ``G^T M G v`` (exact; two Poisson solves);
        * "value": plus ``nu (T^delta)^T W dalpha(T^delta v)`` with ``dalpha`` from
          :meth:`femot.QROTResult.dual_jvp` (one sparse solve with the Newton matrix at the
          lower-level solution at x; the Hessian wherever the active set is locally
          constant, a generalized Hessian element otherwise).  For eps = 0 the value term is
          defined on equal masses only: its product is taken on the tangent space of the
          simplex, ``P H P v`` with ``P v = v - mean(v)``.
        * "plan": the transport term ``<c, pi>`` is piecewise linear in m (see the class
          docstring), so its Hessian is zero wherever pi is differentiable: the tracking
          Hessian alone.

        The lower-level solution of the last evaluation is reused when ``x`` is that point
        (the optimizer calls ``hessp`` right after ``fun(x)``); otherwise x is evaluated.

        Parameters
        ----------
        %(point_direction)s
        """
        x = as_vector(x, "x", length=self.n)
        v = as_vector(v, "v", length=self.n)
        self.n_hessp += 1
        hv = self.tracking_hessp(v)
        if self.formulation != "value" or self.nu == 0:
            return hv
        return hv + self.value_term_hessp(x, v)

    def value_term_hessp(self, x, v) -> np.ndarray:
        """``nu (T^delta)^T W dalpha(T^delta v)``: the Hessian of the value term ``nu V_gamma`` at x times v.

        For the plan formulation this is the curvature that ``nu <c, pi>`` accumulates over
        its many small affine pieces (on each piece its own Hessian is zero); :meth:`solve`
        passes a multiple of it to the optimizer as the damping metric of its bundle step.

        Parameters
        ----------
        x : array_like, shape (n,)
            Masses on the admissible vertices (re-evaluated unless it is the last evaluated point).
        v : array_like, shape (n,)
            Direction.

        Returns
        -------
        ndarray, shape (n,)
            The product; all NaN if the lower level at ``x`` did not converge.

        Raises
        ------
        ValueError
            If ``x`` or ``v`` does not have length ``n``.
        """
        x = as_vector(x, "x", length=self.n)
        v = as_vector(v, "v", length=self.n)
        last = self.last
        if last is None or self._last_x is None or not np.array_equal(self._last_x, x):
            last = self.evaluate(x, gradient=False)
        res = last["lower"]
        if not res.success:
            return np.full(self.n, np.nan)
        flat = self.eps == 0
        vt = v - v.mean() if flat else v
        dalpha, _ = res.dual_jvp(self.T.apply(vt), np.zeros(self.q.n))
        hv_value = self.nu * self.T.transpose(self.q.weights * dalpha)
        if flat:
            hv_value -= hv_value.mean()
        return hv_value

    @fill_doc(control_data=_CONTROL_DATA + ">>> from femot.problems import ControlProblem\n")
    def hessian_preconditioner(self, x, free):
        """``M ~ (H_FF)^{-1}``: the tracking Hessian plus a diagonal ``Sigma`` on the free controls, inverted exactly.

        ``H = G^T M G + V`` (tracking plus value term) is a sum of smoothing operators whose
        spectra decay under refinement.  ``G^T M G + Sigma`` on the free controls F is inverted
        through the sparse state and adjoint equations (one LU of order 2 N per call, N interior
        dofs; docs/problems.md, section 5c).  ``Sigma`` stands in for V: its mean diagonal (one
        product with a fixed random sign vector, cached per x) on controls the state does not see
        (boundary vertices), :data:`PRECOND_SHIFT` times it on the others (0: the tracking alone),
        at least ``1e-6`` times the tracking's; :meth:`solve` passes it as ``precond`` (value formulation).

        Parameters
        ----------
        x : array_like, shape (n,)
            The current control.
        free : array_like of bool, shape (n,)
            The free coordinates (the CG face).

        Returns
        -------
        callable
            ``v -> M v`` for vectors of length n (entries off ``free`` are ignored and returned as 0).

        Examples
        --------
        %(control_data)s
        >>> P = ControlProblem(op, np.zeros(9), mu2, 0.1, 1e-2, 0.25, rho=0.25, transport="value",
        ...                    check_resolution=False)
        >>> x, e = P.uniform(), np.eye(P.n)
        >>> Hv = P.hessp(x, e[0] - e[1])
        >>> Mv = P.hessian_preconditioner(x, np.ones(P.n, dtype=bool))(Hv)
        >>> bool(Hv @ Mv > 0), Mv.shape  # positive definite
        (True, (5,))
        """
        x = as_vector(x, "x", length=self.n)
        free = np.asarray(free, dtype=bool).reshape(-1)
        if free.shape != (self.n,):
            raise ValueError(f"free must be a boolean mask of length {self.n}")
        return _tracking_inverse(self._blocks(), free, self._precond_sigma(x))

    def _blocks(self) -> tuple:
        """K, M and the controls on the interior dofs (built once, for the preconditioner)."""
        self._state_blocks = self._state_blocks or _state_blocks(self.op, self.control_vertices)
        return self._state_blocks

    def _precond_sigma(self, x) -> np.ndarray:
        """The diagonal shift per control: V's mean diagonal where the state ignores the control, else
        PRECOND_SHIFT times it (both at least 1e-6 times the tracking's mean diagonal)."""
        if self._sigma is not None and self._sigma[0] == x.tobytes():
            return self._sigma[1]
        v = np.where(np.random.default_rng(0).random(self.n) < 0.5, -1.0, 1.0)
        t = float(v @ self.tracking_hessp(v)) / self.n
        val = float(v @ self.value_term_hessp(x, v)) / self.n if self.nu > 0 else 0.0
        val = val if val > 1e-300 else 1e-300  # (also NaN)
        seen = np.diff(self._blocks()[2].indptr) > 0  # controls on interior dofs
        sigma = np.where(seen, max(PRECOND_SHIFT * val, 1e-6 * t), max(val, 1e-6 * t))
        self._sigma = (x.tobytes(), sigma)
        return sigma

    def frank_wolfe_gap(self, x, g=None) -> float:
        """``<g, x> - mass * min_i g_i``: for the convex value formulation a bound on f(x) - min f.

        Parameters
        ----------
        x : array_like
            The point.
        g : array_like, optional
            The gradient at x (evaluated if None).
        """
        x = as_vector(x, "x", length=self.n)
        if g is None:
            g = self.evaluate(x)["grad"]
        return float(g @ x - self.mass * g.min())

    def exact_objective(self, x):
        """The unregularized objective of (OCP) at the control x: ``(fun, tracking, W_beta^beta)``.

        Exact transport (monotone rearrangement in 1D, LP otherwise); see
        :func:`femot.problems.control_reference.control_objective`.

        Parameters
        ----------
        x : array_like
            Masses on the admissible vertices.
        """
        return control_objective(self.op, self.full(x), self.y_d, self.mu2, self.nu,
                                 target_points=self._target_arg, beta=self.beta)

    # ----------------------------------------------------------- solve
    @_doc
    def solve(self, x0=None, *, options: dict | None = None, rtol: float | None = 1e-5, fw_rtol: float = 1e-8,
              hessian: bool = True, callback=None, method: str | None = None,
              gamma_path="auto") -> ControlResult:
        """Minimize over the simplex by the trust-region method (Part III Algorithm 4.1).

        Starts from the uniform control unless ``x0`` is given.  ``options`` go to
        :func:`femot.optim.minimize_simplex`.  Unless they set ``tol``, the stationarity
        tolerance is relative: ``tol = rtol * theta(x0)`` (theta_R of Part III at the
        start), which makes the stopping test independent of the scaling of y_d and nu.
        With ``hessian`` the exact Hessian-vector products of :meth:`hessp` are passed to
        the optimizer (when it accepts them).  For the convex value formulation the
        optimizer also stops on the Frank-Wolfe gap, ``fw_gap <= fw_rtol * |f|`` (options
        ``convex``/``fw_rtol``, unless ``options`` set them), a certified bound on
        ``f - min f``.

        Parameters
        ----------
        %(start_parameters)s
        rtol : float or None
            Relative stationarity tolerance (see above); 1e-5 here, 1e-2 for
            :meth:`femot.problems.TrackingProblem.solve` (docs/problems.md, "Relative tolerances").
        fw_rtol : float
            Relative Frank-Wolfe tolerance of the value formulation.
        hessian : bool
            Pass :meth:`hessp` to the optimizer.
        callback : callable, optional
            Passed to the optimizer.
        method : {None, "trust-region", "bundle"}
            The optimizer's method (:func:`femot.optim.minimize_simplex`); None: the bundle
            method of quadratic cuts for the plan formulation with ``hessian`` and nu > 0
            (tracking term plus a piecewise linear plan term), Algorithm 4.1 otherwise.
        gamma_path : "auto", sequence of float or None
            Value formulation: first solve at these larger gammas (decreasing; to ``PATH_FW_RTOL``
            if larger than ``fw_rtol``), each level from the previous control and potentials.
            "auto": :meth:`gamma_path`; None: none.  Counters include the levels (``gamma_levels``).

        Returns
        -------
        ControlResult
            The result convention of :func:`femot.problems.protocol.upper_level_result`.
        """
        path = self.gamma_path() if isinstance(gamma_path, str) and gamma_path == "auto" else list(gamma_path or ())
        if self.formulation != "value" or not path:
            return self._solve_one(x0, options, rtol, fw_rtol, hessian, callback, method)
        base, levels, effort = self.lower, [], []
        x, warm, g_prev = x0, base.warm, None
        try:
            for g in path:
                self.gamma = float(g)
                self.lower = base.with_regularization(self.gamma)
                self.lower.warm = warm if g_prev is None else self.lower.carry(self.T.apply(x), warm, g_prev)
                r = self._solve_one(x, options, rtol, max(fw_rtol, PATH_FW_RTOL), hessian, callback, method)
                levels.append({"gamma": self.gamma, "success": bool(r.success), "nit": int(r.nit),
                               "nhev": int(r.nhev), "fun": float(r.fun), "time_s": float(r.time_s),
                               **self.lower.counters()})
                effort.append(r)
                if not r.success:  # a failed level is no start
                    x, warm, g_prev = x0, base.warm, None
                    break
                x, warm, g_prev = r.x, self.lower.warm, self.gamma
        finally:
            self.gamma, self.lower = base.gamma, base
        if g_prev is not None:
            base.warm = base.carry(self.T.apply(x), warm, g_prev)
        out = self._solve_one(x, options, rtol, fw_rtol, hessian, callback, method)
        for key in ("nit", "nfev", "nhev", "lower_solves", "lower_requests", "newton_iterations", "lower_failures"):
            out[key] = int(out[key] + sum(r[key] for r in effort))
        out["time_s"] += sum(r.time_s for r in effort)
        out["gamma_levels"] = levels
        return out

    @_doc
    def gamma_path(self) -> list:
        """The larger gammas that ``solve(gamma_path="auto")`` solves first (value formulation), decreasing.

        ``gamma * 10^k, ..., gamma * 10`` with ``10^k`` (at most ``10^6``) the largest power of ten
        below ``PATH_GAMMA_HAT / gamma_hat``, where ``gamma_hat = gamma M / (max c W^2)`` is the
        lower level's dimensionless regularization (M mass, W total weight).  Below
        ``1e-4`` the core's cold start is a continuation in gamma (docs/core.md, section 3), which
        trial points far from the last one need; along the path every level's trial points stay
        near its start (docs/problems.md, section 3b').  Empty above ``PATH_GAMMA_HAT``.

        Examples
        --------
        %(solved_control)s
        >>> problem.gamma_path()  # gamma = 1e-2 here: no path
        []
        """
        w = self.q.weights
        cmax = float(self.c.max_abs) if hasattr(self.c, "max_abs") else float(np.max(self.c))
        ratio = PATH_GAMMA_HAT * cmax * float(w.sum()) ** 2 / (float(w @ self.mu2_density) * self.gamma)
        k = min(int(np.floor(np.log10(ratio))), 6) if ratio > 10 else 0
        dens = (float(w @ self.mu2_density) + self.delta) / float(w.sum())
        # no level whose plan would be too large for the factorized Hessian products
        while k and _plan_nnz(self.q.n, self.q.dim, self.h_transport, self.gamma * 10.0**k, dens) > PATH_MAX_PLAN_NNZ:
            k -= 1
        return [self.gamma * 10.0 ** j for j in range(k, 0, -1)]

    def _solve_one(self, x0, options, rtol, fw_rtol, hessian, callback, method) -> ControlResult:
        """One trust-region solve at the current gamma and lower level (the body of :meth:`solve`)."""
        self._evaluations.clear()
        self.last = self._last_x = self._sigma = self._cache = None  # caches of another lower level
        if method is None:
            # f = tracking (constant Hessian) + piecewise linear plan term: bundle of quadratic cuts
            method = "bundle" if self.formulation == "plan" and hessian and self.nu > 0 else "trust-region"
        if method == "bundle":
            # damped by a fraction of the value term's curvature (docs/trust_region.md)
            options = dict(options or {})
            options.setdefault("metric", lambda x, v: PLAN_METRIC_SCALE * self.value_term_hessp(x, v))
        elif hessian and self.formulation == "value" and self.nu > 0 and not isinstance(options, TrustRegionOptions):
            # CG preconditioned by the inverted tracking part; faces fixing every violated bound
            options = dict(options or {})
            options.setdefault("precond", self.hessian_preconditioner)
            options.setdefault("subproblem", "active-set")
        t0 = time.perf_counter()
        # the uniform start handed over explicitly, projected by the optimizer as always
        tr = solve_on_simplex(self, self.uniform() if x0 is None else x0, options=options, callback=callback,
                              rtol=rtol, hessp=self.hessp if hessian else None,
                              convex=self.formulation == "value", fw_rtol=fw_rtol, method=method)
        return self._result(tr, t0)

    def _result(self, tr, t0) -> ControlResult:
        value = self.formulation == "value"
        # the evaluation the optimizer used at tr.x (not a re-solve, whose lower level starts from
        # other potentials): fw_gap and fun then agree with the optimizer's message
        e = self._evaluations.get(np.asarray(tr.x, dtype=float).tobytes())
        if e is None:
            e = self.evaluate(tr.x, gradient=value)
        res = e["lower"]
        fw = self.frank_wolfe_gap(tr.x, e["grad"]) if value and res.success else None
        theta0 = tr.get("theta0")
        rel = float(tr.stationarity) / theta0 if theta0 else float("nan")
        out = upper_level_result(
            ControlResult, tr, x=tr.x, fun=e["fun"], lower_ok=bool(res.success), lower_message=res.message,
            counters=self.lower.counters(), time_s=time.perf_counter() - t0,
            masses=self.full(tr.x), control_vertices=self.control_vertices, y=e["y"],
            tracking=e["tracking"], transport=e["transport"], transport_cost=e["transport_cost"],
            formulation=self.formulation, fw_gap=fw, plan=res.plan, mu1_density=self.lower.density(tr.x),
            mu2_density=self.mu2_density, lower=res, nfev=int(tr.nfev), nhev=int(tr.get("nhev", 0)),
            stationarity=float(tr.stationarity), relative_stationarity=rel, theta0=theta0,
            tol=float(tr.options.tol), gamma=self.gamma, delta=self.delta, nu=self.nu)
        # the unregularized objective beside fun (its bias is visible), computed when first read
        out.__dict__["_exact_of"] = partial(exact_fields, self, np.array(tr.x, dtype=float))
        return out


#: fraction of the value term's Hessian used as the damping metric of the plan formulation's bundle step
PLAN_METRIC_SCALE = 0.3

#: Dimensionless gamma at which :meth:`ControlProblem.gamma_path` starts: a decade below the core's
#: continuation threshold 1e-4 (docs/core.md, section 3), where the plans are still wide and the
#: derivatives of the lower level cost the most (on the 7,921-node transport of benchmarks/control_value.py
#: a level there took 51 s of 93, the two below it 21 s).
PATH_GAMMA_HAT = 1e-5
#: Shift of the preconditioner on the controls the state sees, relative to V's mean diagonal (V is
#: smoothing: tiny on the rough vectors; measurements in docs/problems.md, section 5c).
PRECOND_SHIFT = 0.0
#: Frank-Wolfe tolerance of the levels of a gamma path above the final one (only starts: the step to
#: the next gamma moves the control by more; ocp-2d at 16,641 nodes: 12 iterations in all instead of 17 at 1e-6).
PATH_FW_RTOL = 1e-4
#: Largest estimated plan of a gamma path level.  A level factorizes the dual Newton matrix at every
#: iterate, with a fill that grows faster than the plan: at 66,049 nodes (gamma ~ h^4) the level at
#: 10 gamma had 3.1e6 nonzeros, fill 1.2e8, 18 s and 1.5 GB per factorization, and took 11 iterations
#: (~1,300 s; more than 5 at PATH_FW_RTOL = 1e-4), while the final level from the nested start
#: converged without it in 12 (590 s).  At 16,641 nodes (1.1e6 estimated) the path stays: without
#: it that level took over 140 iterations.
PATH_MAX_PLAN_NNZ = 2e6

