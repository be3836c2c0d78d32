"""Benchmark: 2D x 2D QROT at scale, dense matrix vs matrix-free GeometricCost vs coarse-to-fine.

Problem: the unit square against the disk of radius 1/2 centred at (1/2, 1/2),
each a P1 mesh with m x m vertices (the disk mesh is the tensor mesh of
[-1, 1]^2 under the elliptical grid map), lumped P1 quadrature, smooth
densities (normalized to mass 1), cost |x - y|^2, eps = 0 and gamma coupled to
the mesh, gamma = (4 h)^4 with h = 1/(m - 1) (the plan's support width
gamma^(1/4) spans a few cells).  Methods, each in a fresh subprocess (peak RSS
of that process):

* ``dense``: the (n1, n2) matrix (only where it fits, n <= --dense-max),
* ``geometric``: ``femot.GeometricCost`` from the solver's cold start,
* ``multiscale``: ``femot.core.multiscale.solve_qrot_multiscale`` (coarse-to-fine
  warm starts, same matrix-free fine solve).

Reported: wall time, Newton iterations, plan nonzeros and the largest Newton
matrix (working set), peak RSS, marginal error max(|pi w2 - mu1|, |pi^T w1 - mu2|)
(densities), and for the geometric runs the relative plan difference to dense.

    python benchmarks/scale.py                     # m in 45 100 200 (n = 2025, 10000, 40000)
    python benchmarks/scale.py --m 45 100 --methods dense geometric
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

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
    from femot.core.multiscale import solve_qrot_multiscale

    x, y, w1, w2, m1, m2, gamma = problem(m)
    # load the compiled kernels outside the timed region
    xs, ys = x[:: max(1, len(x) // 300)], y[:: max(1, len(y) // 300)]
    ws1, ws2 = np.full(len(xs), 1.0 / len(xs)), np.full(len(ys), 1.0 / len(ys))
    solve_qrot(GeometricCost(xs, ys), np.ones(len(xs)), np.ones(len(ys)), 1e-2, 0.0, ws1, ws2, tol=1e-6)
    solve_qrot(GeometricCost(xs, ys).dense(), np.ones(len(xs)), np.ones(len(ys)), 1e-2, 0.0, ws1, ws2, tol=1e-6)
    out = {"method": method, "m": m, "n1": len(x), "n2": len(y), "gamma": gamma, "pairs": len(x) * len(y)}
    t = time.perf_counter()
    if method == "dense":
        c = GeometricCost(x, y).dense()  # the same rounding as the matrix-free entries
        r = solve_qrot(c, m1, m2, gamma, 0.0, w1, w2, tol=tol)
    elif method == "geometric":
        r = solve_qrot(GeometricCost(x, y), m1, m2, gamma, 0.0, w1, w2, tol=tol)
    elif method == "multiscale":
        r = solve_qrot_multiscale(x, y, m1, m2, gamma, w1, w2, tol=tol)
        out["levels"] = r["levels"]
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
    import scipy.sparse as sp

    sp.save_npz(f"/tmp/femot_scale_{method}_{m}.npz", r.plan.tocsr())
    print("RESULT " + json.dumps(out))


def run_one(method, m, tol, timeout):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", method, str(m), repr(tol)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"method": method, "m": m, "success": False, "error": f"timeout {timeout}s"}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"method": method, "m": m, "success": False, "error": p.stderr[-800:]}


def _write(path, rows):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump({"runs": rows, "loadavg_end": os.getloadavg()}, fh, indent=2)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--m", type=int, nargs="+", default=[45, 100, 200], help="vertices per side (n = m^2)")
    ap.add_argument("--methods", nargs="+", default=["dense", "geometric", "multiscale"])
    ap.add_argument("--dense-max", type=int, default=10_000, help="largest n for the dense matrix")
    ap.add_argument("--geometric-max", type=int, default=10_000, help="largest n for the cold-start geometric run")
    ap.add_argument("--tol", type=float, default=1e-9)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--json", default=os.path.join(HERE, "results", "scale.json"))
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        meth, m, tol = args.worker
        worker(meth, int(m), float(tol))
        return 0
    import scipy.sparse as sp

    rows = []
    hdr = (f"{'n1':>6} {'n2':>6} {'method':>10} {'time s':>8} {'its':>4} {'passes':>6} {'plan nnz':>9} "
           f"{'max K nnz':>9} {'RSS MB':>7} {'marg err':>9} {'vs dense':>9}")
    print(hdr + "\n" + "-" * len(hdr), flush=True)
    for m in args.m:
        n = m * m
        for meth in args.methods:
            if (meth == "dense" and n > args.dense_max) or (meth == "geometric" and n > args.geometric_max):
                continue
            r = run_one(meth, m, args.tol, args.timeout)
            if "time_s" not in r:
                print(f"{n:6d} {'':6s} {meth:>10}  failed: {r.get('error', '')[:300]}", flush=True)
                rows.append(r)
                continue
            ref = f"/tmp/femot_scale_dense_{m}.npz"
            if meth != "dense" and os.path.exists(ref) and any(x.get("method") == "dense" and x.get("m") == m
                                                              for x in rows):
                A, B = sp.load_npz(f"/tmp/femot_scale_{meth}_{m}.npz"), sp.load_npz(ref)
                r["plan_rel_diff_to_dense"] = float(abs(A - B).max() / abs(B).max())
            print(f"{r['n1']:6d} {r['n2']:6d} {meth:>10} {r['time_s']:8.2f} {r['iterations']:4d} "
                  f"{r['dense_passes']:6d} {r['plan_nnz']:9d} {r['max_newton_nnz']:9d} {r['peak_rss_mb']:7.0f} "
                  f"{r['marginal_error']:9.1e} {r.get('plan_rel_diff_to_dense', float('nan')):9.1e}"
                  f"{'' if r['success'] else '  NOT CONVERGED'}", flush=True)
            rows.append(r)
            _write(args.json, rows)  # after every run: a long run interrupted keeps what it measured
    _write(args.json, rows)
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
