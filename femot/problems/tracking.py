"""W^{-1,p'} tracking of the transport plan: Part II, eq. (3.11) with the lower level of (3.13).

``J(pi, mu1) = |grad G(pi - pi_d)|^{p'}_{L^{p'}(D)} + nu |mu1 - mu1_d|_{M(Omega_1)}`` on an
observation domain ``D`` of the product mesh; docs/problems.md (sections 2 and 5b) gives the
discretization and the subgradient.
"""
from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp

from femot._docstrings import cite, fill_doc
from femot._validation import as_nonnegative_vector, as_vector, check_nonnegative_scalar, check_positive_scalar
from femot.core import QROTResult
from femot.fem import PoissonOperator, Smoother, product_cost, product_mesh, quadrature
from femot.fem.poisson import element_mask
from femot.problems.plan_maps import ControlToPlan
from femot.problems.protocol import SHARED_DOCS, UpperLevelResult, VertexControl, solve_on_simplex, upper_level_result

__all__ = ["TrackingProblem", "TrackingResult", "observation_domain"]

# the shared docstring entries and the one example of the result and the problem classes
_doc = fill_doc(**SHARED_DOCS, solved_tracking="""
>>> import numpy as np
>>> import skfem
>>> from femot.problems import TrackingProblem
>>> mesh = skfem.MeshLine(np.linspace(0.0, 1.0, 9))
>>> mu2 = np.zeros(9)
>>> mu2[3:6] = 1 / 3
>>> problem = TrackingProblem(mesh, mesh, mu2, np.zeros((9, 9)), 0.0, 1e-2, 0.25, rho=0.25)
>>> res = problem.solve()
>>> print(problem.n, type(res).__name__, bool(res.success), f"{res.fun:.5f}")
5 TrackingResult True 0.15086
""")


@cite("II")
def observation_domain(mesh1, mesh2, subdomain=None, kind: str | None = None):
    """The observation domain D as a mesh, and its vertices in the product numbering.

    ``subdomain`` selects cells of ``product_mesh(mesh1, mesh2, kind)``: None (all
    of Omega_1 x Omega_2), a boolean mask of length ``nelements`` or a callable
    ``chi(centroids)`` with centroids of shape ``(d1 + d2, nelements)``.
    Returns ``(D_mesh, vertex_map, product)`` where ``D_mesh.p[:, k]`` is product
    vertex ``vertex_map[k]`` (the pair ``divmod(vertex_map[k], n2)``).

    Parameters
    ----------
    mesh1, mesh2 : skfem.Mesh
        Meshes of Omega_1 and Omega_2.
    subdomain : array_like, callable or None
        Cell mask or predicate on the centroids of the product mesh (None: everything).
    kind : str or None
        Cell type of the product mesh (see :func:`femot.fem.product_mesh`).

    Examples
    --------
    >>> import numpy as np
    >>> import skfem
    >>> mesh = skfem.MeshLine(np.linspace(0.0, 1.0, 5))
    >>> D, vertex_map, product = observation_domain(mesh, mesh, lambda c: c[0] < 0.5)
    >>> print(D.p.shape[1], product.p.shape[1], vertex_map[:3].tolist())
    15 25 [0, 1, 2]
    """
    prod = product_mesh(mesh1, mesh2, kind)
    mask = element_mask(prod, subdomain, cells="cell of Omega_1 x Omega_2")
    D, vmap = prod.restrict(np.flatnonzero(mask), return_mapping=True)
    return D, np.asarray(vmap, dtype=np.int64), prod


@cite()
@_doc
class TrackingResult(UpperLevelResult):
    """Solution of the discrete tracking problem (Part II (3.11), (3.13)).

    %(result_keys)s

    Attributes
    ----------
    x : numpy.ndarray
        Control masses on the admissible vertices of Omega_1 (simplex variable).
    masses : numpy.ndarray
        The same on all vertices of Omega_1.
    control_vertices : numpy.ndarray
        The admissible vertices.
    fun, misfit, radon : float
        ``misfit + nu * radon`` with ``misfit = |grad G(pi - pi_d)|^{p'}`` and
        ``radon = |mu1 - mu1_d|_M``.
    phi : numpy.ndarray
        ``G(pi - pi_d)`` on the observation mesh.
    plan : scipy.sparse.csr_matrix
        Density of pi.
    mu1_density, mu2_density : numpy.ndarray
        The smoothed marginals.
    lower : QROTResult
        The core's result at x.
    tr : femot.optim.SimplexTRResult
        The trust-region result.
    nfev : int
        Oracle calls.
    stationarity, tol : float
        Final stationarity measure and the tolerance used.
    lower_solves, lower_requests, newton_iterations, lower_failures
        Lower-level effort (:meth:`femot.problems.MarginalToPlan.counters`).
    gamma, delta, nu, p_prime : float
        The problem's parameters.

    Examples
    --------
    %(solved_tracking)s
    """


@cite()
@_doc
class TrackingProblem(VertexControl):
    """Bilevel tracking of a measured plan (Part II (3.11) with the lower level of (3.13)).

    ``F(m) = |grad G(pi - pi_d)|^{p'}_{L^{p'}(D)} + nu |mu1 - mu1_d|_M``,
    ``pi = S_{gamma,eps}(T^delta m, T^delta mu2^d)``.

    Parameters
    ----------
    mesh1, mesh2 : skfem meshes of Omega_1, Omega_2 (d1 + d2 <= 3).
    mu2 : masses of mu2^d at the vertices of mesh2 (support at distance >= delta from
        the boundary).  The control carries the same mass.
    pi_d : (n1, n2) array or sparse matrix, the measured plan as a density w.r.t.
        ``w_i v_j`` (a measure with masses ``P_ij`` has density ``P_ij / (w_i v_j)``).
    nu : weight of the Radon-norm term (>= 0).
    gamma, delta : regularization and smoothing (Part II (2.6), (3.1)).
    mu1_d : masses of mu1_d at the vertices of mesh1; default the uniform measure on
        the control vertices.
    p_prime : exponent p' in (1, 2] (default 2).
    subdomain : the observation domain D (see :func:`observation_domain`).
    beta : cost ``|x - y|^beta``, or a callable ``c(x, y)`` (see ``product_cost``).
    rho : control vertices have distance >= rho from the boundary (default delta).
    eps : float
        Dual regularization of the core (Part III (3.1)); default 0.
    %(lower_parameters)s
    matrix_free : bool
        Use a :class:`femot.GeometricCost` (no n1 x n2 matrix) for ``|x - y|^beta``.

    Notes
    -----
    The problem satisfies :class:`femot.problems.SimplexProblem` (and
    :class:`~femot.problems.SecondOrderProblem` for p' = 2); its lower level is the
    shared driver :class:`femot.problems.ControlToPlan` (attribute ``lower``).

    Examples
    --------
    %(solved_tracking)s
    """

    def __init__(self, mesh1, mesh2, mu2, pi_d, nu: float, gamma: float, delta: float, *, mu1_d=None,
                 p_prime: float = 2.0, subdomain=None, beta=2.0, rho: float | None = None, eps: float = 0.0,
                 matrix_free: bool = False, qrot_options=None):
        self.q1, self.q2 = quadrature(mesh1), quadrature(mesh2)
        n1, n2 = self.q1.n, self.q2.n
        self.n1, self.n2 = n1, n2
        self.n_vertices = n1
        self.nu = check_nonnegative_scalar(nu, "nu")
        self.gamma = check_positive_scalar(gamma, "gamma")
        self.delta = check_positive_scalar(delta, "delta")
        self.p_prime = check_positive_scalar(p_prime, "p_prime")
        if not 1.0 < self.p_prime <= 2.0:
            raise ValueError(f"p_prime must lie in (1, 2], got {p_prime!r}")
        self.rho = self.control_radius(rho, self.delta)
        self.eps = check_nonnegative_scalar(eps, "eps")
        self.mu2 = as_nonnegative_vector(mu2, "mu2", length=n2)
        self.mass = float(self.mu2.sum())
        if not self.mass > 0:
            raise ValueError("mu2 must have positive mass")
        self.control_vertices = self.q1.admissible(self.rho)
        if self.control_vertices.size == 0:
            raise ValueError(f"rho = {self.rho:.4g} leaves no admissible control vertex in Omega_1")
        if mu1_d is None:
            md = np.zeros(n1)
            md[self.control_vertices] = self.mass / self.control_vertices.size
        else:
            md = as_nonnegative_vector(mu1_d, "mu1_d", length=n1)
        self.mu1_d = md
        off = np.ones(n1, dtype=bool)
        off[self.control_vertices] = False
        self._radon_off = float(np.abs(md[off]).sum())  # |mu1_d| where the control cannot go

        # measured plan, as masses at the product vertices (C order)
        if sp.issparse(pi_d):
            if pi_d.shape != (n1, n2):
                raise ValueError(f"pi_d has shape {pi_d.shape}, expected {(n1, n2)}")
            Pd = np.asarray(pi_d.toarray(), dtype=float)
        else:
            Pd = np.asarray(pi_d, dtype=float)
            if Pd.shape != (n1, n2):
                raise ValueError(f"pi_d has shape {Pd.shape}, expected {(n1, n2)}")
        if not np.all(np.isfinite(Pd)):
            raise ValueError("pi_d contains NaN or infinite entries")
        self.pi_d = Pd

        # observation domain D with its own Dirichlet Poisson operator (Part II (3.10))
        self.D, self.vertex_map, self.product = observation_domain(mesh1, mesh2, subdomain)
        self.opD = PoissonOperator(self.D)
        self._rows, self._cols = np.divmod(self.vertex_map, n2)
        self._wD = self.q1.weights[self._rows] * self.q2.weights[self._cols]
        self._pdD = Pd[self._rows, self._cols]

        # smoothed lower level
        s1 = Smoother(self.q1, self.delta)
        s2 = Smoother(self.q2, self.delta)
        self.T = s1.operator(sources=self.q1.nodes[self.control_vertices], mass=self.mass)
        pos = np.flatnonzero(self.mu2 > 0)
        self.mu2_density = s2.operator(sources=self.q2.nodes[pos], mass=self.mass).apply(self.mu2[pos])
        self.c = product_cost(self.q1, self.q2, beta, matrix_free=matrix_free)
        self.lower = ControlToPlan(self.q1, self.q2, self.T, self.mu2_density, self.c, self.gamma, self.eps,
                                   qrot_options=qrot_options)
        self.n_evaluations = 0
        self._cache = None
        self._last: tuple[np.ndarray, QROTResult] | None = None

    # ----------------------------------------------------------- helpers
    def misfit(self, plan):
        """``|grad G(pi - pi_d)|^{p'}_{L^{p'}(D)}``, its gradient w.r.t. the plan density, and phi.

        ``plan`` is a CSR/dense (n1, n2) density.  The gradient is returned as a
        sparse (n1, n2) matrix supported on the vertices of D.

        Parameters
        ----------
        plan : numpy.ndarray or scipy.sparse matrix
            The plan density (n1, n2).
        """
        if sp.issparse(plan):
            piD = np.asarray(plan.tocsr()[self._rows, self._cols]).ravel()
        else:
            piD = np.asarray(plan, dtype=float)[self._rows, self._cols]
        eta = self._wD * (piD - self._pdD)  # masses of pi - pi_d at the vertices of D
        load = self.opD.load_nodal_masses(eta)
        val, gb, phi = self.opD.gradient_norm_value_and_gradient(load, self.p_prime)
        g_eta = self.opD.vertex_load.T @ gb
        G = sp.csr_matrix((self._wD * g_eta, (self._rows, self._cols)), shape=(self.n1, self.n2))
        return val, G, phi

    def radon(self, x) -> tuple[float, np.ndarray]:
        """``|mu1 - mu1_d|_M`` and one element of its Clarke subdifferential (sign, 0 at ties).

        Parameters
        ----------
        x : array_like
            Masses on the admissible vertices.
        """
        diff = as_vector(x, "x", length=self.n) - self.mu1_d[self.control_vertices]
        return float(np.abs(diff).sum()) + self._radon_off, np.sign(diff)

    # ----------------------------------------------------------- the oracle
    def evaluate(self, x, gradient: bool = True) -> dict:
        """Value, parts and (optionally) one Clarke subgradient at the control ``x``.

        Returns a dict with fun, misfit, radon, grad (or None), phi and lower (the core's
        result); a lower level that does not converge gives fun = nan.

        Parameters
        ----------
        x : array_like
            Masses on the admissible vertices.
        gradient : bool
            Also compute the subgradient (one adjoint solve).
        """
        x = as_vector(x, "x", length=self.n)
        self.n_evaluations += 1
        res = self.lower.solve(x)
        val, G, phi = self.misfit(res.plan)
        rad, sgn = self.radon(x)
        fun = val + self.nu * rad
        grad = None
        if gradient:
            grad = self.lower.pullback(res, G) + self.nu * sgn
        fun, grad = self._failed(res, fun, grad)
        self._last = (x.copy(), res)
        return {"fun": fun, "misfit": val, "radon": rad, "grad": grad, "phi": phi, "lower": res}

    @_doc
    def hessp(self, x, v) -> np.ndarray:
        """Hessian-vector product of the reduced objective at ``x`` where it is smooth (p' = 2).

        For p' = 2 the misfit ``F(pi) = |grad G(pi - pi_d)|^2_{L2(D)}`` is quadratic in pi and
        ``pi(m) = S(T m, m2)`` is piecewise affine (the dual system of Part III (3.1) is
        piecewise linear; for eps = 0 on the affine space of equal masses), so wherever
        S is differentiable the Hessian of ``F(pi(m))`` is ``T^T S'^T (Hess F) S' T``:
        one :meth:`~femot.QROTResult.jvp`, two Poisson solves on D (the linear gradient
        map of F) and one :meth:`~femot.QROTResult.vjp` -- exact a.e. for eps > 0 (and
        for eps = 0 on the simplex: the product is then taken on its tangent space,
        ``P H P v`` with ``P v = v - mean(v)``).  The Radon-norm term is piecewise linear:
        its Hessian is zero a.e.  The lower-level solution of the last evaluation is
        reused when ``x`` is that point.

        Parameters
        ----------
        %(point_direction)s
        """
        if self.p_prime != 2.0:
            raise ValueError(f"hessp needs p_prime = 2 (the misfit is then quadratic in the plan), got "
                             f"{self.p_prime:g}")
        x = as_vector(x, "x", length=self.n)
        v = as_vector(v, "v", length=self.n)
        last = self._last
        if last is None or not np.array_equal(last[0], x):
            last = (x, self.evaluate(x, gradient=False)["lower"])
        res = last[1]
        if not res.success:
            return np.full(self.n, np.nan)
        flat = self.eps == 0
        vt = v - v.mean() if flat else v
        dpi = res.jvp(self.T.apply(vt), np.zeros(self.n2)).tocsr()
        eta = self._wD * np.asarray(dpi[self._rows, self._cols]).ravel()
        load = self.opD.load_nodal_masses(eta)
        _, gb, _ = self.opD.gradient_norm_value_and_gradient(load, 2.0)
        g_eta = self.opD.vertex_load.T @ gb
        G = sp.csr_matrix((self._wD * g_eta, (self._rows, self._cols)), shape=(self.n1, self.n2))
        hv = self.lower.pullback(res, G)
        return hv - hv.mean() if flat else hv

    @_doc
    def solve(self, x0=None, *, options: dict | None = None, rtol: float | None = 1e-2, callback=None,
              hessian: bool = True) -> TrackingResult:
        """Minimize over the simplex by the trust-region method (Part III Algorithm 4.1).

        From the uniform control unless ``x0`` is given; ``tol = rtol * theta(x0)``
        unless ``options`` set ``tol`` (see :meth:`ControlProblem.solve`).  With
        ``hessian`` and p' = 2 the optimizer gets :meth:`hessp` (exact where smooth).

        Parameters
        ----------
        %(start_parameters)s
        rtol : float or None
            Relative stationarity tolerance, ``tol = rtol * theta_R(x0)``.  1e-2 here,
            1e-5 for :meth:`femot.problems.ControlProblem.solve`: with the Radon term (nonsmooth where
            ``m = m_d``) or p' != 2 (BFGS model only) 1e-5 often ends at the iteration
            limit (docs/problems.md, "Relative tolerances").
        callback : callable, optional
            Passed to the optimizer.
        hessian : bool
            Pass :meth:`hessp` to the optimizer (p' = 2 only).

        Returns
        -------
        TrackingResult
            The result convention of :func:`femot.problems.protocol.upper_level_result`.
        """
        hp = self.hessp if hessian and self.p_prime == 2.0 else None
        t0 = time.perf_counter()
        # the uniform start handed over explicitly, projected by the optimizer as always
        tr = solve_on_simplex(self, self.uniform() if x0 is None else x0, options=options, callback=callback,
                              rtol=rtol, hessp=hp)
        return self._result(tr, t0)

    def _result(self, tr, t0) -> TrackingResult:
        e = self.evaluate(tr.x, gradient=False)
        res = e["lower"]
        return upper_level_result(
            TrackingResult, tr, x=tr.x, fun=e["fun"], lower_ok=bool(res.success), lower_message=res.message,
            counters=self.lower.counters(), time_s=time.perf_counter() - t0,
            masses=self.full(tr.x), control_vertices=self.control_vertices,
            misfit=e["misfit"], radon=e["radon"], phi=e["phi"], plan=res.plan, lower=res,
            mu1_density=self.lower.density(tr.x), mu2_density=self.mu2_density,
            nfev=int(tr.nfev), stationarity=float(tr.stationarity), tol=float(tr.options.tol),
            gamma=self.gamma, delta=self.delta, nu=self.nu, p_prime=self.p_prime)
