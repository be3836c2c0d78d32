"""Demo ocp-2d-exact: the limit problem (OCP) in 2D solved exactly, on the published peer's instance.

Omega = [-1, 1]^2 meshed by ``skfem.MeshTri().refined(r)`` mapped by x -> 2x - 1 ((2^r + 1)^2 nodes);
Dirac controls at ALL mesh nodes; reference measure Lebesgue on the square (density 1, mass 4); P1
state ``K y = u`` with point loads, y = 0 on the boundary;
``y_d = 0.5 cos(pi x1 / 2) cos(pi x2 / 2) exp(x2)`` interpolated at the nodes;
``J = 1/2 (y - y_d)^T M (y - y_d) + nu W_2^2(u, Leb)`` with ``nu = alpha / 2``, ``alpha = 1e-3``
(the test problem of Borchard and Wachsmuth, arXiv:2503.07105).

Solved by :func:`femot.problems.control_exact.solve_control_exact` (Newton's method on the Laguerre
weights, exact semi-discrete ``W_2^2``) for ``r = A..B`` (``--levels A:B``).  With ``--start nested``
(default) every level starts from the previous level's weights interpolated to its nodes, and the first
level from ``--warmup`` coarser levels solved before it (their time is counted in its ``time_s``);
``--start zero`` starts every level from the Voronoi diagram (weights 0), as the peer does.  The JSON
lists per level ``r``, ``nodes``, ``J``, ``W`` (``W_2^2``), ``tracking``, ``newton_steps``,
``residual`` (``max |F(psi)|``), ``gap`` (Frank-Wolfe certificate of ``J - min J``), ``time_s`` and
``success``; ``--plot`` draws the control (as a density: masses over lumped nodal areas) and the state
of the finest level.
"""
from __future__ import annotations

import time

import numpy as np

from femot.demos.common import figure_folder, printer, save_figure

NAME = "ocp-2d-exact"
SUMMARY = "the limit problem (OCP) in 2D solved exactly (semi-discrete W_2, Newton on the Laguerre weights)"
ORDER = 62


def add_arguments(p) -> None:
    """Add the options the module docstring explains to ``p`` (hook, see :mod:`femot.demos`)."""
    p.add_argument("--levels", default=None, help="refinement levels A:B (default 4:6; --quick 2:4)")
    p.add_argument("--alpha", type=float, default=1e-3, help="alpha, nu = alpha/2 (default 1e-3)")
    p.add_argument("--start", choices=("nested", "zero"), default="nested",
                   help="start from the previous level's weights (default) or from zero weights")
    p.add_argument("--warmup", type=int, default=2,
                   help="with --start nested: coarser levels solved before the first one (default 2)")
    p.add_argument("--tol", type=float, default=1e-9, help="stop at max|F(psi)| <= tol * diam^2 (default 1e-9)")


def _levels(text, quick):
    if text is None:
        return (2, 4) if quick else (4, 6)
    try:
        a, b = (int(s) for s in str(text).split(":"))
    except ValueError:
        raise ValueError(f"--levels must read A:B with integers A <= B, got {text!r}") from None
    if not 1 <= a <= b:
        raise ValueError(f"--levels must read A:B with 1 <= A <= B, got {text!r}")
    return a, b


def instance(r: int):
    """The peer's instance on level ``r``: ``(PoissonOperator, y_d at the nodes)``.

    Parameters
    ----------
    r : int
        Number of uniform refinements of the two-triangle square.
    """
    import skfem

    from femot.fem import PoissonOperator

    m = skfem.MeshTri().refined(int(r))
    op = PoissonOperator(skfem.MeshTri(2.0 * m.p - 1.0, m.t))
    X = op.vertices
    y_d = 0.5 * np.cos(np.pi * X[:, 0] / 2) * np.cos(np.pi * X[:, 1] / 2) * np.exp(X[:, 1])
    return op, y_d


def _refine_values(mesh, values, points):
    """Nodal values on the next uniform refinement of ``mesh``: copies at the old vertices, edge averages
    at the midpoints (P1 interpolation; points that are neither take the nearest of these)."""
    from scipy.spatial import cKDTree

    e = mesh.facets
    X = np.vstack([mesh.p.T, 0.5 * (mesh.p[:, e[0]] + mesh.p[:, e[1]]).T])
    v = np.concatenate([values, 0.5 * (values[e[0]] + values[e[1]])])
    return v[cKDTree(X).query(points)[1]]


def run(args) -> dict:
    """Run the computation the module docstring describes; return its summary (hook, see :mod:`femot.demos`)."""
    from femot.problems.control_exact import solve_control_exact

    say = printer(args.quiet)
    a, b = _levels(args.levels, bool(getattr(args, "quick", False)))
    nu = float(args.alpha) / 2
    nested = args.start == "nested"
    first = max(1, a - max(int(args.warmup), 0)) if nested else a
    levels = []
    prev = None  # (operator, weights) of the previous level
    t_carry = 0.0
    res = op = None
    say(f"{'r':>2} {'nodes':>7} {'J':>22} {'W_2^2':>12} {'steps':>5} {'residual':>9} {'gap':>9} {'time_s':>8}")
    for r in range(first, b + 1):
        t0 = time.perf_counter()
        op, y_d = instance(r)
        psi0 = None
        if prev is not None:
            psi0 = _refine_values(prev[0].mesh, prev[1], op.vertices)
        res = solve_control_exact(op, y_d, nu, psi0=psi0, tol=args.tol)
        prev = (op, res.psi) if nested else None
        dt = time.perf_counter() - t0
        if r < a:
            t_carry += dt
            say(f"{r:>2} {op.nvertices:>7} (warm-up level, {dt:.2f} s)")
            continue
        row = dict(r=r, nodes=int(op.nvertices), J=float(res.fun), W=float(res.transport),
                   tracking=float(res.tracking), newton_steps=int(res.nit), evaluations=int(res.nfev),
                   residual=float(res.residual), gap=float(res.gap), time_s=round(dt + t_carry, 3),
                   success=bool(res.success), message=res.message)
        t_carry = 0.0
        levels.append(row)
        say(f"{r:>2} {row['nodes']:>7} {row['J']:>22.16e} {row['W']:>12.6e} {row['newton_steps']:>5} "
            f"{row['residual']:>9.2e} {row['gap']:>9.2e} {row['time_s']:>8.2f}")
    summary = dict(instance="peer: [-1,1]^2, Diracs at all nodes, Lebesgue reference of mass 4, P1 point loads",
                   alpha=float(args.alpha), nu=nu, start=args.start, levels=levels,
                   success=all(row["success"] for row in levels))
    if args.plot and res is not None and op is not None:
        summary["figures"] = _plots(args.plot, op, res)
    return summary


def _plots(folder, op, res):
    plt = figure_folder(folder)
    X = op.vertices
    t = op.mesh.t.T
    lumped = np.asarray(op.M.sum(axis=1)).ravel()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for ax, vals, title in ((axes[0], res.x / lumped, "control u (masses / lumped areas)"),
                            (axes[1], res.y, "state y")):
        tp = ax.tripcolor(X[:, 0], X[:, 1], t, vals, shading="gouraud", cmap="viridis")
        fig.colorbar(tp, ax=ax)
        ax.set_aspect("equal")
        ax.set_title(title)
    fig.suptitle(f"exact (OCP), {op.nvertices} nodes: J = {res.fun:.10e}")
    paths: list = []
    save_figure(fig, folder, "ocp_2d_exact.png", paths)
    return paths
