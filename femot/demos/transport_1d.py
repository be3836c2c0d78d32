"""Demo transport-1d: regularized, smoothed transport cost -> exact W_beta^beta on [0, 1].

mu1 = 0.6 * (Gaussian mixture truncated to [0, 1]) + Diracs at 0.12 and 0.85,
mu2 = another truncated Gaussian mixture. Along a coupled schedule (gamma_n, delta_n),
delta_n = C gamma_n^{1/(d+s)} with d = 2 (Part II, (3.1); defaults C = 2, s = 0.5,
gamma_0 = 8e-4, gamma_{n+1} = gamma_n / 4), each level solves the lower level
S_gamma(T^delta mu1, T^delta mu2) on [0, 1]^2 (mesh size h = delta / 6, warm-started
from the previous level's potentials) and compares the transport cost
sum_ij w_i w_j c_ij pi_ij with the exact W_beta^beta(mu1, mu2), computed from the
quantile functions (``femot.fem.wasserstein_1d``, accurate to ~1e-15 here).

The Gaussians charge the whole of [0, 1], so the supports touch the boundary: every
level works on the enlarged domain [-rho, 1 + rho], rho = max delta_n (Part II,
Lemma 2.4). The error is dominated by the smoothing (the shift delta / |Omega| adds
mass delta), so it behaves like delta_n, i.e. gamma_n^{1/(d+s)}; the regularization
error (of higher order in gamma) is smaller along this schedule.
"""
from __future__ import annotations

import os
import time

import numpy as np

from femot.demos.common import add_coupling_options, figure_folder, printer, save_figure

NAME = "transport-1d"
SUMMARY = "1D regularized transport cost vs exact W_beta^beta along a coupled (gamma, delta) schedule"
ORDER = 40
FLAGSHIP = True


def add_arguments(p) -> None:
    """Add the options the module docstring explains to ``p`` (hook, see :mod:`femot.demos`)."""
    p.add_argument("--levels", type=int, default=7, help="number of levels (default 7; at most 5 with --quick)")
    p.add_argument("--gamma0", type=float, default=8e-4, help="gamma of the first level (default 8e-4)")
    p.add_argument("--factor", type=float, default=0.25, help="gamma_{n+1} / gamma_n (default 0.25)")
    add_coupling_options(p, C=2.0, s=0.5)
    p.add_argument("--nodes-per-delta", type=float, default=6.0, help="mesh size h = delta / this (default 6)")


def gaussian_mixture(components):
    """pdf and cdf of a Gaussian mixture [(mean, std, weight), ...] restricted to [0, 1], mass 1.

    Parameters
    ----------
    components : sequence of (float, float, float)
        ``(mean, std, weight)`` of each component; std and weight positive.

    Returns
    -------
    pdf : callable
        ``pdf(x)`` for points ``x`` of shape (n, 1): the renormalized density, zero off [0, 1].
    cdf : callable
        ``cdf(t)`` for an array ``t`` of positions: the distribution function (0 left of 0, 1
        right of 1).
    """
    from scipy.special import ndtr

    comps = np.asarray(components, dtype=float)
    z = sum(w * (ndtr((1 - m) / s) - ndtr(-m / s)) for m, s, w in comps)

    def pdf(x):
        x = np.asarray(x, dtype=float)[:, 0]
        inside = (x >= 0) & (x <= 1)
        val = sum(w * np.exp(-0.5 * ((x - m) / s) ** 2) / (s * np.sqrt(2 * np.pi)) for m, s, w in comps)
        return np.where(inside, val / z, 0.0)

    def cdf(x):
        xc = np.clip(np.asarray(x, dtype=float), 0.0, 1.0)
        return sum(w * (ndtr((xc - m) / s) - ndtr(-m / s)) for m, s, w in comps) / z

    return pdf, cdf


def problem():
    """The two marginals (probability measures on [0, 1])."""
    from skfem import MeshLine

    from femot.fem import Density, DiracSum

    base = MeshLine(np.linspace(0.0, 1.0, 201))
    p1, c1 = gaussian_mixture([(0.30, 0.08, 0.5), (0.62, 0.05, 0.5)])
    p2, c2 = gaussian_mixture([(0.45, 0.10, 0.7), (0.80, 0.06, 0.3)])
    mu1 = 0.6 * Density(p1, base, mass=1.0, cdf=c1) + DiracSum([0.12, 0.85], [0.2, 0.2])
    mu2 = Density(p2, base, mass=1.0, cdf=c2)
    return mu1, mu2


def run(args) -> dict:
    """Run the computation the module docstring describes; return its summary (hook, see :mod:`femot.demos`)."""
    from skfem import MeshLine

    from femot.fem import coupled_schedule, quadrature, wasserstein_1d
    from femot.fem.smoothing import check_resolution
    from femot.studies.paths import lower_level_path

    quick = bool(getattr(args, "quick", False))
    levels = int(args.levels) if args.levels is not None else 7
    if quick:
        levels = min(levels, 5)
    say = printer(args.quiet)
    beta = float(args.beta)
    mu1, mu2 = problem()
    t0 = time.perf_counter()
    exact = wasserstein_1d(mu1, mu2, beta)
    exact_check = wasserstein_1d(mu1, mu2, beta, grid=4096)
    ref_acc = abs(exact - exact_check)
    say(f"exact W_beta^beta (beta = {beta:g}) = {exact:.15f}  (grid doubling changes it by {ref_acc:.1e}, "
        f"{time.perf_counter() - t0:.2f} s)")
    d = 2
    sch = coupled_schedule(d=d, n_levels=levels, s=args.s, C=args.C, gamma0=args.gamma0, factor=args.factor)
    rho = float(sch.deltas.max())
    say(f"schedule: delta = {args.C:g} * gamma^(1/(d+s)), d = {d}, s = {args.s:g}; enlarged domain "
        f"[-{rho:.3g}, {1 + rho:.3g}] (Part II Lemma 2.4)")
    rows = []
    header = f"{'level':>5} {'gamma':>10} {'delta':>8} {'gamma/delta^d':>13} {'nodes':>6} {'cost':>12} " \
             f"{'cost error':>11} {'marg. err':>9} {'nit':>4} {'time s':>7}"
    say(header)

    def level_quadrature(k, gamma, delta):
        h = delta / float(args.nodes_per_delta) * (1.5 if quick else 1.0)
        n = int(np.ceil(1.0 / h))
        check_resolution(1.0 / n, delta, what=f"level {k} (--nodes-per-delta)")
        return quadrature(MeshLine(np.linspace(0.0, 1.0, n + 1)))

    def report(k, gamma, delta, result, dt):
        err = result.transport_cost - exact
        row = {"level": k, "gamma": gamma, "delta": delta, "d": d, "ratio": float(sch.ratios[k]),
               "n_nodes": result.q1.n, "n_pairs": result.q1.n * result.q2.n, "cost": result.transport_cost,
               "exact": exact, "cost_error": abs(err), "signed_error": err,
               "marginal_error": result.marginal_error, "success": result.success, "nit": result.nit,
               "plan_nnz": int(result.plan.nnz), "time_s": round(dt, 3)}
        rows.append(row)
        say(f"{k:>5d} {gamma:>10.3e} {delta:>8.4f} {row['ratio']:>13.3e} {row['n_nodes']:>6d} "
            f"{row['cost']:>12.8f} {err:>+11.3e} {row['marginal_error']:>9.1e} {row['nit']:>4d} {dt:>7.2f}")

    # every level warm-started from the previous level's potentials (interpolated to the finer mesh)
    result = lower_level_path(mu1, mu2, sch, level_quadrature, cost=beta, rho=rho, enlarge=True,
                              callback=report)[-1]
    errs = np.array([r["cost_error"] for r in rows])
    g = np.array([r["gamma"] for r in rows])
    dl = np.array([r["delta"] for r in rows])
    rate_gamma = float(np.polyfit(np.log(g), np.log(errs), 1)[0])
    rate_delta = float(np.polyfit(np.log(dl), np.log(errs), 1)[0])
    monotone = bool(np.all(np.diff(errs) < 0))
    reduction = float(errs[0] / errs[-1])
    solved = all(r["success"] for r in rows)
    say(f"fitted rates: cost error ~ gamma^{rate_gamma:.3f} ~ delta^{rate_delta:.3f}; error falls "
        f"{reduction:.1f}x overall, {'at every level' if monotone else 'NOT at every level'}")
    summary = {
        "beta": beta, "d": d, "s": args.s, "C": args.C, "rho": rho, "exact_cost": exact,
        "exact_cost_accuracy": ref_acc, "levels": rows, "rate_gamma": rate_gamma, "rate_delta": rate_delta,
        "monotone": monotone, "reduction": reduction, "all_solved": solved,
        "success": bool(solved and monotone and (quick or reduction >= 10.0)),
    }
    if args.plot:
        summary["figures"] = _plots(args.plot, rows, rate_gamma, result, mu1, mu2)
    return summary


def _plots(folder, rows, rate, result, mu1, mu2) -> list[str]:

    from femot.fem import export_plan, plan_image

    plt = figure_folder(folder)
    out: list[str] = []
    g = np.array([r["gamma"] for r in rows])
    e = np.array([r["cost_error"] for r in rows])
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.loglog(g, e, "o-", label="|cost - W_beta^beta|")
    c = np.exp(np.polyfit(np.log(g), np.log(e), 1)[1])
    ax.loglog(g, c * g**rate, "--", label=f"fit: gamma^{rate:.2f}")
    for r in rows:
        ax.annotate(f"δ={r['delta']:.3f}", (r["gamma"], r["cost_error"]), fontsize=7,
                    textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("gamma (delta = C gamma^(1/(d+s)))")
    ax.set_ylabel("cost error")
    ax.set_title("transport-1d: regularized cost vs exact")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, folder, "cost_error.png", out)

    img, x, y = plan_image(result)
    fig, axs = plt.subplots(1, 2, figsize=(10, 4.2))
    axs[0].plot(result.q1.nodes[:, 0], result.m1, label="T^delta mu1")
    axs[0].plot(result.q2.nodes[:, 0], result.m2, label="T^delta mu2")
    axs[0].set_title(f"smoothed marginals (delta = {result.delta:.3g})")
    axs[0].legend()
    from matplotlib.colors import PowerNorm

    # A power-law color scale keeps the thin band of a small-gamma plan visible.
    im = axs[1].imshow(img, origin="lower", extent=[x[0], x[-1], y[0], y[-1]], aspect="auto", cmap="magma",
                       norm=PowerNorm(0.35, vmin=0.0, vmax=float(img.max()) or 1.0), interpolation="nearest")
    axs[1].set_xlabel("x (Omega_1)")
    axs[1].set_ylabel("y (Omega_2)")
    axs[1].set_title(f"plan density, gamma = {result.gamma:.2e}")
    fig.colorbar(im, ax=axs[1])
    fig.tight_layout()
    save_figure(fig, folder, "plan.png", out)
    out += [str(p) for p in export_plan(result, os.path.join(folder, "plan.vtu"))]
    return out
