"""Demo tracking-1d: identify a marginal from a measured plan in the W^{-1,p'} tracking norm.

Part II, Section 3.2.1, eq. (3.11) with the regularized lower level (3.13), on
Omega_1 = Omega_2 = [0, 1]:

    min_{mu1}  |grad G(pi - pi_d)|^{p'}_{L^{p'}(D)} + nu |mu1 - mu1_d|_M,
    pi = S_gamma(T^delta mu1, T^delta mu2^d),

where G solves the Poisson problem on the observation domain D, a proper subdomain of the
square (default the rectangle (0.125, 0.875) x (0.0625, 0.9375)), with zero boundary values on dD.
The measurement pi_d is the plan of a known control mu1_true:

* ``--data regularized`` (default): pi_d = S_gamma(T^delta mu1_true, T^delta mu2^d), so
  mu1_true makes the tracking term vanish (a known solution up to the small nu-term);
* ``--data exact``: the exact optimal plan between mu1_true and mu2^d (monotone
  rearrangement), a measurement the regularized model cannot match exactly.

The prior mu1_d is the uniform measure on the control vertices.  The trust-region method
(Part III Algorithm 4.1) starts from the uniform control; the Radon-norm term is an l1
norm of masses, nonsmooth wherever mu1 = mu1_d.  The demo reports the recovery error
W_1(mu1, mu1_true) against that of the start, the objective at mu1 and at mu1_true, and a
finite-difference check of the reduced gradient at the start.
"""
from __future__ import annotations

import time

import numpy as np

from femot.demos.common import figure_folder, printer, save_figure

NAME = "tracking-1d"
SUMMARY = "1D x 1D W^{-1,p'} tracking of a measured plan on a subdomain D: recover the marginal mu1"
ORDER = 55
FLAGSHIP = True


def add_arguments(p) -> None:
    """Add the options the module docstring explains to ``p`` (hook, see :mod:`femot.demos`)."""
    p.add_argument("--cells", type=int, default=48, help="cells of each mesh of [0, 1] (default 48; 32 with --quick)")
    p.add_argument("--p-prime", dest="p_prime", type=float, default=2.0, help="exponent p' in (1, 2] (default 2)")
    p.add_argument("--nu", type=float, default=1e-4, help="weight of |mu1 - mu1_d|_M (default 1e-4)")
    p.add_argument("--gamma", type=float, default=1e-3, help="quadratic regularization (default 1e-3)")
    p.add_argument("--delta", type=float, default=0.1, help="smoothing radius (default 0.1)")
    p.add_argument("--rho", type=float, default=0.15, help="controls live at distance >= rho from 0, 1 (0.15)")
    p.add_argument("--data", choices=("regularized", "exact"), default="regularized",
                   help="measured plan: regularized plan of the known control (default) or its exact plan")
    p.add_argument("--rtol", type=float, default=1e-3,
                   help="trust region stops when theta_R <= rtol * theta_R(uniform) (default 1e-3)")
    p.add_argument("--max-iter", type=int, default=400, help="trust-region iterations (default 400)")


D_BOX = (0.125, 0.875, 0.0625, 0.9375)  # aligned with the grid for 16k cells


def in_D(c):
    """The observation domain: cells of the product mesh with centroid in the open box D_BOX.

    Parameters
    ----------
    c : ndarray, shape (2, ncells)
        Cell centroids ``(x1, x2)`` of the product mesh of Omega_1 x Omega_2.

    Returns
    -------
    ndarray of bool, shape (ncells,)
        True for the observed cells.
    """
    a, b, lo, hi = D_BOX
    return (c[0] > a) & (c[0] < b) & (c[1] > lo) & (c[1] < hi)


def run(args) -> dict:
    """Run the computation the module docstring describes; return its summary (hook, see :mod:`femot.demos`)."""
    from skfem import MeshLine

    from femot.core import monotone_coupling_1d, wasserstein_pp_1d
    from femot.fem import quadrature
    from femot.problems.tracking import TrackingProblem

    quick = bool(getattr(args, "quick", False))
    say = printer(args.quiet)
    cells = 32 if quick and args.cells == 48 else int(args.cells)
    rho, delta, gamma = float(args.rho), float(args.delta), float(args.gamma)
    mesh = MeshLine(np.linspace(0.0, 1.0, cells + 1))
    from femot.fem.smoothing import check_resolution, resolution_problem

    if quick:  # the quick preset (32 cells) is coarser than 4 cells per radius: said, not refused
        unresolved = resolution_problem(1.0 / cells, delta, what="--delta (quick preset)")
        if unresolved:
            say(f"note: {unresolved}")
    else:
        check_resolution(1.0 / cells, delta, what="--delta (use more --cells)")
        unresolved = None
    x = mesh.p[0]
    q = quadrature(mesh)
    inside = (x >= rho - 1e-12) & (x <= 1 - rho + 1e-12)

    def bumps(parts):
        m = np.where(inside, sum(a * np.exp(-((x - c) / s) ** 2) for c, s, a in parts), 0.0)
        return m / m.sum()

    m_true = bumps([(0.33, 0.06, 1.0), (0.70, 0.05, 0.5)])
    mu2 = bumps([(0.50, 0.12, 1.0)])
    t0 = time.perf_counter()
    if args.data == "regularized":
        gen = TrackingProblem(mesh, mesh, mu2, np.zeros((cells + 1, cells + 1)), 0.0, gamma, delta, rho=rho)
        res = gen.lower.solve(m_true[gen.control_vertices])
        if not res.success:
            raise RuntimeError(f"the plan of the known control could not be computed: {res.message}")
        pi_d = res.plan.toarray()
    else:
        pi_d = monotone_coupling_1d(x, x, m_true, mu2).toarray() / np.outer(q.weights, q.weights)
    P = TrackingProblem(mesh, mesh, mu2, pi_d, float(args.nu), gamma, delta, rho=rho, p_prime=float(args.p_prime),
                        subdomain=in_D)
    say(f"[0, 1] x [0, 1], {cells} cells per factor; D = ({D_BOX[0]}, {D_BOX[1]}) x ({D_BOX[2]}, {D_BOX[3]}) "
        f"({P.D.nvertices} of {P.product.nvertices} product vertices); p' = {P.p_prime:g}, nu = {P.nu:g}, "
        f"gamma = {gamma:g}, delta = {delta:g}, {P.n} control vertices, data: {args.data}")

    # finite-difference check of the reduced gradient at the start (a tangent direction)
    x0 = P.uniform()
    rng = np.random.default_rng(args.seed)
    dirn = rng.standard_normal(P.n)
    dirn -= dirn.mean()
    f0, g0 = P(x0)
    step = 1e-6 * max(1.0, np.abs(x0).max()) / np.abs(dirn).max()
    fd = (P(x0 + step * dirn)[0] - P(x0 - step * dirn)[0]) / (2 * step)
    fd_err = abs(fd - g0 @ dirn) / max(abs(g0 @ dirn), 1e-300)

    r = P.solve(options={"max_iter": int(args.max_iter)}, rtol=float(args.rtol))
    total = time.perf_counter() - t0
    truth = P.evaluate(m_true[P.control_vertices], gradient=False)
    w1 = wasserstein_pp_1d(x, x, r.masses, m_true, p=1)
    w1_start = wasserstein_pp_1d(x, x, P.full(x0), m_true, p=1)
    rows = [("TR iterations", r.nit), ("Newton iterations", r.newton_iterations), ("lower solves", r.lower_solves),
            ("objective F(mu1)", f"{r.fun:.6e}"), ("  misfit", f"{r.misfit:.4e}"),
            ("  |mu1 - mu1_d|_M", f"{r.radon:.4f}"),
            ("F(mu1_true)", f"{truth['fun']:.6e} (misfit {truth['misfit']:.3e})"),
            ("F(uniform start)", f"{f0:.6e}"), ("W1(mu1, mu1_true)", f"{w1:.4e}"),
            ("W1(start, mu1_true)", f"{w1_start:.4e}"),
            ("gradient FD rel. error", f"{fd_err:.2e}"), ("stationarity", f"{r.stationarity:.2e} (tol {r.tol:.1e})"),
            ("time s", f"{total:.1f}"), ("status", r.message)]
    for k, v in rows:
        say(f"  {k:<24s} {v}")
    recovered = w1 < 0.25 * w1_start if args.data == "regularized" else r.fun <= truth["fun"] * (1 + 1e-6)
    summary = {
        "delta_over_h": delta * cells, "delta_resolved": unresolved is None,
        "cells": cells, "p_prime": P.p_prime, "nu": P.nu, "gamma": gamma, "delta": delta, "rho": rho, "data": args.data,
        "D": list(D_BOX), "D_vertices": int(P.D.nvertices), "product_vertices": int(P.product.nvertices),
        "control_nodes": int(P.n), "objective": float(r.fun), "misfit": float(r.misfit), "radon": float(r.radon),
        "objective_true_control": float(truth["fun"]), "misfit_true_control": float(truth["misfit"]),
        "objective_start": float(f0), "control_w1_error": w1, "start_w1_error": w1_start,
        "gradient_fd_rel_error": fd_err, "tr_iterations": int(r.nit), "newton_iterations": int(r.newton_iterations),
        "lower_solves": int(r.lower_solves), "lower_failures": int(r.lower_failures),
        "stationarity": float(r.stationarity),
        "tol": float(r.tol), "tr_success": bool(r.success), "message": r.message, "recovered": bool(recovered),
        "time_s": round(total, 3), "success": bool(r.success and recovered and fd_err < 1e-5),
    }
    if args.plot:
        summary["figures"] = _plots(args.plot, P, r, x, q, m_true, pi_d)
    return summary


def _plots(folder, P, r, x, q, m_true, pi_d) -> list[str]:
    import matplotlib.tri as mtri
    from matplotlib.patches import Rectangle

    plt = figure_folder(folder)
    out: list[str] = []
    fig, axs = plt.subplots(1, 3, figsize=(16, 4.4))
    ax = axs[0]
    ax.plot(x, r.masses / q.weights, "-", lw=1.8, label="recovered μ1")
    ax.plot(x, m_true / q.weights, "k:", label="true μ1")
    ax.plot(x, P.mu1_d / q.weights, "-.", color="gray", alpha=0.7, label="prior μ1_d")
    ax.plot(x, P.mu2 / q.weights, "--", color="tab:green", alpha=0.6, label="μ2^d")
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    ax.set_title("controls")
    ax.legend(fontsize=8)
    a, b, lo, hi = D_BOX
    for ax, img, title in ((axs[1], r.plan.toarray(), "plan π of the recovered μ1"),
                           (axs[2], pi_d, "measured plan π_d")):
        im = ax.imshow(img.T, origin="lower", extent=[0, 1, 0, 1], cmap="magma", aspect="auto", interpolation="nearest")
        ax.add_patch(Rectangle((a, lo), b - a, hi - lo, fill=False, ec="cyan", lw=1.2, ls="--", label="D"))
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
        ax.set_title(title)
        ax.legend(fontsize=8, loc="upper left")
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    save_figure(fig, folder, "control_plan.png", out, dpi=120)

    fig, ax = plt.subplots(figsize=(5.8, 4.6))
    D = P.D
    tri = mtri.Triangulation(D.p[0], D.p[1], D.t.T)
    im = ax.tripcolor(tri, r.phi, shading="gouraud", cmap="RdBu_r")
    ax.set_aspect("equal")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"φ = G(π - π_d) on D at the solution\n|∇φ|^p' = {r.misfit:.3e}", fontsize=10)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    save_figure(fig, folder, "adjoint_state.png", out, dpi=120)
    return out
