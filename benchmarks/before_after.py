"""Benchmark: this checkout against another one ("before"), interleaved in one run.

Runs the femot cases of ``benchmarks/qrot.py`` (1D, |x - y|^2, tol 1e-8) and the
cases of ``benchmarks/load.py`` (ocp-2d demo, 1D n = 3000), each in a fresh
subprocess, alternating before / after ``--reps`` times, with numba's default
thread count and with ``NUMBA_NUM_THREADS=1``.  On a shared machine timings
drift; interleaving exposes both checkouts to the same drift, and the reported
figure is the ratio of the medians after / before (below 1: faster now).

    python benchmarks/before_after.py --before /path/to/other/checkout
    python benchmarks/before_after.py --before ../main --qrot-n 1000 3000 --load-cases qrot1d-1e-3 --reps 3
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from _worker import run_worker

HERE = os.path.dirname(os.path.abspath(__file__))


def _case(kind, spec, root, one_thread, timeout):
    env = {"FEMOT_ROOT": root, "NUMBA_NUM_THREADS": "1" if one_thread else None}
    if kind == "qrot":
        n, g = spec
        args = ["--worker", "femot", n, repr(g), repr(1e-8)]
        script = os.path.join(HERE, "qrot.py")
    else:
        args = ["--worker", spec]
        script = os.path.join(HERE, "load.py")
    return run_worker(script, args, {"case": str(spec)}, timeout, env_updates=env, time_on_failure=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="root of the checkout to compare against")
    ap.add_argument("--qrot-n", type=int, nargs="*", default=[1000, 3000])
    ap.add_argument("--gammas", type=float, nargs="+", default=[1e-3, 1e-5])
    ap.add_argument("--load-cases", nargs="*", default=["ocp-2d"])
    ap.add_argument("--threads", choices=("default", "one", "both"), default="both")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--json", default=os.path.join(HERE, "results", "before_after.json"))
    args = ap.parse_args(argv)
    after = os.path.dirname(HERE)
    roots = {"before": os.path.abspath(args.before), "after": after}
    specs = [("qrot", (n, g)) for n in args.qrot_n for g in args.gammas] + [("load", c) for c in args.load_cases]
    settings = {"default": [False], "one": [True], "both": [False, True]}[args.threads]
    rows = []
    print(f"before = {roots['before']}\nafter  = {roots['after']}\n", flush=True)
    for kind, spec in specs:
        for one in settings:
            _case(kind, spec, roots["after"], one, args.timeout)  # warm-up: numba caches of both
            _case(kind, spec, roots["before"], one, args.timeout)
            runs: dict = {"before": [], "after": []}
            for _ in range(args.reps):
                for which in ("before", "after"):
                    runs[which].append(_case(kind, spec, roots[which], one, args.timeout))
            med = {k: float(np.median([r["time_s"] for r in v])) for k, v in runs.items()}
            its = {k: [r.get("iterations") for r in v][:1] for k, v in runs.items()}
            ok = all(r.get("success") for v in runs.values() for r in v)
            row = {"case": f"{kind} {spec}", "threads": "1" if one else "default", "before_s": med["before"],
                   "after_s": med["after"], "ratio": med["after"] / med["before"], "iterations": its,
                   "success": ok, "runs": runs}
            rows.append(row)
            print(f"{row['case']:28s} threads {row['threads']:7s} before {med['before']:8.3f} s  after "
                  f"{med['after']:8.3f} s  after/before {row['ratio']:5.2f}  its {its['before']} -> {its['after']}"
                  f"{'' if ok else '  FAILED'}", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump({"roots": roots, "reps": args.reps, "rows": rows}, fh, indent=2)
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
