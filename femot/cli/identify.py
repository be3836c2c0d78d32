"""``femot identify``: solve a transportation identification problem (Part III §4).

    femot identify INSTANCE.(mat|npz) [--gamma G] [--eps E] [--lam L] [--start S] [--delta0 R]
                   [--model M] [--continuation C] [--max-iter N] [--tol T] [--json OUT.json]
                   [--save OUT.(mat|npz)] [--plot DIR] [--quiet]
    femot identify --random N --seed S [--experiment 1|2] [...]

Prints the trust-region iteration table and a summary (max|mu1_d - mu1| over D1,
max|pi_d - pi| over D, J, iterations, stationarity and the tolerance it certifies, the J
of every phase of the default ``--model auto``, success).  Files of the authors'
MATLAB code are read as they are (``mu1_star``/``pi_star``, ``mu1_0``, ``delta_0``,
``H_0``; see :func:`femot.problems.instances.load_instance`), and the variables used
are printed.  Exit status 0 on
success, 1 if the optimizer stopped before the stationarity tolerance, 2 on bad
input.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from femot._io import write_json
from femot._validation import check_dense_memory
from femot.demos.common import (
    add_output_options,
    check_output_paths,
    figure_folder,
    printer,
    save_figure,
    write_summary,
)
from femot.demos.identification import plot_marginal_bars, plot_sparsity_overlay
from femot.optim import LEGEND, TrustRegionOptions
from femot.problems import identification_errors, identification_instance, load_instance, problem_from_instance
from femot.problems.instances import instance_options, save_result

__all__ = ["cmd_identify", "build_parser"]

# the generator holds a dense n x n cost and plan and solves an n^2-variable LP
_SMALLER_N = "use a smaller N (the random instance is dense: its cost, plan and exact LP grow like N^2)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="femot identify",
        description="Transportation identification (Part III §4): recover mu1 and its plan from observations "
                    "by the constrained nonsmooth trust-region method.")
    p.add_argument("instance", nargs="?", help=".mat or .npz file with c_d, mu2_d, mu1_d, pi_d "
                   "(or mu1_star, pi_star; optional D, D1, mu1_0, delta_0, H_0)")
    p.add_argument("--random", type=int, metavar="N", default=None,
                   help="instead of a file: a random n x n instance generated as in Part III §4.2")
    p.add_argument("--seed", type=int, default=0, help="seed of the random instance (default 0)")
    p.add_argument("--experiment", type=int, choices=(1, 2), default=1,
                   help="random instance: 1 = full observation, 2 = band D and D1 = rows 9..15 of 25 (default 1)")
    p.add_argument("--gamma", type=float, default=1e-4, help="regularization gamma (default 1e-4)")
    p.add_argument("--eps", type=float, default=None, help="dual regularization eps (default: gamma)")
    p.add_argument("--lam", type=float, default=1.0, help="weight of the marginal term (default 1)")
    p.add_argument("--start", choices=("auto", "uniform", "observed"), default="auto",
                   help="starting marginal: 'uniform' (Part III §4.2), 'observed' (mu1_d on D1, the rest "
                        "spread evenly), 'auto' = the file's mu1_0 if present, else uniform")
    p.add_argument("--delta0", type=float, default=None,
                   help="initial trust-region radius (default: the file's delta_0 if present, else 1)")
    p.add_argument("--model", choices=("auto", "bfgs", "newton"), default="auto",
                   help="trust-region model (default auto: Algorithm 4.1 with the BFGS model, a Newton polish "
                        "of its point if it did not converge, the Newton model with continuation and, if a "
                        "level was kept, without, each from the start and the observed marginal, the two "
                        "lowest ends of each start polished at tol/100; the certified point of lowest J is "
                        "returned and every phase's J "
                        "printed).  For experts: bfgs (Part III Remark 4.2; with the default '--continuation "
                        "none' the paper's Algorithm 4.1, Table 4.1) or newton (exact Gauss-Newton "
                        "Hessian-vector products of the reduced objective)")
    p.add_argument("--continuation", choices=("none", "auto"), default=None,
                   help="auto: solve first at 10^k (gamma, eps) down to the target, each level warm-starting the "
                        "next (default: none for bfgs/newton; auto for the Newton path of --model auto)")
    p.add_argument("--max-iter", type=int, default=200, help="trust-region iterations (default 200)")
    p.add_argument("--tol", type=float, default=1e-5, help="stationarity tolerance (default 1e-5)")
    p.add_argument("--save", metavar="OUT", default=None,
                   help="save mu1, pi, alpha, beta, J and the iteration history: OUT.mat for MATLAB (pi sparse), "
                        "any other suffix .npz (pi dense)")
    add_output_options(p)
    return p


def _load(args):
    if args.random is not None:
        if args.instance is not None:
            raise ValueError("give either INSTANCE or --random N, not both")
        if args.random < 2:
            raise ValueError(f"--random N needs N >= 2, got {args.random}")
        return identification_instance(args.random, args.seed, experiment=args.experiment), \
            f"random n={args.random} seed={args.seed} experiment={args.experiment}"
    if args.instance is None:
        raise ValueError("give an INSTANCE file (.mat or .npz) or --random N")
    return load_instance(args.instance), args.instance


def cmd_identify(argv) -> int:
    """``femot identify``: solve a transportation identification instance (Part III) from a file or generated.

    Exit status 1 if the optimizer did not succeed (command contract: :mod:`femot.cli`).
    """
    args = build_parser().parse_args(list(argv))
    say = printer(args.quiet)
    try:
        check_output_paths(args, "--save")  # before the solve, so that no result is lost
        check_dense_memory(args.random or 0, args.random or 0, 3, f"--random {args.random}", _SMALLER_N)
        data, label = _load(args)
        prob = problem_from_instance(data, gamma=args.gamma, eps=args.eps, lam=args.lam)
        if args.start == "observed":
            x0, start = prob.observed_start(), "observed"
        elif args.start == "auto" and data.get("mu1_0") is not None:
            x0, start = prob.check_point(data["mu1_0"], "mu1_0"), "mu1_0"
        else:
            x0, start = None, "uniform"
        if args.max_iter < 0:
            raise ValueError(f"--max-iter must be >= 0, got {args.max_iter}")
        if not args.tol >= 0:
            raise ValueError(f"--tol must be >= 0, got {args.tol}")
        opts = {"tol": args.tol, "max_iter": args.max_iter}
        if args.delta0 is not None:
            if not (np.isfinite(args.delta0) and args.delta0 > 0):
                raise ValueError(f"--delta0 must be a positive number, got {args.delta0}")
            opts["Delta0"] = args.delta0
        opts = instance_options(data, opts)
        delta0 = opts.get("Delta0", TrustRegionOptions().Delta0)
    except ValueError as exc:
        print(f"femot identify: error: {exc}", file=sys.stderr)
        return 2
    n1, n2 = prob.shape
    say(f"instance {label}: n1 = {n1}, n2 = {n2}, gamma = {prob.gamma:g}, eps = {prob.eps:g}, lam = {prob.lam:g}, "
        f"|D| = {int(prob.D.sum())}, |D1| = {int(prob.D1.sum())}, start {start}, Delta0 = {delta0:g}")
    if data.get("names_used"):
        say("variables read: " + ", ".join(k if k == v else f"{k} <- {v}" for k, v in data["names_used"].items()))
        for note in data.get("notes", []):
            say(f"note: {note}")
    say(LEGEND)  # the iteration tables below (one per phase and level) share these columns
    continuation = {None: None, "none": False, "auto": "auto"}[args.continuation]
    try:  # data the lower level refuses (e.g. gamma beyond double precision) surface at its first solve
        res = prob.solve(x0=x0, options={**opts, "verbose": not args.quiet}, model=args.model,
                         continuation=continuation)
    except ValueError as exc:
        print(f"femot identify: error: {exc}", file=sys.stderr)
        return 2
    print(res.summary())
    out = {
        "instance": label, "n1": n1, "n2": n2, "gamma": prob.gamma, "eps": prob.eps, "lam": prob.lam,
        "J": res.J, "nit": res.nit, "nfev": res.nfev, "stationarity": res.stationarity,
        "stationarity_measure": res.stationarity_measure, "success": bool(res.success), "status": res.status,
        "message": res.message, "mu1_err_max": res.mu1_err_max, "pi_err_max": res.pi_err_max,
        "time_s": res.time_s, "lower_requests": res.lower_requests, "lower_failures": res.lower_failures,
        "tol": args.tol, "max_iter": args.max_iter, "start": start, "model": args.model,
        "continuation": args.continuation, "phase": res.phase,
        "phases": [{k: v for k, v in p.items() if k != "levels"} for p in res.phases], "eps_bias": res.eps_bias,
        "eps_bias_relative": res.eps_bias_relative, "Delta0": delta0,
        "names_used": data.get("names_used"),
    }
    if data.get("mu1_true") is not None and data.get("pi_true") is not None:
        t = identification_errors(res.mu1, res.plan, data["mu1_true"], data["pi_true"])
        out["mu1_true_err_max"] = t["mu1_err_max"]
        out["pi_true_err_max"] = t["pi_err_max"]
        observed_is_truth = (np.array_equal(np.asarray(data.get("mu1_d")), np.asarray(data["mu1_true"]))
                             and _same_matrix(data.get("pi_d"), data["pi_true"]))
        if observed_is_truth:  # experiment 1: the lines above already measure against the truth
            print("the observations are the truth here (mu1_d = mu1*, pi_d = pi*): the errors above are against it")
        else:
            print(f"max|mu1* - mu1| = {t['mu1_err_max']:.4e}, max|pi* - pi| = {t['pi_err_max']:.4e} "
                  f"(against the truth)")
    if args.json not in (None, "-"):  # written before the figures too: a failing plot keeps it
        write_json(args.json, out)
        say(f"summary written to {args.json}")
    if args.save:
        say(f"solution written to {save_result(args.save, res)}")
    if args.plot:
        out["figures"] = _plots(args.plot, prob, data, res)
        say(f"figures in {args.plot}")
    if args.json == "-" or (args.json and args.plot):
        write_summary(args.json, out)
    return 0 if res.success else 1


def _plots(folder, prob, data, res):


    plt = figure_folder(folder)
    truth = data.get("mu1_true") is not None and data.get("pi_true") is not None
    mu_ref = data["mu1_true"] if truth else np.where(prob.D1, prob.mu1_d, 0.0)
    pi_ref = data["pi_true"] if truth else prob.pi_d_obs
    ref = "truth" if truth else "observed"
    out = []
    fig, ax = plt.subplots(figsize=(8, 3.2))
    plot_marginal_bars(ax, mu_ref, res.mu1, prob.D1, ref_label=f"mu1 ({ref})")
    ax.legend(fontsize=8)
    ax.set_title(f"source marginal, gamma = {prob.gamma:g}, eps = {prob.eps:g}")
    fig.tight_layout()
    save_figure(fig, folder, "marginal.png", out)
    fig, ax = plt.subplots(figsize=(5, 5))
    scale = float(np.max(np.abs(res.plan.data), initial=0.0))
    plot_sparsity_overlay(ax, pi_ref, res.plan, prob.D, tol=1e-3 * scale)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(f"plan sparsity ({ref} in red)")
    fig.tight_layout()
    save_figure(fig, folder, "plan.png", out)
    return out


def _same_matrix(a, b) -> bool:
    """Equal entries (dense or sparse); False when one is missing."""
    import scipy.sparse as sp

    if a is None or b is None:
        return False
    a = a.toarray() if sp.issparse(a) else np.asarray(a)
    b = b.toarray() if sp.issparse(b) else np.asarray(b)
    return a.shape == b.shape and bool(np.array_equal(a, b))
