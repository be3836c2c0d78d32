"""Benchmark: solve_qrot on FE lower-level data at small gamma, and against regot on its counting form.

The instance (``tests/_fe_instances.py``) is the lower level of the [-1, 1]^2 control
problem at the uniform control: a tensor transport grid on [-1.25, 1.25]^2 (level 0:
41 x 41 = 1,681 nodes; level l: spacing 0.0625 / 2^l), lumped P1 weights, the uniform
control and lumped Lebesgue measure smoothed by T^delta (delta = 0.25; densities between
0.04 and 1.63, mass 4.25), cost |x - y|^2 (up to 12.5).  Every solve is cold.

Two groups of runs, each solver case in its own subprocess (``_worker.py``):

* ``fe``: femot on the weighted problem, dense cost and matrix-free ``GeometricCost``;
* ``counting``: the same densities with the weights made uniform, w = |grid| / n, and
  both densities rescaled to mass M = 4.25.  Then the weighted problem is plain QROT in
  counting form: with ``T = w^2 pi / M`` the constraints read ``T 1 = a = w mu1 / M``,
  ``T^T 1 = b = w mu2 / M`` and the objective is
  ``sum w^2 (c pi + gamma/2 pi^2) = M (<c, T> + (reg/2) |T|^2)`` with ``reg = gamma M / w^2``,
  which is what regot's ``qrot_grssn`` minimizes.  femot solves the weighted form, regot
  the counting form; both are scored by the marginal error of T in mass units,
  ``max(|T 1 - a|_inf, |T^T 1 - b|_inf)``.

    python benchmarks/fe_lower_level.py                      # level 0, both groups
    python benchmarks/fe_lower_level.py --levels 0 1 --groups fe
    python benchmarks/fe_lower_level.py --busy               # beside a busy process
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from _worker import ROOT, busy_processes, run_worker

sys.path.insert(0, os.path.join(ROOT, "tests"))


def counting_form(level):
    """Uniform-weight variant: ``(x, w, mu1, mu2, M)`` with scalar weight w and both masses M."""
    from _fe_instances import fe_lower_level

    x, wq, m1, m2 = fe_lower_level(level)
    mass = float(wq @ m1)
    w = float(wq.sum()) / len(wq)
    m1 = m1 * (mass / (w * m1.sum()))
    m2 = m2 * (mass / (w * m2.sum()))
    return x, w, m1, m2, mass


def worker(group, solver, level, gamma, tol):
    from _fe_instances import fe_lower_level, sqdist

    out = {"group": group, "solver": solver, "level": level, "gamma": gamma}
    if group == "fe":
        from femot import GeometricCost, solve_qrot

        x, w, m1, m2 = fe_lower_level(level)
        # compile every kernel outside the timed region (a coarse instance, same gamma)
        xs, ws, m1s, m2s = fe_lower_level(-2)
        solve_qrot(sqdist(xs, xs), m1s, m2s, gamma, 0.0, ws, ws)
        solve_qrot(GeometricCost(xs, xs), m1s, m2s, gamma, 0.0, ws, ws)
        cost = sqdist(x, x) if solver == "dense" else GeometricCost(x, x)
        t = time.perf_counter()
        r = solve_qrot(cost, m1, m2, gamma, 0.0, w, w, tol=tol)
        out["time_s"] = time.perf_counter() - t
        out.update(success=bool(r.success), iterations=int(r.nit), iterations_total=int(r.get("nit_total", r.nit)),
                   residual=float(r.residual), init=r.init, n=len(w), nnz=int(r.plan.nnz))
        P = r.plan
        out["marginal_error"] = float(max(np.abs(P @ w - m1).max(), np.abs(P.T @ w - m2).max()))
    else:
        x, w, m1, m2, mass = counting_form(level)
        a, b = w * m1 / mass, w * m2 / mass
        M = np.asfortranarray(sqdist(x, x))
        if solver == "femot":
            from femot import solve_qrot

            xs, ws, m1s, m2s, _ = counting_form(-2)
            wv = np.full(len(m1s), ws)
            solve_qrot(sqdist(xs, xs), m1s, m2s, gamma, 0.0, wv, wv)
            wv = np.full(len(m1), w)
            t = time.perf_counter()
            r = solve_qrot(M, m1, m2, gamma, 0.0, wv, wv, tol=tol)
            out["time_s"] = time.perf_counter() - t
            T = r.plan * (w * w / mass)
            row, col = np.asarray(T.sum(1)).ravel(), np.asarray(T.sum(0)).ravel()
            out.update(success=bool(r.success), iterations=int(r.nit),
                       iterations_total=int(r.get("nit_total", r.nit)), init=r.init)
        else:
            import regot

            xs, ws, m1s, m2s, ms = counting_form(-2)
            regot.qrot_grssn(np.asfortranarray(sqdist(xs, xs)), ws * m1s / ms, ws * m2s / ms, gamma * ms / ws ** 2)
            t = time.perf_counter()
            # regot stops on the norm of its marginal error (mass units)
            r = regot.qrot_grssn(M, a, b, gamma * mass / w ** 2, tol=1e-9, max_iter=2000, verbose=0)
            out["time_s"] = time.perf_counter() - t
            T = r.plan
            row, col = T.sum(1), T.sum(0)
            out.update(iterations=int(r.niter), iterations_total=int(r.niter))
        out["marginal_error"] = float(max(np.abs(row - a).max(), np.abs(col - b).max()))
        out["relative_marginal_error"] = float(np.sqrt(np.sum((row - a) ** 2) + np.sum((col - b) ** 2))
                                               / np.sqrt(np.sum(a ** 2) + np.sum(b ** 2)))
        if solver == "regot":
            # converged: stopped by its own test (marginal error norm <= tol) before max_iter
            out["success"] = bool(r.niter < 2000)
            out["regot_last_mar_err"] = float(r.mar_errs[-1]) if len(r.mar_errs) else None
        out["n"] = len(m1)
    print("RESULT " + json.dumps(out))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", type=int, nargs="+", default=[0])
    ap.add_argument("--gammas", type=float, nargs="+", default=[1e-5, 1e-6, 1e-7])
    ap.add_argument("--regot-gammas", type=float, nargs="+", default=[1e-5, 1e-6],
                    help="gammas of the counting-form comparison")
    ap.add_argument("--groups", nargs="+", default=["fe", "counting"], choices=["fe", "counting"])
    ap.add_argument("--geometric-only-above", type=int, default=2,
                    help="levels above this skip the dense cost (its memory)")
    ap.add_argument("--tol", type=float, default=1e-10, help="femot residual tolerance (densities)")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--busy", action="store_true", help="run beside a busy-looping process")
    ap.add_argument("--json", default="benchmarks/results/fe_lower_level.json")
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        g, s, lev, gam, tol = args.worker
        worker(g, s, int(lev), float(gam), float(tol))
        return 0
    rows = []
    with busy_processes(1 if args.busy else 0) as busy:
        hdr = (f"{'group':>8} {'lvl':>3} {'n':>6} {'gamma':>7} {'solver':>9} {'ok':>3} {'time s':>8} "
               f"{'its':>5} {'its tot':>7} {'marg err':>9} {'rel err':>9} {'speedup':>8}")
        print(hdr + ("   (beside a busy process)" if busy else ""))
        print("-" * len(hdr))
        for lev in args.levels:
            cases = []
            if "fe" in args.groups:
                solvers = ["geometric"] if lev > args.geometric_only_above else ["dense", "geometric"]
                cases += [("fe", s, g) for g in args.gammas for s in solvers]
            if "counting" in args.groups:
                cases += [("counting", s, g) for g in args.regot_gammas for s in ("femot", "regot")]
            last = {}
            for group, s, g in cases:
                label = {"group": group, "solver": s, "level": lev, "gamma": g}
                r = run_worker(__file__, ["--worker", group, s, lev, repr(g), repr(args.tol)], label, args.timeout,
                               time_on_failure=True)
                last[(group, s, g)] = r
                rows.append(r)
                print(f"{group:>8} {lev:3d} {r.get('n', 0):6d} {g:7.0e} {s:>9} {'y' if r.get('success') else 'n':>3} "
                      f"{r.get('time_s', float('nan')):8.2f} {r.get('iterations', -1):5d} "
                      f"{r.get('iterations_total', -1):7d} {r.get('marginal_error', float('nan')):9.1e} "
                      f"{r.get('relative_marginal_error', float('nan')):9.1e}"
                      + ("" if r.get("success") else f"  {r.get('error', '')[:60]}"), flush=True)
                if group == "counting" and s == "regot":
                    fem = last.get(("counting", "femot", g), {})
                    if fem.get("time_s"):
                        fem["speedup_vs_regot"] = r["time_s"] / fem["time_s"]
                        print(f"{'':>8} {'':>3} {'':>6} {'':>7} {'':>9} {'':>3} {'':>8} {'':>5} {'':>7} {'':>9} "
                              f"{'':>9} {fem['speedup_vs_regot']:8.1f}  (regot time / femot time)")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump({"runs": rows, "busy": bool(args.busy)}, fh, indent=2)
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
