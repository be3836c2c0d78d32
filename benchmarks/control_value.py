"""Benchmark: the value formulation of the 2D control problem on FE data (ControlProblem, transport="value").

Cases, each in its own subprocess (``_worker.py``; kernels loaded by a small solve first):

* ``A``: the [-1, 1]^2 instance of docs/problems.md, section 3b' (289 state nodes, controls at
  distance >= delta = 0.25 from the boundary, lumped Lebesgue prior of a 1,089-node mesh, transport
  on a 41 x 41 grid enlarged by delta: dense cost), gamma = 1e-6, nu = 5e-4;
* ``B``: 1,089 state nodes, delta = 0.1, ``enlarge=True`` (controls on all vertices), transport on a
  grid of spacing 0.025 enlarged by delta: 7,921 nodes, matrix-free cost (63M pairs);
* ``lower``: one cold lower-level solve of the 6,561-node instance of ``tests/_fe_instances.py``
  (level 1, matrix-free, gamma = 1e-6), as in ``benchmarks/fe_lower_level.py``.

Printed per case: wall time, trust-region iterations, Hessian-vector products, core calls, Newton
steps of the lower level (all continuation stages), success; JSON to
``benchmarks/results/control_value.json``.  Wall times on a shared machine are noisy: the counts
are the comparable figures.

    python benchmarks/control_value.py                  # A, B, lower
    python benchmarks/control_value.py --cases A        # one case
    python benchmarks/control_value.py --busy           # beside a busy-looping process
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from _worker import ROOT, busy_processes, run_worker

CASES = ("A", "B", "lower")


def _square(k):
    import skfem

    m = skfem.MeshTri().refined(k)
    return skfem.MeshTri(2 * m.p - 1, m.t)


def _target(X):
    import numpy as np

    return 0.5 * np.cos(np.pi * X[0] / 2) * np.cos(np.pi * X[1] / 2) * np.exp(X[1])


def problem(case, gamma=1e-6):
    """The ControlProblem of case A or B."""
    import numpy as np
    import skfem

    from femot.fem import PoissonOperator, quadrature
    from femot.problems import ControlProblem

    if case == "A":
        m = _square(4)
        q = quadrature(_square(5))
        g = np.r_[-1 - 0.0625 * np.arange(4, 0, -1), np.linspace(-1, 1, 33), 1 + 0.0625 * np.arange(1, 5)]
        tm = skfem.MeshTri.init_tensor(g, g)
        return ControlProblem(PoissonOperator(m), _target(m.p), q.weights, 5e-4, gamma, 0.25, transport="value",
                              transport_mesh=tm, target_points=q.nodes)
    m = _square(5)
    q = quadrature(_square(6))
    g = np.linspace(-1, 1, 81)
    tm = skfem.MeshTri.init_tensor(g, g)
    return ControlProblem(PoissonOperator(m), _target(m.p), q.weights, 5e-4, gamma, 0.1, transport="value",
                          enlarge=True, target_points=q.nodes, transport_mesh=tm)


def warm_up():
    """Load every compiled kernel (dense and matrix-free passes, continuation) outside the timed region."""
    import numpy as np

    from femot import GeometricCost, solve_qrot
    from femot.fem import PoissonOperator, quadrature
    from femot.problems import ControlProblem

    m = _square(2)
    q = quadrature(_square(3))
    P = ControlProblem(PoissonOperator(m), _target(m.p), q.weights, 5e-4, 1e-4, 0.5, transport="value",
                       target_points=q.nodes, enlarge=True, check_resolution=False)
    P.solve()
    x = np.random.default_rng(0).random((300, 2))
    w = np.full(300, 1.0 / 300)
    solve_qrot(GeometricCost(x, x), np.ones(300), np.ones(300), 1e-6, 0.0, w, w)


def worker(case):
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    warm_up()
    out = {"case": case}
    if case == "lower":
        from _fe_instances import fe_lower_level

        from femot import GeometricCost, solve_qrot
        from femot.problems.plan_maps import newton_steps

        x, w, m1, m2 = fe_lower_level(1)
        t = time.perf_counter()
        r = solve_qrot(GeometricCost(x, x), m1, m2, 1e-6, 0.0, w, w)
        out.update(time_s=time.perf_counter() - t, success=bool(r.success), nit=0, nhev=0, lower_solves=1,
                   newton_iterations=newton_steps(r), n=len(w), residual=float(r.residual), init=r.init)
    else:
        P = problem(case)
        t = time.perf_counter()
        r = P.solve()
        out.update(time_s=time.perf_counter() - t, success=bool(r.success), nit=int(r.nit), nhev=int(r.nhev),
                   lower_solves=int(r.lower_solves), newton_iterations=int(r.newton_iterations),
                   lower_solve_time_s=float(r.lower_solve_time_s), n=int(P.n), transport_nodes=int(P.q.n),
                   matrix_free=bool(P.matrix_free), fun=float(r.fun), fw_gap=float(r.fw_gap),
                   message=str(r.message))
    print("RESULT " + json.dumps(out))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--busy", action="store_true", help="run beside a busy-looping process")
    ap.add_argument("--json", default="benchmarks/results/control_value.json")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    rows = []
    with busy_processes(1 if args.busy else 0) as busy:
        hdr = (f"{'case':>6} {'controls':>8} {'transport':>9} {'time s':>8} {'TR its':>6} {'hessp':>6} "
               f"{'core calls':>10} {'Newton':>7} {'ok':>3}")
        print(hdr + ("   (beside a busy process)" if busy else ""))
        print("-" * len(hdr))
        for case in args.cases:
            r = run_worker(__file__, ["--worker", case], {"case": case}, args.timeout, time_on_failure=True)
            r["loadavg"] = os.getloadavg()
            rows.append(r)
            print(f"{case:>6} {r.get('n', '-'):>8} {r.get('transport_nodes', r.get('n', '-')):>9} "
                  f"{r['time_s']:8.2f} {r.get('nit', '-'):>6} {r.get('nhev', '-'):>6} "
                  f"{r.get('lower_solves', '-'):>10} {r.get('newton_iterations', '-'):>7} "
                  f"{'yes' if r.get('success') else 'NO':>3}"
                  + ("" if r.get("success") else "  " + str(r.get("error", r.get("message", "")))[:200]), flush=True)
    if args.json:
        path = os.path.join(ROOT, args.json) if not os.path.isabs(args.json) else args.json
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            json.dump({"busy": bool(args.busy), "rows": rows}, fh, indent=1)
        print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
