"""Benchmark: experiment 1 of Part III §4.2 at larger n (transportation identification).

For each n, a generated instance (c = |i - j|^2, ~50% occupied marginals, exact plan by LP),
D = Omega, D1 = Omega_1, lam = 1, gamma = eps, solved by the trust-region method from the
uniform marginal.  Reports time to stationarity, iterations, J and errors; target from the
issue: n = 200 reaches stationarity 1e-5 in under 60 s.

    python benchmarks/identification.py --n 200 500 --gamma 1e-6
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[200, 500])
    ap.add_argument("--gamma", type=float, default=1e-6)
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--max-iter", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="benchmarks/results/identification.json")
    args = ap.parse_args(argv)

    from femot.problems.identification import identification_errors, solve_identification
    from femot.problems.instances import identification_instance, problem_from_instance

    rows = []
    print(f"{'n':>5} {'time s':>8} {'iters':>6} {'stationarity':>13} {'J':>10} {'mu1 err':>9} {'success':>8}")
    for n in args.n:
        data = identification_instance(n, seed=args.seed, experiment=1)
        problem = problem_from_instance(data, gamma=args.gamma, eps=args.gamma, lam=1.0)
        t = time.perf_counter()
        r = solve_identification(problem, options={"tol": args.tol, "max_iter": args.max_iter})
        dt = time.perf_counter() - t
        err = identification_errors(r.mu1, r.plan, data["mu1_true"], data["pi_true"])
        row = {"n": n, "gamma": args.gamma, "time_s": dt, "nit": int(r.nit), "stationarity": float(r.stationarity),
               "J": float(r.J), "mu1_err_max": err["mu1_err_max"], "success": bool(r.success), "seed": args.seed}
        rows.append(row)
        print(f"{n:5d} {dt:8.2f} {r.nit:6d} {r.stationarity:13.3e} {r.J:10.3e} {err['mu1_err_max']:9.2e} "
              f"{str(r.success):>8}", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump({"runs": rows}, fh, indent=2)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
