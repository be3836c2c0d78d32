"""Demo transport-2d: the smoothed, regularized lower level between two 2D meshes.

mu1 is a mixture of three compactly supported bumps on the L-shaped domain, mu2 an
empirical measure (seeded samples from an annulus) on the unit disk. Both are smoothed
by T^delta (Part II eq. (2.6)) on their quadratures (L-shape: one Gauss point per
triangle, 1536 nodes; disk: vertex-lumped P1, 2113 nodes) and transported with
c = |x - y|^2 by the core: over 3 million pairs. Reports time and peak memory and
draws the marginals and where the mass of each node of Omega_1 goes (barycentric map).

With ``--levels K`` it runs instead a coupled gamma, delta -> 0 schedule with a
closed-form reference (``femot.studies.affine_study``): mu1 smooth on the unit square,
mu2 its push-forward by the affine map T(x) = A x + b (A symmetric positive
definite, so T is the optimal map for |x - y|^2 and W_2^2 is an integral of mu1),
K levels halving the mesh width h up to ``--m-last`` vertices per side (default
201: 40,401 and 40,804 nodes, 1.65e9 pairs), delta = 4 h, gamma = delta^4, each
level solved matrix-free and coarse-to-fine.  Reports the transport cost error
against W_2^2, the barycentric map error against T, least-squares rates in h, and
draws the errors (``--plot``).
"""
from __future__ import annotations

import os
import resource
import time
import tracemalloc

import numpy as np

from femot.demos.common import figure_folder, printer, save_figure

NAME = "transport-2d"
SUMMARY = "2D x 2D lower level (L-shape -> disk, > 3 million pairs): marginals, mass flow, time, memory"
ORDER = 41
FLAGSHIP = True
DEFAULT_DELTA = 0.1


def add_arguments(p) -> None:
    """Add the options the module docstring explains to ``p`` (hook, see :mod:`femot.demos`)."""
    p.add_argument("--gamma", type=float, default=1e-3, help="quadratic regularization (default 1e-3)")
    p.add_argument("--delta", type=float, default=None,
                   help=f"smoothing radius of T^delta (default {DEFAULT_DELTA:g}: the largest the data's distance to "
                        "the boundary allows; it is below the 4 h a smoothing study needs, which is fine for this "
                        "scale demo)")
    p.add_argument("--eps", type=float, default=0.0, help="dual regularization of the core (default 0)")
    p.add_argument("--samples", type=int, default=400, help="samples of the empirical mu2 (default 400)")
    p.add_argument("--mesh1", default="lshaped", help="mesh of Omega_1 (default lshaped)")
    p.add_argument("--mesh2", default="disk", help="mesh of Omega_2 (default disk; disk_coarse with --quick)")
    p.add_argument("--linear-solver", default="auto", choices=["auto", "direct", "cg"],
                   help="linear solver of the core's Newton steps (default auto)")
    p.add_argument("--levels", type=int, default=None,
                   help="run the gamma, delta -> 0 schedule with K levels against the closed-form affine "
                        "reference instead (matrix-free, coarse-to-fine; the last level has --m-last^2 nodes)")
    p.add_argument("--m-last", type=int, default=None,
                   help="vertices per side of the finest square mesh with --levels (default 201, 41 with --quick)")


def _bump(center, r):
    """(r^2 - |x - center|^2)_+^2 normalized to unit mass (int = pi r^6 / 3)."""
    c = np.asarray(center, dtype=float)
    scale = 3.0 / (np.pi * r**6)
    return lambda x: scale * np.maximum(0.0, r * r - ((x - c) ** 2).sum(axis=1)) ** 2


def problem(mesh1, mesh2, n_samples: int, seed: int):
    """The demo's marginals: three bumps on Omega_1 and samples of an annulus on Omega_2.

    Parameters
    ----------
    mesh1 : skfem.Mesh
        Mesh on which the density ``mu1`` (three smooth bumps of total mass 1) is given.
    mesh2 : skfem.Mesh
        Mesh of Omega_2 (not used: ``mu2`` is an empirical measure).
    n_samples : int
        Number of samples of ``mu2``.
    seed : int
        Seed of the samples.

    Returns
    -------
    mu1 : Density
        Sum of three weighted bump densities, mass 1.
    mu2 : Empirical
        Empirical measure of mass 1 on the annulus ``0.35 <= |y| <= 0.7``, denser near
        angle 0 (von Mises angles).
    """
    from femot.fem import Density, Empirical

    parts = [((-0.5, -0.5), 0.30, 0.5), ((0.5, -0.55), 0.25, 0.3), ((-0.55, 0.5), 0.25, 0.2)]
    mu1 = None
    for c, r, w in parts:
        d = w * Density(_bump(c, r), mesh1, mass=1.0)
        mu1 = d if mu1 is None else mu1 + d
    rng = np.random.default_rng(seed)
    # Annulus 0.35 <= |y| <= 0.7, denser towards angle 0 (von Mises angles).
    rad = np.sqrt(rng.uniform(0.35**2, 0.7**2, n_samples))
    ang = rng.vonmises(0.0, 1.0, n_samples)
    mu2 = Empirical(np.column_stack([rad * np.cos(ang), rad * np.sin(ang)]), mass=1.0)
    return mu1, mu2


def run_levels(args) -> dict:
    """The --levels schedule (numerics in ``femot.studies.affine_study``).

    Parameters
    ----------
    args : argparse.Namespace
        The demo's options; uses ``levels``, ``m_last``, ``quick`` and ``quiet``.

    Returns
    -------
    dict
        The summary of :func:`femot.studies.affine_study.affine_study` (rows ``levels``, the
        exact ``W2_squared``, fitted rates) with ``success`` and, with ``--plot``, ``figures``.
    """
    from femot.studies.affine_study import affine_study

    say = printer(args.quiet)
    m_last = args.m_last or (41 if getattr(args, "quick", False) else 201)
    say("gamma, delta -> 0 in 2D x 2D against a closed form: mu2 = T#mu1, T(x) = A x + b (A SPD) optimal for "
        "|x - y|^2;\nsquare (m x m P1) -> parallelogram ((m+1) x (m+1) P1), lumped quadrature, delta = 4h, "
        "gamma = delta^4, GeometricCost + coarse-to-fine")
    hdr = (f"{'m':>4} {'n1':>6} {'n2':>6} {'pairs':>13} {'gamma':>9} {'nit':>4} {'time s':>7} {'marg err':>9} "
           f"{'cost':>12} {'|cost-W2^2|':>11} {'map err L2':>10} {'cert':>4}")
    say(hdr + "\n" + "-" * len(hdr))

    def show(r):
        say(f"{r['m']:4d} {r['n1']:6d} {r['n2']:6d} {r['pairs']:13,d} {r['gamma']:9.2e} {r['nit']:4d} "
            f"{r['time_s']:7.1f} {r['marginal_error']:9.1e} {r['transport_cost']:12.8f} {r['cost_error']:11.3e} "
            f"{r['map_error_l2']:10.3e} {'yes' if r['certified'] else 'NO':>4}", flush=True)

    out = affine_study(args.levels, m_last, tol=1e-9, callback=show)
    say(f"W_2^2 = {out['W2_squared']:.12f} (tensor Gauss-Legendre on mu1, exact to rounding)")
    say(f"fitted rates in h: transport cost error {out['rate_cost']:.2f}, barycentric map error (L2) "
        f"{out['rate_map_l2']:.2f}")
    rows = out["levels"]
    out["success"] = all(r["success"] and r["certified"] and r["marginal_error"] <= 1e-8 for r in rows)
    if args.plot:
        out["figures"] = [_plot_levels(args.plot, out)]
    return out


def _plot_levels(folder, out):
    plt = figure_folder(folder)
    rows = out["levels"]
    h = np.array([r["h"] for r in rows])
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for key, rate, label in (("cost_error", out["rate_cost"], "|transport cost - W_2^2|"),
                             ("map_error_l2", out["rate_map_l2"], "barycentric map error (L2)")):
        e = np.array([r[key] for r in rows])
        ax.loglog(h, e, "o-", label=f"{label}, rate {rate:.2f}")
    ax.set_xlabel("h (delta = 4h, gamma = delta^4)")
    ax.set_title(f"affine reference, finest level {rows[-1]['n1']:,} x {rows[-1]['n2']:,} nodes")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, folder, "transport_2d_levels.png")


def run(args) -> dict:
    """Run the computation the module docstring describes; return its summary (hook, see :mod:`femot.demos`)."""
    if getattr(args, "levels", None):
        return run_levels(args)
    from femot.fem import load_mesh, quadrature, solve_lower_level

    quick = bool(getattr(args, "quick", False))
    say = printer(args.quiet)
    mesh2_name = "disk_coarse" if quick and args.mesh2 == "disk" else args.mesh2
    m1, m2 = load_mesh(args.mesh1), load_mesh(mesh2_name)
    q1 = quadrature(m1, "gauss", order=1)  # one node per triangle
    q2 = quadrature(m2, "lumped")
    mu1, mu2 = problem(m1, m2, args.samples, args.seed)
    delta_given = args.delta is not None
    args.delta = float(args.delta) if delta_given else DEFAULT_DELTA
    say(f"Omega_1 = {args.mesh1} ({q1.rule}, n1 = {q1.n}), Omega_2 = {mesh2_name} ({q2.rule}, n2 = {q2.n}), "
        f"{q1.n * q2.n:,} pairs; gamma = {args.gamma:g}, delta = {args.delta:g}, eps = {args.eps:g}, "
        f"seed = {args.seed}")
    from femot.fem.smoothing import mesh_size, resolution_problem

    h = max(mesh_size(m1), mesh_size(m2))
    unresolved = resolution_problem(h, args.delta, what="--delta")  # a scale demo: said, not refused
    if unresolved and delta_given:
        say(f"note: {unresolved}")
    elif unresolved:
        say(f"delta = {args.delta:g} is {args.delta / h:.2g} h (h = {h:.3g}, the longest edge): a scale demo; "
            f"smoothing-accuracy studies use delta >= 4 h (femot study refuses less)")
    tracemalloc.start()
    t0 = time.perf_counter()
    r = solve_lower_level(mu1, mu2, q1, q2, args.gamma, args.delta, args.eps, cost=2.0,
                          qrot_options={"linear_solver": args.linear_solver})
    elapsed = time.perf_counter() - t0
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux
    m1mass, m2mass = q1.weights @ r.m1, q2.weights @ r.m2
    summary = {
        "h": h, "delta_over_h": args.delta / h, "delta_resolved": unresolved is None,
        "n1": q1.n, "n2": q2.n, "n_pairs": q1.n * q2.n, "success": bool(r.success and r.marginal_error <= 1e-8),
        "solver_success": r.success, "message": r.message, "nit": r.nit, "marginal_error": r.marginal_error,
        "time_s": round(elapsed, 3), "peak_memory_mb": round(rss_peak, 1),
        "traced_peak_memory_mb": round(traced_peak, 1), "gamma": args.gamma, "delta": args.delta,
        "eps": args.eps, "plan_nnz": int(r.plan.nnz), "plan_fill": r.plan.nnz / (q1.n * q2.n),
        "transport_cost": r.transport_cost, "mass1": m1mass, "mass2": m2mass,
    }
    say(f"{'n1':>6} {'n2':>6} {'pairs':>10} {'nnz(pi)':>9} {'nit':>4} {'marginal err':>12} {'cost':>10} "
        f"{'time s':>7} {'peak MB':>8}")
    say(f"{q1.n:>6d} {q2.n:>6d} {q1.n * q2.n:>10,d} {r.plan.nnz:>9,d} {r.nit:>4d} {r.marginal_error:>12.2e} "
        f"{r.transport_cost:>10.6f} {elapsed:>7.2f} {rss_peak:>8.0f}")
    say(f"discrete masses: {m1mass:.15f} and {m2mass:.15f} (= 1 + delta); peak memory: {rss_peak:.0f} MB "
        f"process RSS, {traced_peak:.0f} MB traced during the solve")
    if args.plot:
        summary["figures"] = _plots(args.plot, r, mu2)
    return summary


def _draw_field(ax, q, values, cmap="viridis"):
    import matplotlib.tri as mtri

    mesh = q.mesh
    tri = mtri.Triangulation(mesh.p[0], mesh.p[1], mesh.t.T)
    if q.rule == "lumped":
        return ax.tripcolor(tri, values, shading="gouraud", cmap=cmap)
    if q.n == mesh.t.shape[1]:  # one Gauss point per triangle
        return ax.tripcolor(tri, facecolors=values, cmap=cmap, edgecolors="face")
    return ax.scatter(q.nodes[:, 0], q.nodes[:, 1], c=values, s=3, cmap=cmap)


def _outline(ax, mesh, **kw):
    from femot.fem.meshes import boundary_facets

    for seg in boundary_facets(mesh):
        ax.plot(seg[:, 0], seg[:, 1], **kw)


def _plots(folder, r, mu2) -> list[str]:
    from femot.fem import barycentric_map, export_plan

    plt = figure_folder(folder)
    out: list[str] = []
    fig, axs = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, q, m, title in ((axs[0], r.q1, r.m1, "T^delta mu1 on the L-shape"),
                            (axs[1], r.q2, r.m2, "T^delta mu2 on the disk")):
        im = _draw_field(ax, q, m)
        fig.colorbar(im, ax=ax, label="smoothed density (w.r.t. the quadrature weights)")
        ax.set_aspect("equal")
        ax.set_title(title)
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
    axs[1].plot(mu2.points[:, 0], mu2.points[:, 1], "w.", ms=1.5, alpha=0.6, label="samples of mu2")
    axs[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_figure(fig, folder, "marginals.png", out)

    T = barycentric_map(r)
    shift = r.delta / r.q1.measure
    src = np.flatnonzero(r.m1 > 3 * shift)  # nodes carrying mass of mu1 (not only the shift)
    rng = np.random.default_rng(0)
    if src.size > 400:
        src = np.sort(rng.choice(src, 400, replace=False))
    fig, ax = plt.subplots(figsize=(7.2, 6))
    _outline(ax, r.q1.mesh, color="tab:blue", lw=1)
    _outline(ax, r.q2.mesh, color="tab:orange", lw=1)
    x, t = r.q1.nodes[src], T[src]
    arrows = ax.quiver(x[:, 0], x[:, 1], t[:, 0] - x[:, 0], t[:, 1] - x[:, 1], r.m1[src], angles="xy",
                       scale_units="xy", scale=1, width=0.003, cmap="plasma", alpha=0.8)
    fig.colorbar(arrows, ax=ax, shrink=0.8, label="T^delta mu1 at the arrow's start (density)")
    ax.plot(mu2.points[:, 0], mu2.points[:, 1], ".", color="tab:orange", ms=2, label="samples of mu2")
    ax.plot([], [], color="tab:blue", lw=1, label="boundary of Omega_1 (L-shape)")
    ax.plot([], [], color="tab:orange", lw=1, label="boundary of Omega_2 (disk)")
    ax.legend(fontsize=7, loc="lower left")
    ax.set_aspect("equal")
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    ax.set_title(f"where mass goes: arrows from x to the barycenter of pi(x, .)\n({src.size} nodes carrying mu1)",
                 fontsize=10)
    fig.tight_layout()
    save_figure(fig, folder, "mass_flow.png", out)
    out += [str(p) for p in export_plan(r, os.path.join(folder, "plan.vtu"))]
    return out
