"""Demo qrot-1d: quadratically regularized plans approach the exact plan as gamma -> 0.

Two densities on a uniform grid of [0, 1] (a two-bump mixture and a skewed bump,
weights 1/n), cost |x - y|^2.  For decreasing gamma the regularized plan
S_gamma(mu1, mu2) (Part III (H_gamma), weighted) is compared with the exact
optimal plan from monotone rearrangement: the cost gap
<c, pi_gamma> - W_2^2, the plan error measured through the barycentric maps
(|B_gamma - B|_{L2(mu1)} with B(x_i) = sum_j pi_ij y_j / sum_j pi_ij, a weak
measure of the plan that does not depend on the grid), the L1 distance of the
masses, the fraction of nonzero entries, and the Newton iterations.
"""
from __future__ import annotations

import numpy as np

from femot.demos.common import figure_folder, printer, save_figure

NAME = "qrot-1d"
SUMMARY = "regularized plans for decreasing gamma beside the exact plan (1D grid)"
ORDER = 10
FLAGSHIP = True


def add_arguments(p) -> None:
    """Add the options the module docstring explains to ``p`` (hook, see :mod:`femot.demos`)."""
    p.add_argument("--n", type=int, default=400, help="grid points per marginal (default 400)")
    p.add_argument("--gammas", type=float, nargs="+", default=[1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7],
                   help="regularization levels (default 1e-1 ... 1e-7)")


def marginals(n: int):
    """The demo's two marginal densities on a midpoint grid of [0, 1].

    Parameters
    ----------
    n : int
        Number of grid points (cell midpoints of ``n`` equal cells).

    Returns
    -------
    x : ndarray, shape (n,)
        The grid points.
    w : ndarray, shape (n,)
        Quadrature weights ``1 / n``.
    m1 : ndarray, shape (n,)
        Density of the first marginal (two Gaussian bumps on a floor), ``w @ m1 = 1``.
    m2 : ndarray, shape (n,)
        Density of the second marginal, ``w @ m2 = 1``.
    """
    x = (np.arange(n) + 0.5) / n
    w = np.full(n, 1.0 / n)
    m1 = np.exp(-0.5 * ((x - 0.25) / 0.07) ** 2) + 0.6 * np.exp(-0.5 * ((x - 0.65) / 0.1) ** 2) + 0.05
    m2 = (x ** 2) * np.exp(-((x - 0.7) / 0.15) ** 2) + 0.02
    return x, w, m1 / (w @ m1), m2 / (w @ m2)


def run(args) -> dict:
    """Run the computation the module docstring describes; return its summary (hook, see :mod:`femot.demos`)."""
    from femot.core import exact_ot_1d, solve_qrot

    n = 120 if args.quick else args.n
    gammas = args.gammas[:4] if args.quick else args.gammas
    x, w, m1, m2 = marginals(n)
    c = (x[:, None] - x[None, :]) ** 2
    exact = exact_ot_1d(x, x, m1, m2, w, w)
    T_exact = exact.masses.toarray()
    a = w * m1

    def bary(T):
        return (T @ x) / np.maximum(T.sum(1), 1e-300)

    B_exact = bary(T_exact)
    levels = []
    plans = []
    x0 = None
    say = printer(args.quiet)
    say(f"n = {n} grid points per marginal, cost |x - y|^2, exact W_2^2 = {exact.cost:.10f}")
    say(f"{'gamma':>9} {'iters':>6} {'residual':>10} {'cost gap':>11} {'map error':>10} "
        f"{'plan L1':>9} {'nonzeros':>9} {'time s':>7}")
    for g in gammas:
        r = solve_qrot(c, m1, m2, g, 0.0, w, w, x0=x0, tol=1e-10)
        x0 = (r.alpha, r.beta)  # warm start along the path
        T = r.plan.toarray() * (w[:, None] * w[None, :])
        lvl = {
            "gamma": g, "success": bool(r.success), "iterations": int(r.nit), "residual": float(r.residual),
            "cost": r.transport_cost(), "cost_gap": r.transport_cost() - exact.cost,
            "plan_error": float(np.sqrt(a @ (bary(T) - B_exact) ** 2)),
            "plan_error_l1": float(np.abs(T - T_exact).sum()), "nonzero_fraction": r.plan.nnz / c.size,
            "time_s": float(r.time_s),
        }
        levels.append(lvl)
        plans.append(T)
        say(f"{g:9.1e} {lvl['iterations']:6d} {lvl['residual']:10.2e} {lvl['cost_gap']:11.3e} "
            f"{lvl['plan_error']:10.3e} {lvl['plan_error_l1']:9.3f} {lvl['nonzero_fraction']:9.2%} "
            f"{lvl['time_s']:7.3f}")
    gaps = np.array([lv["cost_gap"] for lv in levels])
    errs = np.array([lv["plan_error"] for lv in levels])
    gs = np.array(gammas)
    pos = gaps > 0
    rate_cost = float(np.polyfit(np.log(gs[pos]), np.log(gaps[pos]), 1)[0]) if pos.sum() >= 2 else None
    rate_plan = float(np.polyfit(np.log(gs), np.log(errs), 1)[0])
    say("columns: cost gap = <c, pi_gamma> - W_2^2; map error = L2(mu1) distance of the barycentric maps of "
        "pi_gamma and the exact plan;\n         plan L1 = sum_ij |w_i w_j pi_ij - P_ij| (P the exact plan's "
        "masses; at most 2); nonzeros = share of the n^2 pairs in supp pi_gamma")
    say(f"fitted rates: cost gap ~ gamma^{rate_cost:.2f}, map error ~ gamma^{rate_plan:.2f}")
    summary = {
        "n": n, "exact_cost": exact.cost, "levels": levels, "rate_cost_gap": rate_cost, "rate_plan_error": rate_plan,
        "success": all(lv["success"] for lv in levels),
    }
    if args.plot:
        summary["figures"] = _figures(args.plot, x, plans, T_exact, levels, gs, gaps, errs)
    return summary


def _figures(outdir, x, plans, T_exact, levels, gs, gaps, errs) -> list[str]:
    plt = figure_folder(outdir)
    out: list[str] = []
    k = len(plans) + 1
    ncol = min(k, 4)
    nrow = -(-k // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.7 * ncol, 2.8 * nrow), squeeze=False)
    for ax in axes.flat[k:]:
        ax.axis("off")
    axes = axes.flat
    ext = (0, 1, 1, 0)
    for ax, T, lv in zip(axes, plans, levels):
        ax.imshow(T > 0, cmap="Blues", extent=ext, interpolation="nearest")
        ax.imshow(np.ma.masked_where(T_exact == 0, T_exact), cmap="Reds", extent=ext, interpolation="nearest",
                  alpha=0.9)
        ax.set_title(f"gamma = {lv['gamma']:.0e}\n{lv['nonzero_fraction']:.1%} nonzero", fontsize=8)
        ax.set_xlabel("y", fontsize=8)
        ax.set_ylabel("x", fontsize=8)
    axes[k - 1].imshow(np.ma.masked_where(T_exact == 0, T_exact), cmap="Reds", extent=ext, interpolation="nearest")
    axes[k - 1].set_title("exact plan\n(monotone rearrangement)", fontsize=8)
    axes[k - 1].set_xlabel("y")
    fig.suptitle("support of the regularized plan (blue) and exact plan (red)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, outdir, "plans.png", out)

    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    pos = gaps > 0
    ax.loglog(gs[pos], gaps[pos], "o-", label="cost gap <c, pi_gamma> - W_2^2")
    ax.loglog(gs, errs, "s-", label="map error |B_gamma - B|_L2(mu1)")
    ax.set_xlabel("gamma")
    ax.invert_xaxis()
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, outdir, "convergence.png", out)
    return out
