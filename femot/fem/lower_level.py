"""The continuous lower level on meshes: (mu1, mu2, q1, q2, gamma, delta, eps) -> plan.

Part II (BK^delta_gamma): the regularized Kantorovich problem between T^delta mu1 and
T^delta mu2 on the product quadrature, solved by the core (docs/fem.md).
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from femot._docstrings import cite, fill_doc
from femot._validation import check_equal_mass, check_nonnegative_scalar, check_positive_scalar
from femot.core import QROTOptions, solve_qrot
from femot.fem.interpolation import interpolate_nodal
from femot.fem.quadrature import Quadrature, product_cost
from femot.fem.smoothing import Smoother

__all__ = ["LowerLevelResult", "solve_lower_level", "transfer_potentials", "plan_image", "export_plan",
           "barycentric_map"]

# the solve the examples use: one atom moved from 0.4 to 0.6 on a mesh of [0, 1]
_example = fill_doc(solved='''
>>> import numpy as np, skfem
>>> from femot.fem import DiracSum, quadrature, solve_lower_level
>>> q = quadrature(skfem.MeshLine(np.linspace(0.0, 1.0, 11)))
>>> res = solve_lower_level(DiracSum([0.4]), DiracSum([0.6]), q, q, gamma=0.1, delta=0.3)
''')


@dataclass(eq=False)
@cite("II", "III", "LMM")
@_example
class LowerLevelResult:
    """Regularized plan on the product quadrature and its diagnostics.

    ``plan`` is the density pi_ij w.r.t. w_i v_j (CSR); ``m1``, ``m2`` are the smoothed
    marginals T^delta mu_i as densities at ``q1.nodes``, ``q2.nodes``;
    ``marginal_error = max(|sum_j v_j pi_ij - m1_i|, |sum_i w_i pi_ij - m2_j|)`` (max norm);
    ``transport_cost = sum_ij w_i v_j c_ij pi_ij``; ``objective`` adds gamma/2 |pi|^2.
    ``core`` is the core's result object (alpha, beta, jvp, vjp, ...).

    Attributes
    ----------
    plan : scipy.sparse.csr_matrix, shape (n1, n2)
        Plan density pi with respect to the product weights.
    m1, m2 : numpy.ndarray
        Smoothed marginal densities at ``q1.nodes`` and ``q2.nodes``.
    q1, q2 : Quadrature
        The quadratures of the two domains.
    gamma, delta, eps : float
        Regularization, smoothing and unbalance parameters of the solve.
    transport_cost : float
        ``sum_ij w_i v_j c_ij pi_ij``.
    objective : float
        ``transport_cost + gamma/2 sum_ij w_i v_j pi_ij^2``.
    marginal_error : float
        Largest violation of the marginal equations (max norm).
    success : bool
        Whether the core solver converged.
    status : int
        The core solver's status code.
    message : str
        The core solver's message.
    nit : int
        Newton iterations.
    time_s : float
        Wall time of the solve in seconds.
    core : QROTResult or None
        The core result (potentials, ``jvp``, ``vjp``, ...).
    cost : numpy.ndarray or None
        The dense cost matrix, when one was formed.

    Examples
    --------
    %(solved)s
    >>> res.success, res.plan.shape, res.alpha.shape
    (True, (11, 11), (11,))
    """

    plan: sp.csr_matrix
    m1: np.ndarray
    m2: np.ndarray
    q1: Quadrature
    q2: Quadrature
    gamma: float
    delta: float
    eps: float
    transport_cost: float
    objective: float
    marginal_error: float
    success: bool
    status: int
    message: str
    nit: int
    time_s: float
    core: Any = field(repr=False, default=None)
    cost: np.ndarray | None = field(repr=False, default=None)

    @property
    def alpha(self) -> np.ndarray:
        """Dual potential at the nodes of ``q1``."""
        return self.core.alpha

    @property
    def beta(self) -> np.ndarray:
        """Dual potential at the nodes of ``q2``."""
        return self.core.beta

    def marginals(self) -> tuple[np.ndarray, np.ndarray]:
        """(sum_j v_j pi_ij, sum_i w_i pi_ij)."""
        return self.plan @ self.q2.weights, self.plan.T @ self.q1.weights


@cite("II", "III", "LMM")
@_example
def solve_lower_level(mu1, mu2, q1: Quadrature, q2: Quadrature, gamma: float, delta: float, eps: float = 0.0, *,
                      cost=2.0, enlarge: bool = False, rho: float | None = None, tol: float = 1e-10,
                      max_iter: int = 200, x0=None, solver=None, qrot_options: Mapping[str, Any] | None = None,
                      check_support: bool = True, verbose: bool = False,
                      matrix_free: bool = False) -> LowerLevelResult:
    """Solve the smoothed, regularized lower level S_gamma(T^delta mu1, T^delta mu2).

    Parameters
    ----------
    mu1, mu2 : measure
        femot.fem measures on Omega_1, Omega_2 (equal masses when eps = 0).
    q1, q2 : Quadrature
        Quadratures of Omega_1, Omega_2.
    gamma : float
        Quadratic regularization (> 0).
    delta : float
        Smoothing parameter of Part II (2.6) (> 0).
    eps : float
        Dual regularization of Part III (3.1) (>= 0).
    cost : float, callable or numpy.ndarray
        beta > 0 for c = |x - y|^beta, a callable c(x, y) (see ``product_cost``), or a
        dense (n1, n2) array.
    enlarge : bool
        Smooth and transport on the enlarged domains of Part II Lemma 2.4
        (``q_i.enlarged(rho)``); then ``result.q1``, ``result.q2`` are the enlarged
        quadratures.
    rho : float or None
        Enlargement radius (default delta; must be >= delta).
    tol : float
        Residual tolerance of the core.
    max_iter : int
        Newton iterations of the core.
    x0 : tuple, LowerLevelResult or None
        Warm start for the core: a pair (alpha, beta) at the nodes of (q1, q2) (after
        enlargement), or a previous :class:`LowerLevelResult` (possibly on other meshes),
        whose potentials are transferred with :func:`transfer_potentials`.
    solver : callable or None
        The core solver (default :func:`femot.solve_qrot`).
    qrot_options : Mapping or None
        Further keyword options of the core solver (e.g. ``{"linear_solver": "cg"}``); ``tol``,
        ``max_iter`` and ``verbose`` are this function's own keywords.
    check_support : bool
        Check that the measures keep distance delta from the boundary (Smoother).
    verbose : bool
        Let the core print its progress.
    matrix_free : bool
        With a number ``cost >= 1``, use a :class:`femot.GeometricCost` (no n1 x n2
        matrix; ``result.cost`` is then that object).

    Returns
    -------
    LowerLevelResult
        The plan and its diagnostics; ``success`` False if the core did not converge.

    Examples
    --------
    %(solved)s
    >>> res.success, f"{res.transport_cost:.6f}", res.marginal_error < 1e-10
    (True, '0.091457', True)
    """
    gamma = check_positive_scalar(gamma, "gamma")
    delta = check_positive_scalar(delta, "delta")
    eps = check_nonnegative_scalar(eps, "eps")
    for name, q in (("q1", q1), ("q2", q2)):
        if not isinstance(q, Quadrature):
            raise ValueError(f"{name} must be a femot.fem.Quadrature")
    if enlarge:
        r = delta if rho is None else check_positive_scalar(rho, "rho")
        if r < delta:
            raise ValueError(f"rho = {r:.4g} must be >= delta = {delta:.4g} (Part II (3.1))")
        if isinstance(cost, np.ndarray):
            raise ValueError("cost: a precomputed cost matrix cannot be used with enlarge=True")
        q1, q2 = q1.enlarged(r), q2.enlarged(r)
    t0 = time.perf_counter()
    m1 = Smoother(q1, delta, check_support=check_support)(mu1)
    m2 = Smoother(q2, delta, check_support=check_support)(mu2)
    if eps == 0:
        check_equal_mass(m1, q1.weights, m2, q2.weights, names=("T^delta mu1", "T^delta mu2"))
    if isinstance(cost, np.ndarray):
        if cost.shape != (q1.n, q2.n):
            raise ValueError(f"cost has shape {cost.shape}, expected {(q1.n, q2.n)}")
        c = cost
    else:
        c = product_cost(q1, q2, cost, matrix_free=matrix_free)
    if isinstance(x0, LowerLevelResult):
        x0 = transfer_potentials(x0, q1, q2)
    solve = solver or solve_qrot
    extra = dict(qrot_options or {})
    named = sorted({"tol", "max_iter", "verbose"} & set(extra))
    if named:  # one spelling each: these are keywords of this function
        raise ValueError(f"qrot_options: {named} are keywords of solve_lower_level; pass them there")
    if solver is None:
        QROTOptions.from_mapping(extra)  # the core's checks before any work
    res = solve(c, m1, m2, gamma, eps=eps, w1=q1.weights, w2=q2.weights, x0=x0, tol=tol,
                max_iter=max_iter, verbose=verbose, **extra)
    plan = sp.csr_matrix(res.plan)
    r1 = plan @ q2.weights - m1
    r2 = plan.T @ q1.weights - m2
    merr = float(max(np.abs(r1).max(), np.abs(r2).max()))
    tc = _plan_inner(plan, c, q1.weights, q2.weights)
    sq = float(q1.weights @ (plan.multiply(plan) @ q2.weights))
    return LowerLevelResult(
        plan=plan, m1=m1, m2=m2, q1=q1, q2=q2, gamma=gamma, delta=delta, eps=eps,
        transport_cost=tc, objective=tc + 0.5 * gamma * sq, marginal_error=merr,
        success=bool(res.success), status=int(getattr(res, "status", 0)), message=str(getattr(res, "message", "")),
        nit=int(getattr(res, "nit", -1)), time_s=time.perf_counter() - t0, core=res, cost=c)


def _transfer(q_old: Quadrature, values, q_new: Quadrature) -> np.ndarray:
    """Values at q_old.nodes -> q_new.nodes by :func:`interpolate_nodal` (P1 on a vertex rule's mesh)."""
    mesh = q_old.mesh if q_old.rule == "lumped" else None
    return interpolate_nodal(q_old.nodes, values, q_new.nodes, mesh=mesh)


@cite("II", "III", "LMM")
@_example
def transfer_potentials(result: LowerLevelResult, q1: Quadrature, q2: Quadrature) -> tuple[np.ndarray, np.ndarray]:
    """Dual potentials (alpha, beta) of ``result`` interpolated to the nodes of q1, q2.

    The potentials of (KP_gamma) depend continuously on x, y, gamma and delta (alpha +
    beta ~ c on the support of the plan), so they are a good warm start for the next level
    of a schedule (finer mesh, smaller gamma and delta). They are carried by
    :func:`femot.fem.interpolate_nodal` (P1 on the old mesh of a lumped rule, nearest old
    node outside it).

    Parameters
    ----------
    result : LowerLevelResult
        The solution whose potentials are transferred.
    q1, q2 : Quadrature
        The new quadratures.

    Examples
    --------
    %(solved)s
    >>> from femot.fem import transfer_potentials
    >>> fine = quadrature(skfem.MeshLine(np.linspace(0.0, 1.0, 21)))
    >>> alpha, beta = transfer_potentials(res, fine, fine)  # a warm start on the finer mesh
    >>> alpha.shape, bool(np.allclose(alpha[::2], res.alpha))
    ((21,), True)
    """
    return (_transfer(result.q1, np.asarray(result.alpha, dtype=float), q1),
            _transfer(result.q2, np.asarray(result.beta, dtype=float), q2))


def _plan_inner(plan: sp.csr_matrix, c: np.ndarray, w1, w2) -> float:
    """sum_ij w_i v_j c_ij pi_ij touching only the nonzeros of pi."""
    coo = plan.tocoo()
    cv = c.entries(coo.row, coo.col) if hasattr(c, "entries") else c[coo.row, coo.col]
    return float(np.sum(w1[coo.row] * w2[coo.col] * cv * coo.data))


@_example
def plan_image(result: LowerLevelResult):
    """The plan of a 1D x 1D problem as an image.

    Returns ``(img, x, y)``: ``img[j, i] = pi(x_i, y_j)`` with x, y sorted increasingly
    (rows = Omega_2, columns = Omega_1; use ``origin="lower"`` with imshow/pcolormesh).

    Parameters
    ----------
    result : LowerLevelResult
        A 1D x 1D solution.

    Examples
    --------
    %(solved)s
    >>> from femot.fem import plan_image
    >>> img, x, y = plan_image(res)
    >>> img.shape, float(x[1]), float(y[-1])
    ((11, 11), 0.1, 1.0)
    """
    if result.q1.dim != 1 or result.q2.dim != 1:
        raise ValueError("result: plan_image needs a 1D x 1D problem; use export_plan for meshes")
    i1, i2 = np.argsort(result.q1.nodes[:, 0]), np.argsort(result.q2.nodes[:, 0])
    img = result.plan[i1][:, i2].toarray().T
    return img, result.q1.nodes[i1, 0], result.q2.nodes[i2, 0]


@_example
def barycentric_map(result: LowerLevelResult) -> np.ndarray:
    """Where mass goes: T(x_i) = sum_j v_j pi_ij y_j / sum_j v_j pi_ij (nan where no mass).

    Parameters
    ----------
    result : LowerLevelResult
        The solution.

    Examples
    --------
    %(solved)s
    >>> from femot.fem import barycentric_map
    >>> [round(float(t), 4) for t in barycentric_map(res)[[2, 5, 8], 0]]  # mass moves to the right
    [0.5182, 0.6265, 0.6689]
    """
    row = result.plan @ result.q2.weights
    tgt = result.plan @ (result.q2.weights[:, None] * result.q2.nodes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(row[:, None] > 0, tgt / row[:, None], np.nan)


def _pad3(a):
    a = np.atleast_2d(np.asarray(a, dtype=float))
    out = np.zeros((a.shape[0], 3))
    out[:, :a.shape[1]] = a
    return out


def _nodal_meshio(q: Quadrature, point_data: dict):
    import meshio

    if q.rule == "lumped":
        cell = {1: "line", 2: "triangle", 3: "tetra"}[q.dim]
        mesh: Any = q.mesh  # a skfem mesh (typed ``object`` on Quadrature)
        cells = [(cell, mesh.t.T.astype(np.int64))]
    else:
        cells = [("vertex", np.arange(q.n, dtype=np.int64)[:, None])]
    return meshio.Mesh(_pad3(q.nodes), cells, point_data=point_data)


def _write(mesh, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mesh.write(path)
    except ModuleNotFoundError as exc:
        raise ValueError(f"{path}: writing this format needs the missing module {exc.name!r}; use .vtu") from None
    return path


@_example
def export_plan(result: LowerLevelResult, path) -> list[Path]:
    """Export the plan through meshio (format from the suffix; .vtu needs nothing extra).

    1D x 1D: the plan density on the tensor product mesh {x_i} x {y_j} (quad cells),
    restricted to the cells with a corner in the support of pi (the plan is sparse).
    Otherwise (the product space has dimension 3 or 4): two files, ``<path>`` on Omega_1
    with the marginal m1, the plan's first marginal, the barycentric target T(x_i) and the
    displacement T(x_i) - x_i (where mass goes), and ``<stem>_omega2<suffix>`` on Omega_2
    with m2 and the plan's second marginal. Returns the written paths.

    Parameters
    ----------
    result : LowerLevelResult
        The solution.
    path : str or pathlib.Path
        Output file; its suffix names the format.

    Examples
    --------
    %(solved)s
    >>> import tempfile
    >>> from pathlib import Path
    >>> from femot.fem import export_plan
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     print([p.name for p in export_plan(res, Path(tmp) / "plan.vtu")])
    ['plan.vtu']
    """
    import meshio

    path = Path(path)
    if path.suffix == "":
        raise ValueError(f"path: {path} needs a suffix naming the format (e.g. .vtu)")
    p1, p2 = result.marginals()
    if result.q1.dim == 1 and result.q2.dim == 1:
        i1, i2 = np.argsort(result.q1.nodes[:, 0]), np.argsort(result.q2.nodes[:, 0])
        x, y = result.q1.nodes[i1, 0], result.q2.nodes[i2, 0]
        P = result.plan[i1][:, i2].tocsr()  # sorted, (n1, n2)
        n1, n2 = x.size, y.size
        # Only the cells of the tensor mesh with a corner in supp(pi) are written.
        nz = P.tocoo()
        ci = np.concatenate([nz.row - a for a in (0, 1) for _ in (0, 1)])
        cj = np.concatenate([nz.col - b for _ in (0, 1) for b in (0, 1)])
        ok = (ci >= 0) & (ci < n1 - 1) & (cj >= 0) & (cj < n2 - 1)
        cells = np.unique(ci[ok] * (n2 - 1) + cj[ok])
        ci, cj = cells // (n2 - 1), cells % (n2 - 1)
        corners = np.stack([ci * n2 + cj, (ci + 1) * n2 + cj, (ci + 1) * n2 + cj + 1, ci * n2 + cj + 1], axis=1)
        used, inv = np.unique(corners, return_inverse=True)
        pi_, pj = used // n2, used % n2
        vals = np.asarray(P[pi_, pj]).ravel()
        pts = _pad3(np.column_stack([x[pi_], y[pj]]))
        mesh = meshio.Mesh(pts, [("quad", inv.reshape(-1, 4).astype(np.int64))], point_data={"pi": vals})
        return [_write(mesh, path)]
    T = barycentric_map(result)
    d1 = _nodal_meshio(result.q1, {"m1": result.m1, "plan_marginal": p1,
                                   "target": _pad3(np.nan_to_num(T)),
                                   "displacement": _pad3(np.nan_to_num(T - result.q1.nodes)) if T.shape[1] ==
                                   result.q1.dim else _pad3(np.zeros_like(result.q1.nodes))})
    d2 = _nodal_meshio(result.q2, {"m2": result.m2, "plan_marginal": p2})
    other = path.with_name(f"{path.stem}_omega2{path.suffix}")
    return [_write(d1, path), _write(d2, other)]
