"""Exact reference for the unregularized control problem (OCP) of Part II, Section 3.2.2.

The problem with the transport plan as the variable, a sparse convex QP solved by Clarabel, and
its solver-independent Frank-Wolfe certificate; docs/problems.md (sections 3c and 5d).
"""
from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
from scipy.optimize import OptimizeResult
from scipy.spatial.distance import cdist

from femot._docstrings import cite, fill_doc
from femot._validation import as_nonnegative_vector, check_nonnegative_scalar, check_positive_scalar
from femot.core import wasserstein_pp_1d
from femot.fem import PoissonOperator
from femot.fem.meshes import admissible_vertices

__all__ = [
    "ControlReferenceResult",
    "solve_control_reference",
    "control_objective",
    "transport_cost_matrix",
    "frank_wolfe_gap",
    "pick_qp_solver",
]

# the data of the control examples: the Poisson operator on 8 cells of [0, 1], mu2 uniform on
# the three middle vertices
_CONTROL_DATA = """
>>> import numpy as np
>>> import skfem
>>> from femot.fem import PoissonOperator
>>> op = PoissonOperator(skfem.MeshLine(np.linspace(0.0, 1.0, 9)))
>>> mu2 = np.zeros(9)
>>> mu2[3:6] = 1 / 3
"""
_example = fill_doc(control_data=_CONTROL_DATA)

_QP_HINT = "clarabel is a dependency of femot: reinstall femot (`pip install femot`)"


class ControlReferenceResult(OptimizeResult):
    """Solution of the discrete (OCP) reference.

    Attributes
    ----------
    x, masses : ndarray (nvertices,)
        Optimal control masses on all vertices (zero off the admissible set).
    control_vertices : ndarray of int
        Admissible vertices (distance >= rho to the boundary); rows of ``plan``.
    plan : scipy.sparse.csr_matrix (len(control_vertices), n2)
        Optimal plan ``pi`` (masses); its row sums are ``masses[control_vertices]``.
    y : ndarray (ndofs,)
        State ``G m``.
    fun, tracking, transport : float
        ``fun = tracking + nu * transport`` with ``tracking = 1/2 |y - y_d|^2`` and
        ``transport = <c_d, pi>`` (``= W_beta^beta(m, mu2)`` at the optimum).
    residuals : dict
        ``marginal`` (max |P2# pi - mu2| of the returned plan), ``solver_marginal``
        (the same for the raw solver iterate, before entries at rounding level are
        dropped and columns rescaled to their exact mass), ``negativity`` (largest
        clipped negative entry), ``gap`` (Frank-Wolfe gap, an upper bound on
        ``fun - min``).
    success, status, message, nit, solver, time
        ``status`` 0: optimal and certified; 1: solver did not report optimality;
        2: solver reported optimality but the gap exceeds ``gap_tol``.
    """


# --------------------------------------------------------------------------
# problem data
# --------------------------------------------------------------------------

@cite("II")
def transport_cost_matrix(x1, x2, beta: float = 2.0) -> np.ndarray:
    """``c_d(x1_i, x2_j) = |x1_i - x2_j|^beta`` (Part II, eq. (3.14)); dense (n1, n2).

    Parameters
    ----------
    x1 : array_like, shape (n1,) or (n1, d)
        First point set (1D arrays are read as points on the line).
    x2 : array_like, shape (n2,) or (n2, d)
        Second point set, of the same dimension ``d``.
    beta : float, optional
        Positive exponent of the Euclidean distance.  Default 2.

    Returns
    -------
    ndarray, shape (n1, n2)
        The cost matrix.

    Raises
    ------
    ValueError
        If ``beta`` is not positive or the point arrays have different dimensions.
    """
    beta = check_positive_scalar(beta, "beta")
    a = np.asarray(x1, dtype=float)
    b = np.asarray(x2, dtype=float)
    a = a[:, None] if a.ndim == 1 else a
    b = b[:, None] if b.ndim == 1 else b
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"x1 and x2 must be point arrays of equal dimension, got "
                         f"{np.shape(x1)} and {np.shape(x2)}")
    d = cdist(a, b)
    return d ** beta


def _as_operator(poisson):
    if isinstance(poisson, PoissonOperator):
        return poisson
    try:
        return PoissonOperator(poisson)
    except ValueError as exc:
        raise ValueError(f"poisson must be a PoissonOperator or a scikit-fem mesh: {exc}") from None


def _target(op, mu2, target_points):
    if target_points is None:
        x2 = op.vertices
    else:
        x2 = np.asarray(target_points, dtype=float)
        if x2.ndim == 1 and op.dim == 1:
            x2 = x2[:, None]
        if x2.ndim != 2 or x2.shape[1] != op.dim or x2.shape[0] == 0:
            raise ValueError(f"target_points must have shape (n2, {op.dim}), got "
                             f"{np.shape(target_points)}")
        if not np.all(np.isfinite(x2)):
            raise ValueError("target_points contains NaN or infinite entries")
    mu2 = as_nonnegative_vector(mu2, "mu2", length=x2.shape[0])
    if mu2.sum() <= 0:
        raise ValueError("mu2 must have positive total mass")
    return x2, mu2


@cite("II")
def _state_blocks(op, control_vertices):
    """``(K, M, S)`` on the interior dofs: stiffness, mass, and the placement of the control masses."""
    inner = op.interior
    return (op.K[inner][:, inner].tocsr(), op.M[inner][:, inner].tocsr(),
            op.vertex_load[inner][:, control_vertices].tocsc())


def _tracking_inverse(blocks, free, sigma):
    """``v -> (S_F^T K^{-1} M K^{-1} S_F + Sigma)^{-1} v_F`` on the free controls F (zero elsewhere).

    The tracking Hessian plus the diagonal ``Sigma`` (``sigma``: per control), inverted through
    the state and adjoint equations, ``[[s K, S_F s Sigma^-1 S_F^T], [M, -K]] [y; p] = [S_F s
    Sigma^-1 r; 0]``, ``v = Sigma^-1 (r - S_F^T p)`` with ``s`` a typical entry of Sigma (one
    sparse LU; docs/problems.md, section 5c).
    """
    from scipy.sparse.linalg import splu

    K, M, S_all = blocks
    idx = np.flatnonzero(free)
    S = S_all[:, idx]
    sig = np.broadcast_to(np.asarray(sigma, dtype=float), (free.size,))[idx]
    s = float(np.median(sig))
    N = K.shape[0]
    D = sp.diags(s / sig)
    lu = splu(sp.bmat([[s * K, S @ D @ S.T], [M, -K]], format="csc"))

    def apply(v):
        r = np.asarray(v, dtype=float)[free]
        p = lu.solve(np.concatenate([S @ (D @ r), np.zeros(N)]))[N:]
        out = np.zeros(free.size)
        out[free] = (r - S.T @ p) / sig
        return out

    return apply


@_example
def control_objective(poisson, masses, y_d, mu2, nu, *, target_points=None, beta=2.0):
    """Objective of (OCP) for a discrete control: ``(fun, tracking, transport)``.

    ``tracking = 1/2 |G m - y_d|^2_{L2}`` and ``transport = W_beta(m, mu2)^beta``,
    computed exactly (monotone rearrangement in 1D, linear programming by HiGHS
    through SciPy otherwise).  ``masses`` are vertex masses of the same total mass
    as ``mu2``.

    Parameters
    ----------
    poisson : PoissonOperator or skfem.Mesh
        The state operator ``G`` (a P1 operator is built from a mesh).
    masses : array_like, shape (nvertices,)
        Nonnegative control masses at the mesh vertices.
    y_d : ndarray (ndofs,) or callable
        Desired state (nodal vector or function, see ``PoissonOperator.target``).
    mu2 : array_like, shape (n2,)
        Nonnegative masses of the prior ``mu2^d`` at ``target_points``.
    nu : float
        Nonnegative weight of the transport term.
    target_points : array_like, shape (n2, dim), optional
        Support of the prior; default the mesh vertices.
    beta : float, optional
        Exponent of the cost ``|x1 - x2|^beta`` (>= 1 in 1D).  Default 2.

    Returns
    -------
    fun : float
        ``tracking + nu * transport``.
    tracking : float
        ``1/2 |G m - y_d|^2_{L2}``.
    transport : float
        ``W_beta(m, mu2)^beta``.

    Raises
    ------
    ValueError
        If ``nu`` is negative, the masses or ``target_points`` have the wrong shape or
        sign, or ``masses`` and ``mu2`` carry different total mass.
    RuntimeError
        If the exact transport LP (dimension >= 2) fails.

    Examples
    --------
    %(control_data)s
    >>> fun, tracking, transport = control_objective(op, mu2, np.zeros(9), mu2, 0.1)
    >>> print(f"{fun:.5f} {transport:.5f}")
    0.00930 0.00000
    """
    op = _as_operator(poisson)
    nu = check_nonnegative_scalar(nu, "nu")
    x2, mu2 = _target(op, mu2, target_points)
    m = as_nonnegative_vector(masses, "masses", length=op.nvertices)
    tracking, _ = op.tracking_value_and_gradient(m, y_d)
    if op.dim == 1:
        transport = wasserstein_pp_1d(op.vertices[:, 0], x2[:, 0], m, mu2, p=beta)
    else:
        transport = _exact_transport_lp(op.vertices, m, x2, mu2, beta)
    return tracking + nu * transport, tracking, transport


def _exact_transport_lp(x1, m1, x2, m2, beta):
    from scipy.optimize import linprog

    s1, s2 = m1.sum(), m2.sum()
    if abs(s1 - s2) > 1e-9 * max(s1, s2):
        raise ValueError(f"masses and mu2 must carry equal mass: {s1:.12g} != {s2:.12g}")
    i1 = np.flatnonzero(m1 > 0)
    c = transport_cost_matrix(x1[i1], x2, beta)
    n1, n2 = c.shape
    rows = sp.kron(sp.eye(n1), np.ones((1, n2)))
    cols = sp.kron(np.ones((1, n1)), sp.eye(n2))
    res = linprog(c.ravel(), A_eq=sp.vstack([rows, cols]).tocsr(),
                  b_eq=np.concatenate([m1[i1], m2 * (s1 / s2)]), bounds=(0, None),
                  method="highs")
    if not res.success:
        raise RuntimeError(f"exact transport LP failed: {res.message}")
    return float(res.fun)


# --------------------------------------------------------------------------
# the QP
# --------------------------------------------------------------------------

def _build_qp(op, y_d, adm, c, mu2, nu):
    """Sparse data of the QP in the variables z = (y_I, m, pi) (see module doc)."""
    I = op.interior
    nI, na, n2 = I.size, adm.size, mu2.size
    npi = na * n2
    b, const = op.target(y_d)
    # Hessian: M_II on y_I, zero elsewhere
    P = sp.block_diag([op.M[I][:, I], sp.csr_matrix((na + npi, na + npi))]).tocsc()
    q = np.concatenate([-b[I], np.zeros(na), nu * c.ravel()])
    # state equation K_II y_I = S m  (S: vertex masses -> interior loads)
    L = op.vertex_load[:, adm].tocsr()[I]
    row_state = sp.hstack([op.K[I][:, I], -L, sp.csr_matrix((nI, npi))])
    # m = pi 1 (row sums) and pi^T 1 = mu2 (column sums)
    R = sp.kron(sp.eye(na), np.ones((1, n2)))
    C = sp.kron(np.ones((1, na)), sp.eye(n2))
    row_m = sp.hstack([sp.csr_matrix((na, nI)), sp.eye(na), -R])
    row_mu = sp.hstack([sp.csr_matrix((n2, nI + na)), C])
    A_eq = sp.vstack([row_state, row_m, row_mu]).tocsc()
    b_eq = np.concatenate([np.zeros(nI + na), mu2])
    return P, q, A_eq, b_eq, const, (nI, na, npi)


def _solve_clarabel(P, q, A_eq, b_eq, sizes, tol, max_iter, verbose):
    try:
        import clarabel
    except ImportError as exc:
        raise ImportError(f"solver='clarabel' needs the package clarabel; {_QP_HINT}") from exc
    nI, na, npi = sizes
    nvar = nI + na + npi
    # nonnegativity of (m, pi): -z + s = 0, s >= 0
    G = sp.hstack([sp.csr_matrix((na + npi, nI)), -sp.eye(na + npi)])
    A = sp.vstack([A_eq, G]).tocsc()
    b = np.concatenate([b_eq, np.zeros(na + npi)])
    cones = [clarabel.ZeroConeT(A_eq.shape[0]), clarabel.NonnegativeConeT(na + npi)]
    settings = clarabel.DefaultSettings()
    settings.verbose = bool(verbose)
    settings.tol_gap_abs = tol
    settings.tol_gap_rel = tol
    settings.tol_feas = tol
    settings.max_iter = int(max_iter) if max_iter is not None else 200
    solver = clarabel.DefaultSolver(sp.triu(P).tocsc(), q, A, b, cones, settings)
    sol = solver.solve()
    status = str(sol.status)
    ok = status in ("Solved", "SolverStatus.Solved")
    almost = "AlmostSolved" in status
    z = np.asarray(sol.x, dtype=float)
    if z.size != nvar:
        z = np.zeros(nvar)
    return z, ok or almost, f"clarabel: {status}", int(sol.iterations)


def pick_qp_solver(solver: str = "auto") -> str:
    """Name of the QP solver for ``solver`` (``"auto"`` or ``"clarabel"``); ImportError if it is missing.

    Parameters
    ----------
    solver : {'auto', 'clarabel'}, optional
        Requested solver; both currently resolve to Clarabel.  Default ``'auto'``.

    Returns
    -------
    str
        ``'clarabel'``.

    Raises
    ------
    ValueError
        If ``solver`` is neither ``'auto'`` nor ``'clarabel'``.
    ImportError
        If the package clarabel (a dependency of femot) is missing from the environment.
    """
    if solver not in ("auto", "clarabel"):
        raise ValueError(f"solver must be 'auto' or 'clarabel', got {solver!r}")
    try:
        import clarabel  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"the control reference needs the QP solver clarabel; {_QP_HINT}") from exc
    return "clarabel"


def _clean_plan(pi, mu2, drop=1e-9):
    """Interior-point plans are dense with tiny entries: clip negatives, drop
    entries below ``drop * |mu2|`` and rescale every column to its exact mass
    ``mu2_j`` (the certificate below re-checks optimality of the result)."""
    raw = np.maximum(pi, 0.0)
    pi = np.where(raw > drop * mu2.sum(), raw, 0.0)
    empty = pi.sum(axis=0) <= 0
    pi[:, empty] = raw[:, empty]  # columns of tiny mass keep their raw entries
    col = pi.sum(axis=0)
    scale = np.divide(mu2, col, out=np.zeros_like(col), where=col > 0)
    return pi * scale[None, :]


def frank_wolfe_gap(grad_m, c, plan, mu2, nu) -> float:
    """``<g, pi> - sum_j mu2_j min_i g_ij`` with ``g_ij = grad_m[i] + nu c_ij``.

    For the convex problem ``min f(pi)`` over ``{pi >= 0, pi^T 1 = mu2}`` this is
    ``max_{pi'} <grad f(pi), pi - pi'>``: nonnegative, zero exactly at minimizers,
    and an upper bound on ``f(pi) - min f``.

    Parameters
    ----------
    grad_m : ndarray, shape (n1,)
        Gradient of the tracking term with respect to the control masses (row sums of ``pi``).
    c : ndarray, shape (n1, n2)
        Transport cost matrix.
    plan : ndarray or scipy.sparse matrix, shape (n1, n2)
        Feasible plan ``pi`` whose optimality is measured.
    mu2 : ndarray, shape (n2,)
        Column sums of feasible plans.
    nu : float
        Weight of the transport term.

    Returns
    -------
    float
        The Frank-Wolfe gap (in units of the objective).
    """
    g = grad_m[:, None] + nu * c
    pi = plan.toarray() if sp.issparse(plan) else np.asarray(plan)
    return float(np.sum(g * pi) - mu2 @ g.min(axis=0))


@cite("II")
@_example
def solve_control_reference(poisson, y_d, mu2, nu, *, target_points=None, beta=2.0,
                            rho=0.0, solver="auto", tol=1e-10, max_iter=None,
                            gap_tol=None, verbose=False) -> ControlReferenceResult:
    """Solve the discrete unregularized (OCP) of Part II exactly (convex QP).

    Parameters
    ----------
    poisson : PoissonOperator or skfem.Mesh
        The state operator ``G`` on ``Omega_*`` (a P1 operator is built from a mesh).
        Intended for small meshes (1D with up to ~100 vertices, small 2D).
    y_d : ndarray (ndofs,) or callable
        Desired state (nodal vector or function, see ``PoissonOperator.target``).
    mu2 : ndarray (n2,)
        Masses of the prior ``mu2^d`` at ``target_points`` (default: the vertices).
        The control carries the same total mass.
    nu : float
        Weight of the transport term (>= 0).
    target_points : array_like, shape (n2, dim), optional
        Support of the prior ``mu2^d``; default the mesh vertices.
    beta : float, optional
        Exponent of the cost ``|x1 - x2|^beta`` (Part II, eq. (3.14)); >= 1.  Default 2.
    rho : float, optional
        Controls live on vertices with distance >= rho to the boundary.  Default 0.
    solver : {'auto', 'clarabel'}
        QP solver (clarabel, a dependency of femot).  Only the interior-point
        solver Clarabel is used: the active-set QP of HiGHS (highspy 1.15) stalls
        on the highly degenerate transport polytope even for 10 nodes.
    tol : float, optional
        Solver tolerance (absolute and relative gap, feasibility).  Default 1e-10.
    max_iter : int, optional
        Iteration limit of the QP solver; default 200.
    gap_tol : float, optional
        Certification threshold for the Frank-Wolfe gap; default
        ``1e-8 * max(1, |fun|)``.
    verbose : bool, optional
        Print the solver's log.  Default False.

    Returns
    -------
    ControlReferenceResult
        ``status`` 0 (certified optimal), 1 (solver did not converge) or 2 (solver
        claimed optimality but the gap or marginal certificate fails).

    Raises
    ------
    ValueError
        If ``nu``, ``rho``, ``tol`` or ``beta`` is out of range, or the data have wrong shapes.
    ImportError
        If clarabel is not installed.

    Examples
    --------
    %(control_data)s
    >>> res = solve_control_reference(op, np.zeros(9), mu2, 0.1)
    >>> print(bool(res.success), f"{res.fun:.5f}")
    True 0.00759
    """

    op = _as_operator(poisson)
    nu = check_nonnegative_scalar(nu, "nu")
    rho = check_nonnegative_scalar(rho, "rho")
    beta = check_positive_scalar(beta, "beta")
    if beta < 1:
        raise ValueError(f"beta must be >= 1, got {beta!r}")
    tol = check_positive_scalar(tol, "tol")
    name = pick_qp_solver(solver)
    x2, mu2 = _target(op, mu2, target_points)
    adm = admissible_vertices(op.mesh, rho)
    c = transport_cost_matrix(op.vertices[adm], x2, beta)
    op.target(y_d)  # validates y_d before any work

    t0 = time.perf_counter()
    P, q, A_eq, b_eq, const, sizes = _build_qp(op, y_d, adm, c, mu2, nu)
    z, solver_ok, msg, nit = _solve_clarabel(P, q, A_eq, b_eq, sizes, tol, max_iter, verbose)
    nI, na, npi = sizes
    pi = z[nI + na:].reshape(na, mu2.size)
    negativity = float(max(0.0, -pi.min()))
    solver_marginal = float(np.max(np.abs(pi.sum(axis=0) - mu2)))
    pi = _clean_plan(pi, mu2)
    plan = sp.csr_matrix(pi)
    masses = np.zeros(op.nvertices)
    masses[adm] = pi.sum(axis=1)

    # independent evaluation and certificate (fresh solves, not the QP iterate)
    tracking, grad_m = op.tracking_value_and_gradient(masses, y_d)
    transport = float(np.sum(c * pi))
    fun = tracking + nu * transport
    gap = frank_wolfe_gap(grad_m[adm], c, pi, mu2, nu)
    residuals = {
        "marginal": float(np.max(np.abs(pi.sum(axis=0) - mu2))),
        "solver_marginal": solver_marginal,
        "negativity": negativity,
        "gap": gap,
    }
    if gap_tol is None:
        gap_tol = 1e-8 * max(1.0, abs(fun))
    marg_tol = 1e-6 * mu2.sum()
    if not solver_ok:
        status, message = 1, f"QP solver did not reach optimality ({msg})"
    elif gap > gap_tol or residuals["marginal"] > marg_tol:
        status, message = 2, (f"solver reported optimality ({msg}) but the certificate fails: "
                              f"gap {gap:.3e} (tol {gap_tol:.1e}), marginal residual "
                              f"{residuals['marginal']:.3e}")
    else:
        status, message = 0, f"optimal ({msg}); Frank-Wolfe gap {gap:.2e}"
    return ControlReferenceResult(
        x=masses, masses=masses, control_vertices=adm, plan=plan, target_points=x2,
        mu2=mu2, y=op.solve(op.load_nodal_masses(masses)), fun=fun, tracking=tracking,
        transport=transport, nu=nu, beta=beta, rho=rho, cost=c, residuals=residuals,
        success=status == 0, status=status, message=message, nit=nit, solver=name,
        time=time.perf_counter() - t0,
    )
