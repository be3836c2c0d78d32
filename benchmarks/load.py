"""Benchmark: femot under CPU load (more runnable threads than cores).

Runs, in one run and each in a fresh subprocess,

* ``femot demo ocp-2d`` (full size: 1089 x 1089 transport pairs per lower-level solve),
* the 1D solve of ``benchmarks/qrot.py`` at n = 3000 (|x - y|^2, gamma = 1e-3 and 1e-5,
  tol 1e-8),

in four settings: idle / beside two CPU-bound competitor processes (spawned here,
``python -c "while True: pass"``, killed at the end), each with numba's default
thread count and with ``NUMBA_NUM_THREADS=1``.  Reported per case: wall times,
the ratios loaded-default / loaded-one-thread (the robustness figure: a
parallel code that collapses under oversubscription shows a large ratio here)
and idle-default / idle-one-thread, and the number and size of the parallel
passes (regions) and how many of them ran on more than one thread.

The machine is "idle" only if nothing else runs; the script records the load
average and femot's own free-core estimate before each phase so that a shared
machine is visible in the output.

    python benchmarks/load.py            # 3 repetitions, median
    python benchmarks/load.py --quick    # 1 repetition
    python benchmarks/load.py --cases qrot1d-1e-5 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from _worker import busy_processes, run_worker

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("FEMOT_ROOT") or os.path.dirname(HERE)  # the checkout to measure (before/after)
CASES = ("ocp-2d", "qrot1d-1e-3", "qrot1d-1e-5")


def _instrument():
    """Record the parallel passes: every one goes through ``kernels._run``."""
    from femot.core import kernels

    kernels.trace = []
    return kernels.trace


def worker(case):
    sys.path.insert(0, ROOT)
    import numba

    from femot import solve_qrot

    sys.path.insert(0, HERE)
    from qrot import problem

    # load the compiled kernels (serial and parallel paths) outside the timed region
    for k in (64, 600):
        xk, wk, m1k, m2k = problem(k)
        solve_qrot((xk[:, None] - xk[None, :]) ** 2, m1k, m2k, 1e-3, 0.0, wk, wk, tol=1e-6)
    regions = _instrument()
    out = {"case": case, "numba_threads": numba.get_num_threads()}
    if case == "ocp-2d":
        import contextlib
        import io

        from femot.cli import main

        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            rc = main(["demo", "ocp-2d", "--quiet"])
        out["time_s"] = time.perf_counter() - t
        out["success"] = rc in (0, None)
    else:
        gamma = float(case.split("-", 1)[1])
        x, w, m1, m2 = problem(3000)
        M = (x[:, None] - x[None, :]) ** 2
        t = time.perf_counter()
        r = solve_qrot(M, m1, m2, gamma, 0.0, w, w, tol=1e-8)
        out["time_s"] = time.perf_counter() - t
        out["success"] = bool(r.success)
        out["iterations"] = int(r.nit)
    work = np.array([w for w, _ in regions], dtype=float)
    out["regions"] = len(regions)
    out["regions_multithreaded"] = int(sum(1 for _, k in regions if k > 1))
    out["region_work_median"] = float(np.median(work)) if work.size else 0.0
    out["region_work_max"] = float(work.max()) if work.size else 0.0
    print("RESULT " + json.dumps(out))


def run_one(case, one_thread, timeout):
    return run_worker(__file__, ["--worker", case], {"case": case}, timeout,
                      env_updates={"NUMBA_NUM_THREADS": "1" if one_thread else None}, time_on_failure=True)



def machine_state():
    sys.path.insert(0, ROOT)
    from femot.core.kernels import free_cores

    return {"loadavg": os.getloadavg(), "free_cores_estimate": free_cores(), "cpus": os.cpu_count()}


def phase(cases, reps, timeout, label):
    """{case: {"default": [runs], "one": [runs]}}, the two settings interleaved."""
    res = {c: {"default": [], "one": []} for c in cases}
    for c in cases:
        for _ in range(reps):
            for key, one in (("default", False), ("one", True)):
                r = run_one(c, one, timeout)
                res[c][key].append(r)
                print(f"  [{label}] {c:12s} {key:7s} {r['time_s']:8.2f} s  regions {r.get('regions', '-')}"
                      f" (multithreaded {r.get('regions_multithreaded', '-')})"
                      f"{'' if r.get('success') else '  FAILED ' + r.get('error', '')[:200]}", flush=True)
    return res


def median_time(runs):
    return float(np.median([r["time_s"] for r in runs]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one repetition per setting")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    ap.add_argument("--competitors", type=int, default=2, help="CPU-bound processes beside the loaded runs")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--json", default=os.path.join(HERE, "results", "load.json"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    reps = 1 if args.quick else args.reps
    report = {"reps": reps, "competitors": args.competitors}
    # one discarded run per case first: compiles (or loads) every numba kernel into the
    # on-disk cache, so no timed run pays for compilation
    print("warm-up (discarded)", flush=True)
    for c in args.cases:
        run_one(c, False, args.timeout)
    report["idle_state"] = machine_state()
    print(f"idle phase (machine state {report['idle_state']})", flush=True)
    idle = phase(args.cases, reps, args.timeout, "idle")
    with busy_processes(args.competitors, settle=1.0):
        report["loaded_state"] = machine_state()
        print(f"loaded phase, {args.competitors} competitors (machine state {report['loaded_state']})", flush=True)
        loaded = phase(args.cases, reps, args.timeout, "loaded")
    rows = []
    hdr = (f"{'case':12s} {'idle def':>9} {'idle 1t':>9} {'def/1t':>7} {'load def':>9} {'load 1t':>9} "
           f"{'def/1t':>7} {'regions':>8} {'multi':>6}")
    print("\n" + hdr + "\n" + "-" * len(hdr))
    ok = True
    for c in args.cases:
        row = {"case": c}
        for name, ph in (("idle", idle), ("loaded", loaded)):
            td, t1 = median_time(ph[c]["default"]), median_time(ph[c]["one"])
            row[f"{name}_default_s"], row[f"{name}_one_thread_s"] = td, t1
            row[f"{name}_ratio"] = td / t1
            row[f"{name}_runs"] = ph[c]
        row["success"] = all(r.get("success") for ph in (idle, loaded) for k in ("default", "one") for r in ph[c][k])
        d0 = idle[c]["default"][0]
        row["regions"] = d0.get("regions")
        row["regions_multithreaded_idle"] = d0.get("regions_multithreaded")
        row["region_work_median"] = d0.get("region_work_median")
        row["acceptance_loaded_ratio_le_1.5"] = row["loaded_ratio"] <= 1.5
        ok &= row["acceptance_loaded_ratio_le_1.5"] and row["success"]
        rows.append(row)
        print(f"{c:12s} {row['idle_default_s']:9.2f} {row['idle_one_thread_s']:9.2f} {row['idle_ratio']:7.2f} "
              f"{row['loaded_default_s']:9.2f} {row['loaded_one_thread_s']:9.2f} {row['loaded_ratio']:7.2f} "
              f"{row['regions'] or 0:8d} {row['regions_multithreaded_idle'] or 0:6d}")
    report["cases"] = rows
    report["acceptance"] = bool(ok)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump(report, fh, indent=2)
    print(f"\nacceptance (loaded default <= 1.5 x loaded one-thread, all runs succeed): {ok}")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
