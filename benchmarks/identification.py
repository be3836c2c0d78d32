"""Benchmark: transportation identification (Part III §4.2, experiment 1) at scale.

Experiment-1 instances (c_ij = |i - j|^2, marginals about half occupied summing to
1, pi* exact from the LP, D = Omega, D1 = Omega_1, lam = 1) with n = 200 and 500
are solved by the constrained nonsmooth trust-region method from the uniform
marginal (tol 1e-5 on the stationarity measure, at most --max-iter iterations)
for every pair (gamma, eps) of --gammas x --eps.  Reported per run: wall time
(the LP for pi* not included), iterations, final stationarity, status, J, J at
the truth mu1*, the max errors against the truth, lower-level solves, their time
and failures, and the eps bias eps*max|alpha| relative to max mu2.

Why eps is set apart from gamma at these sizes: the eps term of (3.1) shifts the
plan's marginals by eps*alpha, and with this cost |alpha| grows like n^2 (~4e4
at n = 200) while the marginal entries shrink like 1/n.  gamma = eps = 1e-4 at
n = 200 moves the marginals by ~4 -- hundreds of times the marginals themselves --
so the lower level no longer resembles transport; eps = 1e-8 keeps the shift near
10% and eps = 1e-10 near 0.1%.

--seeds K adds the small-instance check: experiment 1 at n = 25 and
gamma = eps = 1e-6 on seeds 0..K-1 (J, max|mu1* - mu1|, iterations), and the same
with eps = 1e-8: the plan's marginals are off by eps*alpha (Part III (3.1)), and
with |alpha| up to ~150 on these seeds this bias, not the optimizer, sets J at
eps = 1e-6.  The column "SQP min" is the smallest value SciPy's SLSQP reaches
with the same oracle from the truth, the uniform marginal and the trust-region
point: an independent estimate of the problem's minimum.

--compare measures the default model against today's two: experiment 1 at the sizes
--n, seeds --compare-seeds, the uniform and the observed start, gamma in --gammas, eps in
--eps.  "before" is the lower J of the two models run separately (``model="bfgs"``
and ``model="newton", continuation="auto"``); "after" is the default ``model="auto"``.
Per run: J, J at the truth, max|mu1* - mu1|, stationarity (and whether certified), time,
and whether the truth's basin was found (:func:`truth_basin`).  By default both rows of
an instance come from the phases of ONE default solve from the uniform start
(:func:`compare_from_phases`: every phase of ``model="auto"`` runs on a fresh problem, so
they are the single-model runs); --independent runs the five solves separately (the
Newton path with continuation, the costly part at gamma = 1e-4, then runs five times
instead of twice).  --before JSON... takes "before" from earlier --compare results of the
same instances (e.g. run with the code before a change, the measurement of a change).

Gamma barely matters at these sizes: the cost gaps (>= 1) dwarf gamma * pi, so the
regularized plans are already the sparse exact ones at gamma = 1e-2.  Smaller
gamma only raises the rounding floor n*u*max|c|/gamma of the lower level, which
the trust region sees as noise once its radius is small.

BLAS runs single-threaded unless OPENBLAS_NUM_THREADS / OMP_NUM_THREADS are set:
the trust-region method works with dense n x n matrices that are too small to
profit from threads, and threaded BLAS on a busy machine was up to 1000x slower.

    python benchmarks/identification.py                  # n = 200, 500; gamma 1e-2; eps 1e-8; 10 seeds
    python benchmarks/identification.py --n 200 --gammas 1e-2 1e-4 --eps 1e-8 1e-10 --seeds 0
    python benchmarks/identification.py --compare --n 200 --gammas 1e-2 1e-4 --compare-seeds 0 1 2 3 4
        --json benchmarks/results/identification_compare.json
    PYTHONPATH=<old checkout> python benchmarks/identification.py --compare ... --json old.json
    python benchmarks/identification.py --table new.json --before old.json   # before = the old code
Results: benchmarks/results/identification.json (or --json PATH).
"""
from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def run_one(n, seed, gamma, eps, tol, max_iter, sqp=False, model=None):
    """One experiment-1 run (``model`` of ``TransportIdentification.solve``, None: its default); with ``sqp`` also
    the SLSQP estimate of the minimum (``sqp_min``)."""
    from femot.problems import identification_errors, identification_instance, problem_from_instance

    t = time.perf_counter()
    data = identification_instance(n, seed, experiment=1)
    t_lp = time.perf_counter() - t
    prob = problem_from_instance(data, gamma=gamma, eps=eps)
    res = prob.solve(options={"tol": tol, "max_iter": max_iter}, model=model)
    errs = identification_errors(res.mu1, res.plan, data["mu1_true"], data["pi_true"])
    return {
        "n": n, "seed": seed, "gamma": gamma, "eps": eps, "tol": tol, "max_iter": max_iter,
        "time_s": res.time_s, "lp_time_s": t_lp, "nit": res.nit, "nfev": res.nfev,
        "stationarity": res.stationarity, "stationarity_measure": res.stationarity_measure,
        "status": res.status, "success": bool(res.success), "message": res.message,
        "reached_tol": bool(res.stationarity <= tol), "J": res.J, "J_at_truth": prob.value(data["mu1_true"]),
        **errs, "lower_solves": res.lower_requests, "lower_time_s": res.lower_time_s,
        "lower_failures": res.lower_failures, "eps_bias_relative": res.eps_bias_relative,
        **({"sqp_min": sqp_minimum(prob, [data["mu1_true"], np.full(n, prob.mass / n), res.mu1])} if sqp else {}),
    }


def truth_basin(J, J_true, mu1_err, eps_bias, mu1_true):
    """Whether a point lies in the truth's basin: J <= 1.01 J(mu1*), max|mu1 - mu1*| <= 1% max mu1* + eps bias.

    The minimizer near the truth beats it (J <= J(mu1*)); the 1% slack in J allows for
    stopping at tol.  Its distance to mu1* is of the order of the eps bias of (3.1)
    plus what the mismatch of the regularized plans costs; the local minima away from
    the truth are off by a sizeable fraction of max mu1* (about half at n = 200).
    """
    return bool(J <= 1.01 * J_true and mu1_err <= 0.01 * float(np.max(mu1_true)) + eps_bias)


def _record(r_like, x, data, prob, J_true):
    """The compared quantities of one end point ``x`` (J, error, stationarity, basin, ...)."""
    from femot.problems import identification_errors

    low = prob.lower_level(x)
    e = identification_errors(x, low.plan, data["mu1_true"], data["pi_true"])
    bias = prob.eps * max(float(np.abs(low.alpha).max()), float(np.abs(low.beta).max()))
    return {"J": float(r_like["J"]), "J_at_truth": J_true, "mu1_err_max": e["mu1_err_max"], "eps_bias": bias,
            "stationarity": float(r_like["stationarity"]), "stationarity_measure": r_like["stationarity_measure"],
            "success": bool(r_like["success"]), "nit": int(r_like["nit"]), "time_s": float(r_like["time_s"]),
            "phase": r_like.get("phase"),
            "truth_basin": truth_basin(float(r_like["J"]), J_true, e["mu1_err_max"], bias, data["mu1_true"])}


def _row(n, seed, gamma, eps, start, bfgs, newton, auto):
    before = min((bfgs, newton), key=lambda r: r["J"])
    return {"n": n, "seed": seed, "gamma": gamma, "eps": eps, "start": start, "bfgs": bfgs, "newton": newton,
            "auto": auto, "before": before, "before_time_s": bfgs["time_s"] + newton["time_s"]}


def compare_independent(n, seed, gamma, eps, start, tol, max_iter):
    """Today's two models and the default ``model="auto"``, each a separate solve on a fresh problem."""
    from femot.problems import identification_instance, problem_from_instance

    data = identification_instance(n, seed, experiment=1)
    out = {}
    for key, kw in (("bfgs", {"model": "bfgs"}), ("newton", {"model": "newton", "continuation": "auto"}),
                    ("auto", {"model": "auto"})):
        prob = problem_from_instance(data, gamma=gamma, eps=eps)
        x0 = prob.observed_start() if start == "observed" else None
        r = prob.solve(x0, options={"tol": tol, "max_iter": max_iter}, **kw)
        rec = _record({**r, "J": r.J, "phase": r.get("phase")}, r.mu1, data, prob, prob.value(data["mu1_true"]))
        rec["phases"] = list(r.phases)
        out[key] = rec
    return _row(n, seed, gamma, eps, start, out["bfgs"], out["newton"], out["auto"])


def compare_from_phases(n, seed, gamma, eps, tol, max_iter):
    """Both rows (uniform and observed start) of one instance from ONE default solve from the uniform start.

    ``model="auto"`` runs every phase on a fresh copy of the problem, so its phases
    "uniform: bfgs" and "uniform: newton" are the computations of ``model="bfgs"`` and
    ``model="newton", continuation="auto"`` alone, and its "observed: ..." phases those
    of the single models and of ``model="auto"`` from the observed start (which skips
    the second start, equal to x0); tests/test_identification.py checks these identities
    bit for bit.  The end point of every phase is taken from the callback (the x of its
    last iteration), checked against the phase's J by a fresh evaluation (to 1e-2 relative).  This costs
    one default solve instead of five Newton paths; ``--independent`` runs them all.
    """
    from femot.problems import identification_instance, problem_from_instance

    data = identification_instance(n, seed, experiment=1)
    prob = problem_from_instance(data, gamma=gamma, eps=eps)
    starts = {"uniform": prob.uniform(), "observed": prob.observed_start()}
    seen = []
    r = prob.solve(options={"tol": tol, "max_iter": max_iter},
                   callback=lambda it: seen.append((it.fun, it.x)))
    if sum(p["nit"] for p in r.phases) != len(seen):
        raise RuntimeError(f"{len(seen)} callbacks for {sum(p['nit'] for p in r.phases)} iterations")
    fresh = problem_from_instance(data, gamma=gamma, eps=eps)
    J_true = fresh.value(data["mu1_true"])
    recs, ends, k = {}, {}, 0
    for p in r.phases:
        label = p["phase"].split(": ", 1)[0]
        # a polish starts at the end of the phase it names (its origin)
        x = ends[p["origin"]] if p.get("origin") else starts[label]
        for i, lv in enumerate(p["levels"]):
            seg = seen[k:k + lv["nit"]]
            k += lv["nit"]
            # an intermediate level stopped (status 4: its lower level failed) is dropped
            if seg and (i == len(p["levels"]) - 1 or lv["status"] != 4):
                x = seg[-1][1]
        ends[p["phase"]] = x
        # a fresh (cold) lower solve agrees with the phase's warm-started one to the lower
        # level's rounding floor (relative ~1e-8 at n = 200, up to ~3e-4 at n = 500, gamma = 1e-4)
        rel = abs(fresh.value(x) - p["J"]) / max(abs(p["J"]), 1e-300)
        if rel > 1e-2:
            raise RuntimeError(f"phase {p['phase']}: J {p['J']!r} but {fresh.value(x)!r} at its last iterate")
        recs[p["phase"]] = {**_record(p, x, data, fresh, J_true), "J_fresh_rel_diff": rel}
    rows = []
    for label in starts:
        if f"{label}: bfgs" not in recs:
            continue
        bfgs, newton = recs[f"{label}: bfgs"], recs[f"{label}: newton"]
        phases = [p for p in r.phases if p["phase"].startswith(f"{label}: ")]
        # the ends model="auto" chooses from: every phase not polished further by the default
        polished = {p["origin"] for p in phases if p.get("origin") and p["phase"].endswith(" polish")}
        candidates = [recs[p["phase"]] for p in phases if p["phase"] not in polished]
        if label == "uniform":
            # the default run itself: its returned point and totals
            auto = _record({**r, "J": r.J, "phase": r.get("phase")}, r.mu1, data, fresh, J_true)
            auto["phases"] = list(r.phases)
        else:
            # model="auto" from this start: the certified of lowest J of its two ends
            auto = dict(min(candidates, key=lambda e: (not e["success"], e["J"])))
            auto["time_s"] = sum(p["time_s"] for p in phases)
            auto["nit"] = sum(p["nit"] for p in phases)
            auto["phase"] = auto["phase"].replace(f"{label}: ", "x0: ")
            auto["phases"] = phases
        rows.append(_row(n, seed, gamma, eps, label, bfgs, newton, auto))
    return rows


def _write(path, obj):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=2, default=float)


def _key(r):
    return (r["n"], r["seed"], float(r["gamma"]), float(r["eps"]), r["start"])


def _read_rows(paths):
    rows = {}
    for path in paths:
        with open(path) as fh:
            rows.update({_key(r): r for r in json.load(fh)["compare"]})
    return rows


def _take_before(row, old_rows, paths):
    """With --before: "before" (and the two models' records) from the same instance in an
    earlier --compare run, e.g. of the code before a change; this run's models are kept as
    ``bfgs_now`` / ``newton_now``."""
    old = old_rows.get(_key(row)) if old_rows else None
    if old is None:
        row["before_source"] = "this run"
        return
    row["bfgs_now"], row["newton_now"] = row["bfgs"], row["newton"]
    for k in ("bfgs", "newton", "before", "before_time_s"):
        row[k] = old[k]
    row["before_source"] = " ".join(paths)


_HEAD = (f"{'n':>4} {'seed':>4} {'gamma':>6} {'start':>8} | {'J before':>9} {'err':>8} {'stat':>7} {'cert':>4} "
         f"{'time':>6} {'basin':>5} | {'J after':>9} {'err':>8} {'stat':>7} {'cert':>4} {'time':>6} {'basin':>5} "
         f"| {'J(mu1*)':>8} {'after phase':<28}")


def _print_row(r):
    b, a = r["before"], r["auto"]
    print(f"{r['n']:>4d} {r['seed']:>4d} {r['gamma']:>6.0e} {r['start']:>8} | {b['J']:>9.3e} {b['mu1_err_max']:>8.1e} "
          f"{b['stationarity']:>7.1e} {'yes' if b['success'] else 'no':>4} "
          f"{r['before_time_s']:>6.1f} {'yes' if b['truth_basin'] else 'no':>5} | "
          f"{a['J']:>9.3e} {a['mu1_err_max']:>8.1e} {a['stationarity']:>7.1e} "
          f"{'yes' if a['success'] else 'no':>4} {a['time_s']:>6.1f} "
          f"{'yes' if a['truth_basin'] else 'no':>5} | {b['J_at_truth']:>8.1e} "
          f"{a['phase']:<28}", flush=True)


def _summary(rows):
    # 1e-12 relative: the default's J is recomputed from its plan, a phase's is the optimizer's value
    worse = [(r["n"], r["seed"], r["gamma"], r["start"]) for r in rows
             if r["auto"]["J"] > r["before"]["J"] * (1 + 1e-12)]
    print(f"\nafter certified on {sum(r['auto']['success'] for r in rows)}/{len(rows)} runs (before: "
          f"{sum(r['before']['success'] for r in rows)}); truth's basin after "
          f"{sum(r['auto']['truth_basin'] for r in rows)}"
          f"/{len(rows)} (before {sum(r['before']['truth_basin'] for r in rows)}); after worse than before on "
          f"{len(worse)} runs {worse}; time after / before (sums) "
          f"{sum(r['auto']['time_s'] for r in rows) / max(sum(r['before_time_s'] for r in rows), 1e-300):.2f}")


def compare(args):
    """The before/after table of --compare."""
    print(_HEAD)
    rows = []
    old_rows = _read_rows(args.before) if args.before else None
    for n in args.n:
        for seed in args.compare_seeds:
            for g in args.gammas:
                for e in args.eps:
                    e = e if e > 0 else g
                    if args.independent:
                        new = [compare_independent(n, seed, g, e, start, args.tol, args.max_iter)
                               for start in ("uniform", "observed")]
                    else:
                        new = compare_from_phases(n, seed, g, e, args.tol, args.max_iter)
                    for r in new:
                        _take_before(r, old_rows, args.before)
                    rows.extend(new)
                    _write(args.json, {"compare": rows, "tol": args.tol, "max_iter": args.max_iter,
                                       "independent": args.independent})
                    for r in new:
                        _print_row(r)
    _summary(rows)
    return rows


def table(args):
    """--table: the --compare table of saved results (with --before: "before" from those), no runs."""
    rows = []
    for path in args.table:
        with open(path) as fh:
            rows.extend(json.load(fh)["compare"])
    old_rows = _read_rows(args.before) if args.before else None
    print(_HEAD)
    for r in rows:
        _take_before(r, old_rows, args.before)
        _print_row(r)
    _summary(rows)
    return rows


def sqp_minimum(prob, starts):
    """Smallest value of the reduced objective SLSQP finds from each start (same oracle)."""
    from scipy.optimize import minimize

    n = prob.n
    best = np.inf
    for x0 in starts:
        r = minimize(lambda x: prob.value_and_subgradient(np.maximum(x, 0.0)), x0, jac=True, method="SLSQP",
                     bounds=[(0.0, 1.0)] * n, options={"ftol": 1e-16, "maxiter": 300},
                     constraints=[{"type": "eq", "fun": lambda x: x.sum() - prob.mass,
                                   "jac": lambda x: np.ones(n)}])
        x = np.maximum(r.x, 0.0)
        best = min(best, prob.value(x * (prob.mass / x.sum())))
    return float(best)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[200, 500])
    p.add_argument("--gammas", type=float, nargs="+", default=[1e-2], help="gamma values")
    p.add_argument("--eps", type=float, nargs="+", default=[1e-8],
                   help="eps values (0 or negative: eps = gamma); every (gamma, eps) pair is run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=1e-5)
    p.add_argument("--max-iter", type=int, default=1000)
    p.add_argument("--seeds", type=int, default=10, help="n = 25 acceptance seeds (0: skip)")
    p.add_argument("--json", help="results file (default benchmarks/results/identification.json; "
                                  "with --table none)")
    p.add_argument("--compare", action="store_true",
                   help="before/after table of the default model instead of the runs above")
    p.add_argument("--independent", action="store_true",
                   help="--compare: five separate solves per instance instead of the phases of one default solve")
    p.add_argument("--compare-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--table", nargs="+", metavar="JSON",
                   help="print the --compare table of saved results (no runs); with --json also write them")
    p.add_argument("--before", nargs="+", metavar="JSON",
                   help="--compare: take 'before' from these earlier --compare results (same instances), "
                        "e.g. run with the code before a change")
    args = p.parse_args(argv)
    if args.table:
        rows = table(args)
        if args.json:
            _write(args.json, {"compare": rows, "tables": args.table, "before": args.before})
        return
    args.json = args.json or os.path.join(os.path.dirname(__file__), "results", "identification.json")

    from femot.problems import identification_instance, problem_from_instance

    # compile the numba kernels outside the timed runs
    problem_from_instance(identification_instance(8, 0), gamma=1e-2).value(np.full(8, 1 / 8))

    print(f"seed {args.seed}; tol {args.tol:g}; max_iter {args.max_iter}; BLAS threads "
          f"{os.environ.get('OPENBLAS_NUM_THREADS')}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cpus")
    if args.compare:
        compare(args)  # the JSON is rewritten after every run (long runs can be cut short)
        print(f"\nwritten {args.json}")
        return
    head = (f"{'n':>5} {'gamma':>7} {'eps':>7} {'time s':>8} {'iter':>5} {'stationarity':>13} {'status':>6} "
            f"{'J':>10} {'J(mu1*)':>9} {'mu1 err':>9} {'pi err':>9} {'solves':>6} {'solve s':>7} {'fail':>4} "
            f"{'bias':>6}")
    print(head)
    rows = []
    for n in args.n:
        for g, e in [(g, e if e > 0 else g) for g in args.gammas for e in args.eps]:
            r = run_one(n, args.seed, g, e, args.tol, args.max_iter)
            rows.append(r)
            print(f"{n:>5d} {g:>7.0e} {e:>7.0e} {r['time_s']:>8.2f} {r['nit']:>5d} {r['stationarity']:>9.2e} "
                  f"({r['stationarity_measure'][0]}) {r['status']:>6d} {r['J']:>10.3e} {r['J_at_truth']:>9.2e} "
                  f"{r['mu1_err_max']:>9.2e} {r['pi_err_max']:>9.2e} {r['lower_solves']:>6d} "
                  f"{r['lower_time_s']:>7.2f} {r['lower_failures']:>4d} {r['eps_bias_relative']:>6.1%}", flush=True)
    seeds = {}
    if args.seeds:
        for eps in (1e-6, 1e-8):
            print(f"\nacceptance: experiment 1, n = 25, gamma = 1e-6, eps = {eps:g}, seeds 0..{args.seeds - 1}")
            print(f"{'seed':>5} {'J':>10} {'J(mu1*)':>9} {'SQP min':>9} {'mu1 err':>9} {'pi err':>9} {'iter':>5} "
                  f"{'stationarity':>13} {'ok':>3} {'time s':>7}")
            rs = []
            for s in range(args.seeds):
                r = run_one(25, s, 1e-6, eps, args.tol, 200, sqp=True)
                rs.append(r)
                print(f"{s:>5d} {r['J']:>10.3e} {r['J_at_truth']:>9.2e} {r['sqp_min']:>9.2e} {r['mu1_err_max']:>9.2e} "
                      f"{r['pi_err_max']:>9.2e} {r['nit']:>5d} {r['stationarity']:>9.2e} "
                      f"({r['stationarity_measure'][0]}) {'yes' if r['success'] else 'no':>3} {r['time_s']:>7.2f}",
                      flush=True)
            J = np.array([r["J"] for r in rs])
            e = np.array([r["mu1_err_max"] for r in rs])
            it = np.array([r["nit"] for r in rs])
            sqp = np.array([r["sqp_min"] for r in rs])
            print(f"max J = {J.max():.3e} (J <= 1e-7 on {int((J <= 1e-7).sum())}/{len(J)} seeds; J <= J(mu1*) on "
                  f"{sum(r['J'] <= r['J_at_truth'] for r in rs)}; SQP min > 1e-7 on {int((sqp > 1e-7).sum())}; "
                  f"max J / SQP min = {np.max(J / sqp):.3f}), max mu1 error = {e.max():.3e}, "
                  f"max iterations = {it.max()}, converged {sum(r['success'] for r in rs)}/{len(rs)}")
            seeds[f"eps={eps:g}"] = rs
    out = {"runs": rows, "acceptance_seeds": seeds, "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
           "cpus": os.cpu_count()}
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump(out, fh, indent=2)
    print(f"\nwritten {args.json}")


if __name__ == "__main__":
    main()
