"""``femot identify``: solve a transportation identification problem from a file or a random instance."""
from __future__ import annotations

import argparse
import os


def _parser():
    p = argparse.ArgumentParser(
        prog="femot identify",
        description="Solve the transportation identification problem (Part III §4) by the trust-region method.")
    p.add_argument("instance", nargs="?", help=".mat or .npz file with c_d, mu2_d, mu1_d, pi_d [, D, D1, mu1_0]")
    p.add_argument("--random", type=int, metavar="N", help="generate an n x n instance as in Part III §4.2 instead")
    p.add_argument("--experiment", type=int, default=1, choices=(1, 2), help="observation setting for --random")
    p.add_argument("--seed", type=int, default=0, help="seed for --random (default 0)")
    p.add_argument("--gamma", type=float, default=1e-4, help="regularization gamma (default 1e-4)")
    p.add_argument("--eps", type=float, default=None, help="dual regularization eps (default: gamma)")
    p.add_argument("--lam", type=float, default=1.0, help="weight of the marginal term (default 1)")
    p.add_argument("--max-iter", type=int, default=200, help="trust-region iterations (default 200)")
    p.add_argument("--tol", type=float, default=1e-5, help="stationarity tolerance (default 1e-5)")
    p.add_argument("--json", metavar="OUT.json", help="write the summary as JSON")
    p.add_argument("--save", metavar="OUT.npz", help="save mu1, pi, alpha, beta")
    p.add_argument("--plot", metavar="DIR", help="write figures into DIR")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    return p


def cmd_identify(argv) -> int:
    import numpy as np
    import scipy.sparse as sp

    from femot.cli import write_json
    from femot.problems.identification import identification_errors, solve_identification
    from femot.problems.instances import identification_instance, load_instance, problem_from_instance

    p = _parser()
    args = p.parse_args(argv)
    if (args.instance is None) == (args.random is None):
        p.error("give exactly one of INSTANCE or --random N")
    try:
        if args.random is not None:
            data = identification_instance(args.random, seed=args.seed, experiment=args.experiment)
            print(f"random instance: n = {args.random}, experiment {args.experiment}, seed {args.seed}")
        else:
            data = load_instance(args.instance)
        problem = problem_from_instance(data, gamma=args.gamma, eps=args.eps, lam=args.lam)
        x0 = data.get("mu1_0")
        res = solve_identification(problem, x0=x0, options={"tol": args.tol, "max_iter": args.max_iter},
                                   verbose=not args.quiet)
    except ValueError as exc:
        p.exit(2, f"femot identify: error: {exc}\n")
    print(res.summary())
    summary = {
        "J": res.J, "nit": int(res.nit), "stationarity": float(res.stationarity), "success": bool(res.success),
        "status": int(res.status), "message": res.message, "mu1_err_max": res.mu1_err_max,
        "pi_err_max": res.pi_err_max, "gamma": problem.gamma, "eps": problem.eps, "lam": problem.lam,
        "time_s": res.time_s,
    }
    if data.get("mu1_true") is not None and data.get("pi_true") is not None:
        truth = identification_errors(res.mu1, res.plan, data["mu1_true"], data["pi_true"])
        summary["mu1_err_max_truth"], summary["pi_err_max_truth"] = truth["mu1_err_max"], truth["pi_err_max"]
    if args.json:
        write_json(args.json, summary)
    if args.save:
        os.makedirs(os.path.dirname(os.path.abspath(args.save)), exist_ok=True)
        np.savez(args.save, mu1=res.mu1, pi=sp.csr_matrix(res.plan).toarray(), alpha=res.alpha, beta=res.beta)
    if args.plot:
        _plot(args.plot, res, data)
    return 0 if res.success else 1


def _plot(outdir, res, data):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import scipy.sparse as sp

    os.makedirs(outdir, exist_ok=True)
    n = res.mu1.size
    ref = data.get("mu1_true") if data.get("mu1_true") is not None else data["mu1_d"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    idx = np.arange(1, n + 1)
    axes[0].bar(idx - 0.2, np.asarray(ref).ravel(), width=0.4, color="tab:red", label="reference mu1")
    axes[0].bar(idx + 0.2, res.mu1, width=0.4, color="tab:blue", label="computed mu1")
    axes[0].legend(fontsize=8)
    axes[0].set_xlabel("i")
    P = sp.csr_matrix(res.plan).toarray()
    R = sp.csr_matrix(data.get("pi_true") if data.get("pi_true") is not None else data["pi_d"]).toarray()
    axes[1].imshow(P > 1e-12, cmap="Blues", interpolation="nearest")
    axes[1].imshow(np.ma.masked_where(R <= 0, R > 0), cmap="Reds", alpha=0.6, interpolation="nearest")
    axes[1].set_title("plan support: computed (blue), reference (red)", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, "identification.png"), dpi=130)
    plt.close(fig)
