"""Demo ocp-1d: the regularized control problem (OCP^delta_gamma) on [0, 1] against the exact (OCP).

Part II, Section 3.2.2: minimize ``1/2 |y - y_d|^2 + nu W_2(mu1, mu2^d)^2`` over probability
measures mu1 supported at distance >= rho from the boundary, ``-y'' = mu1``, ``y(0) = y(1) = 0``.

Data: the desired state is generated from a known control (two bumps), ``y_d = G mu1_true``;
the prior mu2^d is one broad bump elsewhere, so the optimal control balances both terms.

The exact discrete optimum (control masses on the mesh vertices) is the convex QP of
:func:`femot.problems.solve_control_reference`, certified by its Frank-Wolfe gap.  Along a
coupled schedule (Part II (3.1), d = d1 + d2 = 2) with ``delta_n = C gamma_n^{1/(d+s)}``
(defaults C = 1, s = 1, i.e. ``gamma_n = delta_n^3``: the width of the regularized plan,
about ``gamma^{1/3}``, then stays comparable to delta), every level solves the
regularized problem by the trust-region method from the uniform control and reports

* ``control_w1_error``: W_1 between the regularized and the exact optimal control;
* ``objective_gap``: J(control_n) - J(exact control) for the UNregularized objective J
  (exact W_2^2 by monotone rearrangement), nonnegative since the exact control minimizes J.

Both are expected to decrease at every level (Corollary 3.13: weak-* convergence of the
controls).

``--formulation`` picks the transport term: ``plan`` is (OCP^delta_gamma) of Part II
(``nu <c_d, pi>``, nonconvex; the trust region stops when the stationarity measure falls to
``--rtol`` times its value at the uniform start), ``value`` the convex value formulation
(``nu V_gamma(T^delta mu1, T^delta mu2^d)``; stops on the certified Frank-Wolfe gap
``fw_gap <= --fw-rtol * |f|``; the default), ``both`` runs both on the same schedule and reports
both errors against the exact (OCP).  Both use the exact Hessian-vector products of
:meth:`femot.problems.ControlProblem.hessp`; the plan formulation is solved by the trust region's
bundle of quadratic cuts (``method="bundle"``) and certified by the convex-combination measure psi
(its column ``theta/th0`` then shows psi over theta_R at the uniform start).
The mesh must resolve the smallest delta: the demo refuses schedules with
``delta_n < 4 h`` (a mollifier of radius delta then sees too few nodes, and the plan band
of width ~ delta too few pairs).
"""
from __future__ import annotations

import time

import numpy as np

from femot.demos.common import add_control_stopping_options, add_coupling_options, figure_folder, printer, save_figure

NAME = "ocp-1d"
SUMMARY = "1D Wasserstein-regularized elliptic control: regularized optimal controls -> exact QP solution"
ORDER = 60
FLAGSHIP = True


_PLAN_STOP = "theta_R (or the cut certificate psi) <= %g theta_R(uniform)"

def add_arguments(p) -> None:
    """Add the options the module docstring explains to ``p`` (hook, see :mod:`femot.demos`)."""
    p.add_argument("--cells", type=int, default=128, help="cells of the mesh of [0, 1] (default 128; 80 with --quick)")
    p.add_argument("--levels", type=int, default=5, help="levels of the (gamma, delta) schedule (default 5; 4 quick)")
    p.add_argument("--nu", type=float, default=0.02, help="weight of the Wasserstein term (default 0.02)")
    p.add_argument("--rho", type=float, default=0.2, help="controls live at distance >= rho from 0 and 1 (0.2)")
    p.add_argument("--delta0", type=float, default=0.16, help="delta of the first level (default 0.16)")
    p.add_argument("--delta-factor", type=float, default=2 ** -0.5, help="delta_{n+1} / delta_n (default 1/sqrt 2)")
    add_coupling_options(p, C=1.0, s=1.0)
    p.add_argument("--formulation", choices=("plan", "value", "both"), default="value",
                   help="transport term: the plan <c, pi> of (OCP^delta_gamma), the convex value V_gamma, or both "
                        "(default value)")
    add_control_stopping_options(p, per_level=True)


def problem_data(op, rho):
    """Known control (two bumps), desired state y_d = G mu1_true, prior mu2^d (one bump); masses on vertices.

    Parameters
    ----------
    op : PoissonOperator
        The state operator on a mesh of [0, 1].
    rho : float
        Both measures vanish at vertices closer than ``rho`` to 0 or 1.

    Returns
    -------
    m_true : ndarray, shape (nvertices,)
        The known control, a probability vector.
    y_d : ndarray
        Its state ``G m_true`` (nodal values), the desired state.
    mu2 : ndarray, shape (nvertices,)
        The prior, a probability vector.
    """
    x = op.vertices[:, 0]
    inside = (x >= rho - 1e-12) & (x <= 1 - rho + 1e-12)

    def bumps(parts):
        m = sum(a * np.exp(-((x - c) / s) ** 2) for c, s, a in parts)
        m = np.where(inside, m, 0.0)
        return m / m.sum()

    m_true = bumps([(0.35, 0.05, 1.0), (0.70, 0.03, 0.6)])
    mu2 = bumps([(0.55, 0.10, 1.0)])
    return m_true, op.state(m_true), mu2


def run(args) -> dict:
    """Run the computation the module docstring describes; return its summary (hook, see :mod:`femot.demos`)."""
    from skfem import MeshLine

    from femot.core import wasserstein_pp_1d
    from femot.fem import PoissonOperator, coupled_schedule
    from femot.problems.control_reference import solve_control_reference

    quick = bool(getattr(args, "quick", False))
    say = printer(args.quiet)
    cells = int(args.cells) if not quick or args.cells != 128 else 80
    levels = int(args.levels) if not quick else min(int(args.levels), 4)
    if levels < 4 and not quick:
        raise ValueError("--levels must be >= 4 for the study")
    nu, beta, rho = float(args.nu), float(args.beta), float(args.rho)
    h = 1.0 / cells
    d = 2
    deltas = float(args.delta0) * float(args.delta_factor) ** np.arange(levels)
    gammas = (deltas / float(args.C)) ** (d + float(args.s))
    sch = coupled_schedule(gammas, d=d, s=float(args.s), C=float(args.C), rho=rho)
    from femot.fem.smoothing import check_resolution

    check_resolution(h, float(sch.deltas.min()), what="the schedule's smallest delta (use more --cells or fewer "
                                                       "--levels)")

    op = PoissonOperator(MeshLine(np.linspace(0.0, 1.0, cells + 1)))
    x = op.vertices[:, 0]
    m_true, y_d, mu2 = problem_data(op, rho)
    say(f"[0, 1] with {cells} cells (h = {h:.4g}); nu = {nu:g}, beta = {beta:g}, rho = {rho:g}; "
        f"y_d = G(known control); schedule gamma = (delta / C)^(d+s), C = {args.C:g}, s = {args.s:g}, d = {d}")

    t0 = time.perf_counter()
    ref = solve_control_reference(op, y_d, mu2, nu, beta=beta, rho=rho)
    t_ref = time.perf_counter() - t0
    say(f"exact (OCP) by QP: J* = {ref.fun:.10e} (tracking {ref.tracking:.4e}, W_beta^beta {ref.transport:.4e}), "
        f"{ref.message}, {t_ref:.2f} s")
    m_star = ref.masses
    uniform = np.zeros_like(x)
    uniform[ref.control_vertices] = 1.0 / ref.control_vertices.size
    w1_uniform = wasserstein_pp_1d(x, x, uniform, m_star, p=1)

    forms = ("plan", "value") if args.formulation == "both" else (args.formulation,)
    runs, last = {}, None
    for form in forms:
        runs[form], last = _schedule(form, sch, op, x, y_d, mu2, m_true, m_star, ref, nu, beta, rho, args, say)
        say(f"[{form}] W1(uniform start, exact) = {w1_uniform:.4e}; control error ~ delta^"
            f"{runs[form]['rate_delta']:.2f}, objective gap ~ delta^{runs[form]['gap_rate_delta']:.2f}; the control "
            f"error decreases {'at every level' if runs[form]['control_error_monotone'] else 'NOT at every level'}, "
            f"the gap {'at every level' if runs[form]['objective_gap_monotone'] else 'NOT at every level'}; "
            f"{'every level converged' if runs[form]['all_solved'] else 'NOT every level converged'}")
    primary = runs[forms[-1]]
    solved = all(r["all_solved"] for r in runs.values())
    monotone = all(r["control_error_monotone"] for r in runs.values())
    summary = {
        "cells": cells, "h": h, "nu": nu, "beta": beta, "rho": rho, "d": d, "C": args.C, "s": args.s,
        "control_nodes": int(ref.control_vertices.size),
        "reference": {"fun": ref.fun, "tracking": ref.tracking, "transport": ref.transport, "success": ref.success,
                      "message": ref.message, "frank_wolfe_gap": ref.residuals["gap"], "time_s": round(t_ref, 3),
                      "control_w1_to_true": wasserstein_pp_1d(x, x, m_star, m_true, p=1)},
        "uniform_w1_error": w1_uniform, "formulations": list(forms), "formulation": forms[-1],
        "runs": runs, "levels": primary["levels"], "rate_delta": primary["rate_delta"],
        "gap_rate_delta": primary["gap_rate_delta"], "control_error_monotone": monotone,
        "objective_gap_monotone": all(r["objective_gap_monotone"] for r in runs.values()), "all_solved": solved,
        "success": bool(solved and ref.success and monotone),
    }
    if args.plot:
        summary["figures"] = _plots(args.plot, op, m_true, y_d, mu2, ref, last, primary["levels"])
    return summary


def _schedule(form, sch, op, x, y_d, mu2, m_true, m_star, ref, nu, beta, rho, args, say):
    """Solve every level of the schedule in one formulation; the table and the per-level rows."""
    from femot.core import wasserstein_pp_1d
    from femot.problems.control_reference import control_objective
    from femot.studies.paths import control_path

    value = form == "value"
    crit = "fw_gap/|f|" if value else "theta/th0"
    say(f"formulation '{form}': {'nu V_gamma(T mu1, T mu2^d), convex' if value else 'nu <c, pi>, (OCP^delta_gamma)'}"
        f"; stop at {'fw_gap <= %g |f|' % args.fw_rtol if value else _PLAN_STOP % args.rtol}")
    say(f"{'level':>5} {'gamma':>9} {'delta':>7} {'g/d^2':>8} {'W1(ctrl, exact)':>15} {'J gap':>10} "
        f"{'f_reg':>11} {'TR it':>5} {crit:>10} {'Newton':>6} {'time s':>6}  status")
    rows: list[dict] = []

    def report(k, gamma, delta, P, r):
        J, J_track, J_w = control_objective(op, r.masses, y_d, mu2, nu, beta=beta)
        err = wasserstein_pp_1d(x, x, r.masses, m_star, p=1)
        row = {"level": k, "formulation": form, "gamma": gamma, "delta": delta, "ratio": float(sch.ratios[k]),
               "control_w1_error": err, "objective_gap": abs(J - ref.fun), "objective_gap_signed": J - ref.fun,
               "objective_exact": J, "fun": float(r.fun), "regularized_objective": float(r.fun),
               "regularized_tracking": float(r.tracking), "regularized_transport": float(r.transport),
               "transport_cost": float(r.transport_cost),
               "control_w1_to_true": wasserstein_pp_1d(x, x, r.masses, m_true, p=1),
               "success": bool(r.success), "status": int(r.status), "message": r.message,
               "iterations": int(r.nit), "tr_iterations": int(r.nit), "hessp_calls": int(r.nhev),
               "stationarity": float(r.stationarity), "relative_stationarity": float(r.relative_stationarity),
               "tol": float(r.tol), "newton_iterations": int(r.newton_iterations),
               "lower_solves": int(r.lower_solves), "lower_failures": int(r.lower_failures),
               "time_s": round(float(r.time_s), 3)}
        if value:
            fw = float(r.fw_gap) if r.fw_gap is not None else float("nan")
            row["fw_gap"] = fw
            row["relative_fw_gap"] = fw / abs(float(r.fun))
        rows.append(row)
        c = row["relative_fw_gap"] if value else row["relative_stationarity"]
        status = "ok" if r.success else ("ITERATION LIMIT" if r.status == 1 else f"FAILED: {r.message}")
        say(f"{k:>5d} {gamma:>9.3e} {delta:>7.4f} {row['ratio']:>8.2e} {err:>15.4e} {row['objective_gap']:>10.3e} "
            f"{r.fun:>11.4e} {r.nit:>5d} {c:>10.2e} {r.newton_iterations:>6d} {r.time_s:>6.1f}  {status}")

    last = control_path(op, y_d, mu2, nu, sch, beta=beta, rho=rho, transport=form, max_iter=args.max_iter,
                        rtol=args.rtol, fw_rtol=args.fw_rtol, callback=report)[-1]
    dl = np.array([row["delta"] for row in rows])
    errs = np.array([row["control_w1_error"] for row in rows])
    gaps = np.array([row["objective_gap"] for row in rows])
    out = {"levels": rows, "rate_delta": float(np.polyfit(np.log(dl), np.log(errs), 1)[0]),
           "gap_rate_delta": float(np.polyfit(np.log(dl), np.log(np.maximum(gaps, 1e-300)), 1)[0]),
           "control_error_monotone": bool(np.all(np.diff(errs) < 0)),
           "objective_gap_monotone": bool(np.all(np.diff(gaps) < 0)),
           "all_solved": all(row["success"] for row in rows)}
    return out, last


def _plots(folder, op, m_true, y_d, mu2, ref, last, rows) -> list[str]:
    from matplotlib.colors import PowerNorm

    from femot.fem import nodal_density

    plt = figure_folder(folder)
    out: list[str] = []
    P, r = last
    x = op.vertices[:, 0]
    order = np.argsort(x)
    xs = x[order]

    fig, axs = plt.subplots(1, 2, figsize=(11, 4))
    ax = axs[0]
    ax.plot(xs, nodal_density(op.mesh, r.masses)[order], "-", lw=1.8, label=f"regularized control (δ={r.delta:.3g})")
    ax.plot(xs, nodal_density(op.mesh, m_true)[order], ":", color="gray", label="control that generated y_d")
    ax.plot(xs, nodal_density(op.mesh, mu2)[order], "-.", color="tab:green", alpha=0.7, label="prior μ2^d")
    ax.set_xlabel("x")
    ax.set_ylabel("density (mass / lumped weight)")
    ax.set_title("controls")
    # The exact (OCP) control is a measure with atoms at a few vertices: drawn as the masses it
    # puts there (a density through neighbouring vertices would zig-zag and look like noise).
    axm = ax.twinx()
    keep = ref.masses[order] > 1e-4 * ref.masses.max()  # atoms, not round-off
    axm.vlines(xs[keep], 0.0, ref.masses[order][keep], color="tab:orange", lw=1.2)
    axm.plot(xs[keep], ref.masses[order][keep], "o", color="tab:orange", ms=3,
             label="exact optimal control (QP): vertex masses")
    axm.set_ylim(bottom=0.0)
    axm.set_ylabel("vertex mass (exact control)", color="tab:orange")
    lines = ax.get_legend_handles_labels()
    more = axm.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="upper left", framealpha=0.85)
    ax = axs[1]
    ax.plot(xs, y_d[order], "k:", label="desired state y_d")
    ax.plot(xs, r.y[order], "-", label="state of the regularized control")
    ax.plot(xs, ref.y[order], "--", label="state of the exact control")
    ax.set_xlabel("x")
    ax.set_title("states")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, folder, "control_state.png", out)

    # plan of the last level and the exact plan; transported mass (smoothed marginals)
    qx = P.q.nodes[:, 0]
    qo = np.argsort(qx)
    img = r.plan[qo][:, qo].toarray().T
    fig, axs = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axs[0]
    im = ax.imshow(img, origin="lower", extent=[qx[qo][0], qx[qo][-1]] * 2, aspect="auto", cmap="magma",
                   norm=PowerNorm(0.4, vmin=0.0, vmax=float(img.max()) or 1.0), interpolation="nearest")
    E = ref.plan.tocoo()
    xv = op.vertices[:, 0]
    ax.scatter(xv[ref.control_vertices[E.row]], ref.target_points[E.col, 0], s=4 + 400 * E.data, facecolors="none",
               edgecolors="cyan", linewidths=0.6, label="exact plan (QP)")
    ax.set_xlabel("x1 (control)")
    ax.set_ylabel("x2 (prior)")
    ax.set_title(f"regularized plan, γ={r.gamma:.2e}, δ={r.delta:.3g}")
    ax.legend(fontsize=8, loc="upper left")
    fig.colorbar(im, ax=ax, label="regularized plan density π (power scale 0.4)")
    ax = axs[1]
    ax.plot(qx[qo], r.mu1_density[qo], label="T^δ μ1 (regularized control)")
    ax.plot(qx[qo], r.mu2_density[qo], label="T^δ μ2^d (prior)")
    w2 = P.q.weights
    moved = r.plan @ (w2 * qx)
    row_mass = r.plan @ w2
    with np.errstate(invalid="ignore", divide="ignore"):
        target = np.where(row_mass > 0, moved / row_mass, np.nan)
    ax2 = ax.twinx()
    ax2.plot(qx[qo], (target - qx)[qo], "k--", lw=1, label="mean displacement T(x) - x")
    ax2.axhline(0, color="gray", lw=0.5)
    ax2.set_ylabel("displacement")
    ax.set_xlabel("x")
    ax.set_ylabel("smoothed density")
    ax.set_title("transported mass")
    ax.legend(fontsize=8, loc="upper left")
    ax2.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    save_figure(fig, folder, "plan_transport.png", out)

    dl = np.array([row["delta"] for row in rows])
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.loglog(dl, [row["control_w1_error"] for row in rows], "o-", label="W1(control_n, exact control)")
    ax.loglog(dl, [row["objective_gap"] for row in rows], "s-", label="J(control_n) - J*")
    for row in rows:
        ax.annotate(f"γ={row['gamma']:.1e}", (row["delta"], row["control_w1_error"]), fontsize=7,
                    textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("δ (γ coupled)")
    ax.set_title("ocp-1d: convergence to the exact control")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, folder, "convergence.png", out)
    return out
