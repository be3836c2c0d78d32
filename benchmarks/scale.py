"""Benchmark: 2D x 2D QROT at scale (dense matrix, matrix-free GeometricCost, coarse-to-fine) and regot.

Part ``scale``.  The unit square against the disk of radius 1/2 centred at
(1/2, 1/2), each a P1 mesh with m x m vertices (the disk mesh is the tensor mesh
of [-1, 1]^2 under the elliptical grid map), lumped P1 quadrature, smooth
densities (normalized to mass 1), cost |x - y|^2, eps = 0 and gamma coupled to
the mesh, gamma = (4 h)^4 with h = 1/(m - 1) (the plan's support width
gamma^(1/4) spans a few cells).  Methods, each in a fresh subprocess (the peak
RSS is that configuration's process):

* ``dense``: the (n1, n2) matrix (only where it fits, n <= --dense-max),
* ``geometric``: ``femot.GeometricCost`` (k-d tree passes) from the closed-form
  cold start ``init='mean'``, without coarse-to-fine (n <= --geometric-max: from
  there nearly every pair is active in the first Newton matrices).  (The default
  ``solve_qrot(GeometricCost(...))`` starts coarse-to-fine above 4000 points),
* ``auto``: ``solve_qrot(GeometricCost(x, y), ...)`` with its defaults (``init='auto'``
  starts coarse-to-fine above 4000 points per side),
* ``multiscale``: ``solve_qrot(GeometricCost, ..., init="coarse")`` (coarse-to-fine
  warm starts with gamma coupled to each coarse level, tree passes, certified by the
  tree search); afterwards, outside the timed solve, one streaming pass over all
  n1*n2 pairs checks the certificate independently (column "full chk s").

Reported: wall time, Newton iterations (of the finest level), plan nonzeros and the
largest Newton matrix (working set), peak RSS, marginal error
max(|pi w2 - mu1|, |pi^T w1 - mu2|) (densities), and the relative plan difference
to the dense plan (max |P - P_dense| / max |P_dense|) and whether the supports are
identical (column "supp": "=").

Part ``regot``.  A 2D x 2D problem: 3,000 random points in the unit
square against 3,000 in the disk, |x - y|^2, weights 1/n, densities 1, gamma = 1e-6
in density scaling (regot: masses T = pi / n^2, reg = gamma n^2), tol 1e-9, dense
cost; femot ``solve_qrot`` against regot ``qrot_grssn``, idle and beside
--competitors CPU-bound processes (``python -c "while True: pass"``), reported as
the ratio regot time / femot time.

    python benchmarks/scale.py                       # both parts, m in 45 100 200 (n = 2025, 10000, 40000)
    python benchmarks/scale.py --part scale --m 45 100 --methods dense multiscale
    python benchmarks/scale.py --part regot --reps 3

The machine load (``os.getloadavg``) is printed and stored with the results.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np
from _worker import busy_processes, run_worker

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def problem(m):
    import skfem

    from femot.fem import quadrature

    t = np.linspace(0.0, 1.0, m)
    sq = skfem.MeshTri.init_tensor(t, t)
    s = np.linspace(-1.0, 1.0, m)
    dk = skfem.MeshTri.init_tensor(s, s)
    u, v = dk.p
    dk = skfem.MeshTri(np.vstack([0.5 + 0.5 * u * np.sqrt(1 - v**2 / 2), 0.5 + 0.5 * v * np.sqrt(1 - u**2 / 2)]),
                       dk.t)
    q1, q2 = quadrature(sq), quadrature(dk)
    x, y = q1.nodes, q2.nodes
    m1 = 1.0 + 0.5 * np.sin(2 * np.pi * x[:, 0]) * np.cos(np.pi * x[:, 1])
    m2 = np.exp(-4.0 * ((y[:, 0] - 0.4) ** 2 + (y[:, 1] - 0.6) ** 2)) + 0.3
    m1 /= q1.weights @ m1
    m2 /= q2.weights @ m2
    gamma = (4.0 / (m - 1)) ** 4
    return x, y, q1.weights, q2.weights, m1, m2, gamma


def worker(method, m, tol):
    sys.path.insert(0, ROOT)
    from femot import GeometricCost, solve_qrot
    from femot.core import certify_working_set

    x, y, w1, w2, m1, m2, gamma = problem(m)
    # load the compiled kernels outside the timed region
    xs, ys = x[:: max(1, len(x) // 300)], y[:: max(1, len(y) // 300)]
    ws1, ws2 = np.full(len(xs), 1.0 / len(xs)), np.full(len(ys), 1.0 / len(ys))
    solve_qrot(GeometricCost(xs, ys), np.ones(len(xs)), np.ones(len(ys)), 1e-2, 0.0, ws1, ws2, tol=1e-6)
    solve_qrot(GeometricCost(xs, ys).dense(), np.ones(len(xs)), np.ones(len(ys)), 1e-2, 0.0, ws1, ws2, tol=1e-6)
    solve_qrot(GeometricCost(xs, ys), np.ones(len(xs)), np.ones(len(ys)), 1e-2, 0.0, ws1, ws2, tol=1e-6,
               init="coarse")
    out = {"method": method, "m": m, "n1": len(x), "n2": len(y), "gamma": gamma, "pairs": len(x) * len(y)}
    t = time.perf_counter()
    if method == "dense":
        c = GeometricCost(x, y).dense()  # the same rounding as the matrix-free entries
        r = solve_qrot(c, m1, m2, gamma, 0.0, w1, w2, tol=tol)
    elif method == "geometric":  # without coarse-to-fine: the closed-form cold start (every pair active)
        r = solve_qrot(GeometricCost(x, y), m1, m2, gamma, 0.0, w1, w2, tol=tol, init="mean")
    elif method == "auto":  # the plain call: init='auto' starts coarse-to-fine above 4000 points
        r = solve_qrot(GeometricCost(x, y), m1, m2, gamma, 0.0, w1, w2, tol=tol)
    elif method == "multiscale":  # coarse-to-fine at every size (init='coarse'), then the tree certificate
        G = GeometricCost(x, y)
        r = solve_qrot(G, m1, m2, gamma, 0.0, w1, w2, tol=tol, init="coarse")
        out["levels"] = r.get("levels")
        tc = time.perf_counter()
        bad = certify_working_set(G, r.alpha, r.beta, r.plan.indptr, r.plan.indices)
        out["certified_by_tree"] = bool(bad.size == 0)
        out["certify_tree_s"] = time.perf_counter() - tc
    else:
        raise ValueError(method)
    out["time_s"] = time.perf_counter() - t
    out["success"] = bool(r.success)
    out["iterations"] = int(r.nit)
    out["dense_passes"] = int(r.get("dense_passes", -1))
    out["plan_nnz"] = int(r.plan.nnz)
    out["max_newton_nnz"] = int(max((h.get("nnz", 0) for h in r.history), default=0))
    out["marginal_error"] = float(max(np.abs(r.plan @ w2 - m1).max(), np.abs(r.plan.T @ w1 - m2).max()))
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if method == "multiscale":  # independent check, outside the timed solve: one pass over all pairs
        t = time.perf_counter()
        P = r.plan
        bad = certify_working_set(GeometricCost(x, y), r.alpha, r.beta, P.indptr, P.indices, full=True)
        out["full_check_s"] = time.perf_counter() - t
        out["certified_by_full_pass"] = bool(bad.size == 0)
    import scipy.sparse as sp

    sp.save_npz(f"/tmp/femot_scale_{method}_{m}.npz", r.plan.tocsr())
    print("RESULT " + json.dumps(out))


def run_one(method, m, tol, timeout):
    return run_worker(__file__, ["--worker", method, m, repr(tol)], {"method": method, "m": m}, timeout)


def _write(path, rows):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump({"runs": rows, "loadavg_end": os.getloadavg()}, fh, indent=2)


def regot_problem(n=3000, seed=0):
    """The issue's 2D x 2D instance: n points in the unit square, n in the disk, weights 1/n, densities 1."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 2))
    r, t = np.sqrt(rng.random(n)), 2 * np.pi * rng.random(n)
    y = np.c_[0.5 + 0.5 * r * np.cos(t), 0.5 + 0.5 * r * np.sin(t)]
    M = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    return M, np.full(n, 1.0 / n), np.ones(n)


def regot_worker(solver, n, gamma, tol):
    sys.path.insert(0, ROOT)
    M, w, dens = regot_problem(n)
    out = {"solver": solver, "n": n, "gamma": gamma}
    if solver == "femot":
        from femot import solve_qrot

        k = 200  # load the compiled kernels outside the timed region
        solve_qrot(M[:k, :k], np.ones(k), np.ones(k), 1e-3, 0.0, np.full(k, 1 / k), np.full(k, 1 / k), tol=1e-6)
        t = time.perf_counter()
        r = solve_qrot(M, dens, dens, gamma, 0.0, w, w, tol=tol)
        out["time_s"] = time.perf_counter() - t
        out["iterations"] = int(r.nit)
        out["success"] = bool(r.success)
        P = r.plan
        out["marginal_error"] = float(max(np.abs(P @ w - dens).max(), np.abs(P.T @ w - dens).max()))
    else:
        import regot

        a = np.full(n, 1.0 / n)
        regot.qrot_grssn(np.asfortranarray(M[:64, :64]), a[:64] / a[:64].sum(), a[:64] / a[:64].sum(), 1.0)
        t = time.perf_counter()
        r = regot.qrot_grssn(M, a, a, gamma * n * n, tol=tol, max_iter=1000, verbose=0)
        out["time_s"] = time.perf_counter() - t
        out["iterations"] = int(r.niter)
        T = r.plan
        # in density units (pi = n^2 T), comparable with femot's
        out["marginal_error"] = float(max(np.abs(T.sum(1) * n - 1).max(), np.abs(T.sum(0) * n - 1).max()))
        out["success"] = True
    print("RESULT " + json.dumps(out))


def run_regot_one(solver, n, gamma, tol, timeout):
    return run_worker(__file__, ["--regot-worker", solver, n, repr(gamma), repr(tol)], {"solver": solver},
                      timeout, time_on_failure=True)



def regot_part(args):
    """femot vs regot on the n = 3000 2D x 2D problem, idle and beside CPU-bound competitors."""
    try:
        import regot  # noqa: F401
    except ImportError:
        print("regot is not installed: part 'regot' skipped")
        return None
    n, gamma, tol = args.regot_n, 1e-6, 1e-9
    report = {"n": n, "gamma": gamma, "tol": tol, "competitors": args.competitors, "reps": args.reps}
    phases = {}
    for phase in ("idle", "loaded"):
        with busy_processes(args.competitors if phase == "loaded" else 0, settle=1.0):
            report[f"{phase}_loadavg"] = os.getloadavg()
            runs = {"femot": [], "regot": []}
            for _ in range(args.reps):
                for s in ("femot", "regot"):
                    r = run_regot_one(s, n, gamma, tol, args.timeout)
                    runs[s].append(r)
                    print(f"  [{phase}] {s:6s} {r['time_s']:8.2f} s  its {r.get('iterations', '-')}  "
                          f"marginal error {r.get('marginal_error', float('nan')):.1e}"
                          f"{'' if r.get('success') else '  FAILED ' + r.get('error', '')[:300]}", flush=True)
            phases[phase] = runs
    hdr = f"{'phase':8s} {'femot s':>9} {'regot s':>9} {'regot/femot':>12} {'loadavg(1m)':>12}"
    print("\n2D x 2D n = %d, gamma = %g (density scaling), tol %g, dense cost\n" % (n, gamma, tol) + hdr)
    print("-" * len(hdr))
    for phase, runs in phases.items():
        tf = float(np.median([r["time_s"] for r in runs["femot"]]))
        tr = float(np.median([r["time_s"] for r in runs["regot"]]))
        report[phase] = {"femot_s": tf, "regot_s": tr, "ratio_regot_over_femot": tr / tf, "runs": runs}
        print(f"{phase:8s} {tf:9.2f} {tr:9.2f} {tr / tf:12.1f} {report[f'{phase}_loadavg'][0]:12.1f}")
    ok = report["idle"]["ratio_regot_over_femot"] >= 10 and report["loaded"]["ratio_regot_over_femot"] > 1
    report["acceptance_idle_10x_and_loaded_ahead"] = bool(ok)
    print(f"acceptance (idle >= 10x faster than regot, loaded still ahead): {ok}")
    return report


def scale_part(args):
    import scipy.sparse as sp

    rows = []
    hdr = (f"{'n1':>6} {'n2':>6} {'method':>10} {'time s':>8} {'its':>4} {'plan nnz':>9} "
           f"{'max K nnz':>9} {'RSS MB':>7} {'marg err':>9} {'vs dense':>9} {'supp':>4} {'cert':>5} {'full chk s':>10}")
    print(f"machine load average at start: {os.getloadavg()}")
    print(hdr + "\n" + "-" * len(hdr), flush=True)
    for m in args.m:
        n = m * m
        for meth in args.methods:
            if (meth == "dense" and n > args.dense_max) or (meth == "geometric" and n > args.geometric_max):
                continue
            r = run_one(meth, m, args.tol, args.timeout)
            r["loadavg_after"] = os.getloadavg()
            if "time_s" not in r:
                print(f"{n:6d} {'':6s} {meth:>10}  failed: {r.get('error', '')[:300]}", flush=True)
                rows.append(r)
                continue
            ref = f"/tmp/femot_scale_dense_{m}.npz"
            if meth != "dense" and os.path.exists(ref) and any(x.get("method") == "dense" and x.get("m") == m
                                                              and "time_s" in x for x in rows):
                A, B = sp.load_npz(f"/tmp/femot_scale_{meth}_{m}.npz"), sp.load_npz(ref)
                r["plan_rel_diff_to_dense"] = float(abs(A - B).max() / abs(B).max())
                r["same_support_as_dense"] = bool(A.nnz == B.nnz and np.array_equal(A.indptr, B.indptr)
                                                  and np.array_equal(A.indices, B.indices))
            cert = r.get("certified_by_tree")
            cert = "-" if cert is None else ("yes" if cert and r.get("certified_by_full_pass") else "NO")
            supp = r.get("same_support_as_dense")
            supp = "-" if supp is None else ("=" if supp else "DIFF")
            print(f"{r['n1']:6d} {r['n2']:6d} {meth:>10} {r['time_s']:8.2f} {r['iterations']:4d} "
                  f"{r['plan_nnz']:9d} {r['max_newton_nnz']:9d} {r['peak_rss_mb']:7.0f} "
                  f"{r['marginal_error']:9.1e} {r.get('plan_rel_diff_to_dense', float('nan')):9.1e} "
                  f"{supp:>4} {cert:>5} "
                  f"{r.get('full_check_s', float('nan')):10.1f}"
                  f"{'' if r['success'] else '  NOT CONVERGED'}", flush=True)
            rows.append(r)
            _write(args.json, rows)  # after every run: a long run interrupted keeps what it measured
    _write(args.json, rows)
    print(f"\nwrote {args.json}")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["scale", "regot", "both"], default="both")
    ap.add_argument("--m", type=int, nargs="+", default=[45, 100, 200], help="vertices per side (n = m^2)")
    ap.add_argument("--methods", nargs="+", default=["dense", "geometric", "auto", "multiscale"],
                    choices=["dense", "geometric", "auto", "multiscale"])
    ap.add_argument("--dense-max", type=int, default=10_000, help="largest n for the dense matrix")
    ap.add_argument("--geometric-max", type=int, default=10_000, help="largest n for the cold-start geometric run")
    ap.add_argument("--tol", type=float, default=1e-9)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--json", default=os.path.join(HERE, "results", "scale.json"))
    ap.add_argument("--regot-n", type=int, default=3000)
    ap.add_argument("--reps", type=int, default=1, help="repetitions of the regot comparison (median)")
    ap.add_argument("--competitors", type=int, default=2, help="CPU-bound processes in the loaded regot phase")
    ap.add_argument("--regot-json", default=os.path.join(HERE, "results", "scale_regot.json"))
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--regot-worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        meth, m, tol = args.worker
        worker(meth, int(m), float(tol))
        return 0
    if args.regot_worker:
        s, n, g, tol = args.regot_worker
        regot_worker(s, int(n), float(g), float(tol))
        return 0
    if args.part in ("scale", "both"):
        scale_part(args)
    if args.part in ("regot", "both"):
        rep = regot_part(args)
        if rep is not None:
            os.makedirs(os.path.dirname(os.path.abspath(args.regot_json)), exist_ok=True)
            with open(args.regot_json, "w") as fh:
                json.dump(rep, fh, indent=2)
            print(f"wrote {args.regot_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
