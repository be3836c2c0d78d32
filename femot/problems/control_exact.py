"""The limit problem (OCP) in 2D, exactly: semi-discrete transport and a Newton method on the weights.

Part II, Section 3.2.2 with ``beta = 2`` and a reference measure with a density; the optimality
system in the semi-discrete dual weights alone, solved by a globalized Newton method with a
Frank-Wolfe certificate at every iterate; docs/problems.md (section 5e).
"""
from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
from scipy.optimize import OptimizeResult
from scipy.sparse.linalg import splu

from femot._validation import as_vector, check_positive_scalar
from femot.core.semidiscrete import SemiDiscreteDomain, laguerre_cells, semidiscrete_ot
from femot.fem import nodal_density
from femot.fem.meshes import admissible_vertices
from femot.fem.semidiscrete import mesh_domain
from femot.problems.control_reference import _as_operator

__all__ = ["ControlExactResult", "solve_control_exact", "exact_control_objective", "exact_fields"]

#: largest plan (controls x targets) for which :func:`exact_fields` falls back to the LP
LP_EXACT_MAX_PAIRS = 250_000


class ControlExactResult(OptimizeResult):
    """Solution of the exact 2D (OCP) with a density reference measure.

    Attributes
    ----------
    x, masses : ndarray (nvertices,)
        Optimal control masses on all vertices (zero off ``control_vertices``).
    psi : ndarray (len(control_vertices),)
        Laguerre weights of the controls (``-g/nu`` at the solution).
    control_vertices : ndarray of int
    y : ndarray (ndofs,)
        The state.
    fun, tracking, transport : float
        ``fun = tracking + nu * transport``, ``transport = W_2^2(u, rho)`` (exact).
    residual : float
        ``max |F(psi)|`` (units of ``psi``).
    gap : float
        Frank-Wolfe gap, an upper bound on ``fun - min f``.
    nit, nfev : int
        Newton steps and evaluations of the Laguerre cells.
    success, status, message
        ``status`` 0: ``residual <= tol``; 1: iteration limit; 2: line search failed.
    history : list of dict
        ``fun``, ``residual``, ``gap``, ``step`` per iteration.
    time : float
    """


def _setup(poisson, y_d, nu, density, control_vertices, rho):
    op = _as_operator(poisson)
    if op.dim != 2:
        raise ValueError(f"poisson must live on a 2D mesh, got dimension {op.dim}")
    nu = check_positive_scalar(nu, "nu")
    if isinstance(density, SemiDiscreteDomain):
        dom = density
    else:
        dom = mesh_domain(op.mesh, density)
    if control_vertices is None:
        ctrl = np.arange(op.nvertices) if rho is None else admissible_vertices(op.mesh, rho)
    else:
        ctrl = np.unique(np.asarray(control_vertices, dtype=np.int64))
        if ctrl.size == 0 or ctrl.min() < 0 or ctrl.max() >= op.nvertices:
            raise ValueError("control_vertices must be nonempty vertex indices of the mesh")
    b, c = op.target(y_d)
    S = op.vertex_load[:, ctrl].tocsr()
    return op, nu, dom, ctrl, b, c, S


def _nested_dissection(G, X, leaf: int = 64) -> np.ndarray:
    """A nested dissection ordering of the graph ``G`` (sparse pattern) with node coordinates ``X``.

    Split at the median of the longer coordinate extent; the separator is the set of nodes of one
    half with a neighbour in the other; order (half 1 without separator, half 2, separator),
    recursively.  On 2D meshes this keeps the fill of a sparse factorization near ``n log n``.
    """
    G = sp.csr_matrix(G, copy=True)
    G.data[:] = 1.0
    n = X.shape[0]
    out: list[np.ndarray] = []
    ind = np.zeros(n)
    stack: list[tuple[str, np.ndarray]] = [("split", np.arange(n))]
    while stack:  # explicit stack: ("split", nodes) recurses, ("emit", nodes) appends
        kind, idx = stack.pop()
        if kind == "emit" or idx.size <= leaf:
            out.append(idx)
            continue
        P = X[idx]
        ax = int(np.argmax(np.ptp(P, axis=0)))
        left = P[:, ax] <= np.median(P[:, ax])
        if left.all() or not left.any():
            out.append(idx)
            continue
        A, B = idx[left], idx[~left]
        ind[B] = 1.0
        sep = (G[A] @ ind) > 0
        ind[B] = 0.0
        # pushed in reverse: A without separator first, then B, then the separator
        stack.append(("emit", A[sep]))
        stack.append(("split", B))
        stack.append(("split", A[~sep]))
    return np.concatenate(out)


def _newton_solve(Mii, Kii, C, rhs, X):
    """Solve ``[[-M, K], [K, C]] [v; q] = [0; rhs]`` and return ``q``.

    The matrix is quasi-definite (``M`` positive definite, ``C`` semidefinite); interleaving ``v_i`` before
    ``q_i`` at every node makes every leading principal block nonsingular, so it is factorized without
    pivoting in a nested dissection order of the nodes (SuperLU, natural column order).
    """
    n = Kii.shape[0]
    nodes = _nested_dissection(abs(Kii) + abs(C), X)
    perm = np.empty(2 * n, dtype=np.int64)
    perm[0::2], perm[1::2] = nodes, n + nodes
    A = sp.bmat([[-Mii, Kii], [Kii, C]], format="csr")[perm][:, perm].tocsc()
    b = np.zeros(2 * n)
    b[n:] = rhs
    lu = splu(A, permc_spec="NATURAL", diag_pivot_thresh=0.0, options=dict(SymmetricMode=True))
    x = np.empty(2 * n)
    x[perm] = lu.solve(b[perm])
    return x[n:]


def _tracking(op, S, b, c, u):
    y = op.solve(S @ u)
    My = op.M @ y
    val = 0.5 * float(y @ My) - float(b @ y) + 0.5 * c
    g = S.T @ op.solve_adjoint(My - b)
    return val, np.asarray(g), y


def exact_control_objective(poisson, masses, y_d, nu, *, density=None) -> OptimizeResult:
    """The exact objective ``1/2 |y - y_d|^2 + nu W_2^2(u, rho)`` of (OCP) at a vertex control ``u``.

    ``rho`` is the reference measure with a density on the mesh (Lebesgue measure by default; its
    mass must equal the control's).  ``W_2^2`` by :func:`femot.core.semidiscrete.semidiscrete_ot`.

    Parameters
    ----------
    poisson : PoissonOperator or skfem.MeshTri
    masses : array_like (nvertices,)
        Nonnegative control masses at the vertices.
    y_d : ndarray (ndofs,) or callable
    nu : float
    density : None, array_like or SemiDiscreteDomain
        Reference density (see :func:`femot.fem.semidiscrete.mesh_domain`) or a ready domain.

    Returns
    -------
    scipy.optimize.OptimizeResult
        ``fun``, ``tracking``, ``transport`` and the transport solver's ``residual``, ``success``,
        ``message``.
    """
    op, nu, dom, _, b, c, _ = _setup(poisson, y_d, nu, density, None, None)
    u = as_vector(masses, "masses", length=op.nvertices)
    if abs(u.sum() - dom.mass) > 1e-6 * dom.mass:
        raise ValueError(f"masses must carry the reference's mass {dom.mass:.12g}, got {u.sum():.12g}")
    trk, _, _ = _tracking(op, op.vertex_load, b, c, u)
    # rescaled to the reference's mass exactly: the control carries it up to an optimizer's rounding
    ot = semidiscrete_ot(dom, op.vertices, u * (dom.mass / u.sum()))
    return OptimizeResult(fun=trk + nu * ot.fun, tracking=trk, transport=ot.fun, residual=ot.residual,
                          success=ot.success, message=ot.message)


def exact_fields(problem, x) -> dict:
    """The exact (OCP) objective of a regularized control, for the results of the control problems.

    ``exact_fun = tracking + nu W_beta^beta(u, mu2^d)`` with the unregularized transport: in 2D with
    ``beta = 2`` and the prior on the state mesh's vertices, ``mu2^d`` is read as the P1 density of its
    lumped masses (:func:`femot.fem.nodal_density`) and ``W_2^2`` is semi-discrete
    (:func:`femot.core.semidiscrete.semidiscrete_ot`); otherwise the discrete prior's exact transport
    (monotone rearrangement in 1D, the LP up to :data:`LP_EXACT_MAX_PAIRS` pairs).

    Parameters
    ----------
    problem : femot.problems.ControlProblem
    x : array_like
        Control masses on the problem's control vertices.

    Returns
    -------
    dict
        ``exact_fun``, ``exact_transport`` (NaN when not computed), ``exact_method`` (``"semi-discrete"``,
        ``"exact"``, or why it was not computed).
    """
    nan = float("nan")
    out = dict(exact_fun=nan, exact_transport=nan, exact_method="not computed")
    op = problem.op
    masses = problem.full(x)
    try:
        on_vertices = (problem.target_points.shape == op.vertices.shape
                       and np.allclose(problem.target_points, op.vertices, rtol=0, atol=1e-12))
        if op.dim == 2 and problem.beta == 2 and on_vertices:
            dens = nodal_density(op.mesh, problem.mu2)
            dom = mesh_domain(op.mesh, dens)
            ot = semidiscrete_ot(dom, op.vertices, masses * (dom.mass / masses.sum()))
            if not ot.success:
                out["exact_method"] = f"semi-discrete transport failed: {ot.message}"
                return out
            trk = op.tracking_value_and_gradient(masses, problem.y_d)[0]
            out.update(exact_fun=trk + problem.nu * ot.fun, exact_transport=ot.fun, exact_method="semi-discrete")
        elif op.dim == 1 or np.count_nonzero(masses) * np.count_nonzero(problem.mu2) <= LP_EXACT_MAX_PAIRS:
            fun, _, transport = problem.exact_objective(x)
            out.update(exact_fun=float(fun), exact_transport=float(transport), exact_method="exact")
        else:
            out["exact_method"] = "not computed: the exact transport LP would be too large"
    except ValueError as exc:
        out["exact_method"] = f"failed: {exc}"
    return out


def solve_control_exact(poisson, y_d, nu, *, density=None, control_vertices=None, rho=None, psi0=None,
                        tol: float = 1e-9, max_iter: int = 50, callback=None) -> ControlExactResult:
    """Solve (OCP) in 2D exactly: Newton's method on the Laguerre weights (see the module docstring).

    Parameters
    ----------
    poisson : PoissonOperator or skfem.MeshTri
        The state operator (P1 or P2) on a 2D mesh.
    y_d : ndarray (ndofs,) or callable
        Desired state: nodal values (``1/2 (y - y_d)^T M (y - y_d)``, the discrete tracking of the
        published peer) or a function (integrated exactly by quadrature, femot's control problem).
    nu : float
        Weight of ``W_2^2``.
    density : None, array_like or SemiDiscreteDomain
        Reference measure: Lebesgue on the mesh (default), a nodal (P1) density, or a domain.
    control_vertices : array_like of int, optional
        Vertices carrying the control (default all, or the admissible ones for ``rho``).
    rho : float, optional
        Distance of the controls from the boundary (only without ``control_vertices``).
    psi0 : array_like, optional
        Starting weights (default 0: the Voronoi cells).
    tol : float
        Stop when ``max |F(psi)| <= tol * diam(D)^2``.
    max_iter : int
        Maximal number of Newton steps.
    callback : callable, optional
        Called as ``callback(k, info)`` after every iteration.

    Returns
    -------
    ControlExactResult

    Raises
    ------
    ValueError
        If an argument is malformed.
    """
    t0 = time.perf_counter()
    op, nu, dom, ctrl, b, c, S = _setup(poisson, y_d, nu, density, control_vertices, rho)
    a = op.vertices[ctrl]
    nc = ctrl.size
    I = op.interior
    Kii = op.K[I][:, I].tocsr()
    Mii = op.M[I][:, I].tocsr()
    SI = S[I].tocsr()
    XI = op.nodes[I]
    diam2 = float(np.sum((dom.hi - dom.lo) ** 2))
    ftol = tol * diam2
    psi = np.zeros(nc) if psi0 is None else as_vector(psi0, "psi0", length=nc).copy()

    def evaluate(p):
        cells = laguerre_cells(dom, a, p)
        u = cells.masses
        trk, g, y = _tracking(op, S, b, c, u)
        W = float(cells.moments.sum())
        return dict(psi=p, cells=cells, u=u, trk=trk, W=W, J=trk + nu * W, F=p + g / nu, y=y)

    cur = evaluate(psi)
    nfev = 1
    hist: list[dict] = []
    status, message = 1, "iteration limit reached"
    nit = 0
    for nit in range(max_iter + 1):
        F, u = cur["F"], cur["u"]
        res = float(np.abs(F).max())
        gap = nu * float(F @ u - dom.mass * F.min())
        info = dict(fun=cur["J"], residual=res, gap=gap)
        if hist:
            info["step"] = hist[-1].get("next_step", 1.0)
        hist.append(info)
        if callback is not None:
            callback(nit, info)
        if res <= ftol:
            status, message = 0, "Newton residual below tol"
            break
        if nit == max_iter:
            break
        L = cur["cells"].laplacian
        C = ((SI @ L @ SI.T) / nu).tocsr()
        q = _newton_solve(Mii, Kii, C, -(SI @ (L @ F)), XI)
        d = -F - (SI.T @ q) / nu
        slope = nu * float((L @ F) @ d)
        t = 1.0
        nF = float(np.linalg.norm(F))
        while True:
            trial = evaluate(psi + t * d)
            nfev += 1
            if slope < 0:
                # Armijo, with the rounding level of f as slack (near the solution the decrease is below it)
                ok = trial["J"] <= cur["J"] + 1e-4 * t * slope + 1e-13 * abs(cur["J"])
            else:
                ok = np.linalg.norm(trial["F"]) <= (1 - 1e-4 * t) * nF
            if ok or t < 1e-10:
                break
            t *= 0.5
        if not ok:
            status, message = 2, "line search failed"
            break
        hist[-1]["next_step"] = t
        psi, cur = psi + t * d, trial
    F, u = cur["F"], cur["u"]
    x = np.zeros(op.nvertices)
    x[ctrl] = u
    return ControlExactResult(
        x=x, masses=x, psi=cur["psi"], control_vertices=ctrl, y=cur["y"], fun=cur["J"], tracking=cur["trk"],
        transport=cur["W"], residual=float(np.abs(F).max()), gap=nu * float(F @ u - dom.mass * F.min()),
        nit=nit, nfev=nfev, success=status == 0, status=status, message=message, history=hist,
        time=time.perf_counter() - t0)
