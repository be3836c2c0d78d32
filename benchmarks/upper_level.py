"""Benchmark: the trust region with the BFGS model against the exact second-order model.

The same upper-level problems are solved twice in one run, once with the BFGS model of
Part III Remark 4.2 (``hessian=False``) and once with exact Hessian-vector products
(``hessp``: projected Newton-CG inside the trust region), and the table reports per
problem and model: trust-region iterations, lower-level solves, Hessian-vector
products, wall time, success and the final gap (the Frank-Wolfe gap relative to |f| for
the convex value formulation, theta_R -- or the certificate psi of the bundle -- over theta_R at
the start otherwise).

Problems (the data of ``femot demo ocp-1d``, 128 cells, and a Part III instance):

* ``ocp-1d value``  the convex value formulation at delta = 0.08, gamma = delta^3;
* ``ocp-1d plan``   (OCP^delta_gamma) of Part II on the same data, three ways: BFGS, Algorithm 4.1
  with the Newton-CG model (``method="trust-region"``), and the bundle of quadratic cuts with the
  exact tracking Hessian (``method="bundle"``, the default of ``ControlProblem.solve`` for "plan");
* ``identification`` experiment 1 of Part III Section 4.2, n = 25, seed 0, gamma = eps = 1e-4
  (BFGS: direct, as in the paper; Newton: with continuation from gamma = 1e-2).

    python benchmarks/upper_level.py                 # table + JSON in benchmarks/results/
    python benchmarks/upper_level.py --max-iter 100
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def control_problem(transport, delta=0.08, cells=128):
    from skfem import MeshLine

    from femot.demos.ocp_1d import problem_data
    from femot.fem import PoissonOperator
    from femot.problems.control import ControlProblem

    op = PoissonOperator(MeshLine(np.linspace(0.0, 1.0, cells + 1)))
    _, y_d, mu2 = problem_data(op, rho=0.2)
    return ControlProblem(op, y_d, mu2, 0.02, delta**3, delta, beta=2.0, rho=0.2, transport=transport)


def run_control(transport, model, max_iter):
    P = control_problem(transport)
    t0 = time.perf_counter()
    opts = {"max_iter": max_iter}
    # Algorithm 4.1 with the Newton-CG model for "newton" (the default of the plan formulation is the bundle)
    method = "trust-region" if model == "newton" and transport == "plan" else None
    r = P.solve(options=opts, hessian=model != "bfgs", method=method)
    value = transport == "value"
    gap = r.fw_gap / abs(r.fun) if value else r.relative_stationarity
    kind = "fw_gap/|f|" if value else ("psi/theta0" if r.tr.stationarity_measure == "psi" else "theta/theta0")
    return {"iterations": int(r.nit), "lower_solves": int(r.lower_solves), "hessp": int(r.nhev),
            "time_s": time.perf_counter() - t0, "success": bool(r.success), "fun": float(r.fun),
            "gap": float(gap), "gap_kind": kind}


def run_identification(model, max_iter):
    hessian = model != "bfgs"
    from femot.problems.instances import identification_instance, problem_from_instance

    P = problem_from_instance(identification_instance(25, 0, experiment=1), gamma=1e-4, eps=1e-4)
    t0 = time.perf_counter()
    r = P.solve(options={"max_iter": max_iter}, model="newton" if hessian else "bfgs",
                continuation="auto" if hessian else None)
    return {"iterations": int(r.nit), "lower_solves": int(r.lower_requests), "hessp": int(r.get("nhev", 0)),
            "time_s": time.perf_counter() - t0, "success": bool(r.success), "fun": float(r.J),
            "gap": float(r.stationarity), "gap_kind": str(r.stationarity_measure)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-iter", type=int, default=200, help="trust-region iterations (default 200)")
    p.add_argument("--json", default=os.path.join(HERE, "results", "upper_level.json"))
    args = p.parse_args(argv)
    cases = [("ocp-1d value", ("bfgs", "newton"), lambda m: run_control("value", m, args.max_iter)),
             ("ocp-1d plan", ("bfgs", "newton", "bundle"), lambda m: run_control("plan", m, args.max_iter)),
             ("identification", ("bfgs", "newton"), lambda m: run_identification(m, args.max_iter))]
    print(f"{'problem':>15} {'model':>7} {'iter':>5} {'lower':>6} {'hessp':>6} {'time s':>8} {'ok':>4} "
          f"{'fun':>12} {'final gap':>10}  kind")
    rows = []
    for name, models, fn in cases:
        for model in models:
            row = {"problem": name, "model": model, **fn(model)}
            rows.append(row)
            print(f"{name:>15} {row['model']:>7} {row['iterations']:5d} {row['lower_solves']:6d} "
                  f"{row['hessp']:6d} {row['time_s']:8.2f} {'yes' if row['success'] else 'NO':>4} "
                  f"{row['fun']:12.6e} {row['gap']:10.2e}  {row['gap_kind']}", flush=True)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump({"max_iter": args.max_iter, "cpus": os.cpu_count(), "rows": rows}, fh, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
