"""``femot study CONFIG.toml --out DIR [--workers N | --dask-local N | --scheduler ADDRESS]``."""
from __future__ import annotations

import argparse
import sys

__all__ = ["cmd_study", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="femot study",
        description="Convergence study over a coupled (gamma, delta) schedule (Part II (3.1)): errors against "
                    "exact references, fitted rates, CSV/Markdown tables, plots and report.md. Interrupted "
                    "studies resume: runs already stored in --out are not recomputed.")
    p.add_argument("config", help="study configuration (TOML); examples in demos/studies/")
    p.add_argument("--out", default=None, help="output directory (default: femot-studies/<study name>)")
    b = p.add_mutually_exclusive_group()
    b.add_argument("--workers", type=int, default=1, metavar="N",
                   help="run the chains on a local process pool of N workers (default 1: serial)")
    b.add_argument("--dask-local", type=int, default=None, metavar="N",
                   help="start a dask LocalCluster with N single-threaded workers (needs femot[dask])")
    b.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="use an existing dask cluster (e.g. tcp://host:8786); --out should be on a "
                        "file system the workers share")
    p.add_argument("--check", action="store_true", help="validate the config, list the runs and exit")
    p.add_argument("--no-plots", action="store_true", help="do not draw figures")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    return p


def cmd_study(argv) -> int:
    from femot.studies.config import ConfigError, load_config
    from femot.studies.runner import run_study
    from femot.studies.store import RunStore

    args = build_parser().parse_args(argv)
    if args.workers < 1:
        print("femot study: --workers must be >= 1", file=sys.stderr)
        return 2
    if args.dask_local is not None and args.dask_local < 1:
        print("femot study: --dask-local must be >= 1", file=sys.stderr)
        return 2
    try:
        study = load_config(args.config)
    except ConfigError as exc:
        print(f"femot study: invalid config {args.config}: {exc}", file=sys.stderr)
        return 2
    out = args.out or f"femot-studies/{study.name}"
    if args.check:
        store = RunStore(out)
        print(f"study {study.name!r}: problem {study.problem}, d = {study.d}, {len(study.gammas)} levels, "
              f"{len(study.chains)} chain(s), {len(study.runs)} runs")
        for ch in study.chains:
            for lv in ch.levels:
                st = "done" if store.read(lv.id) is not None else "todo"
                print(f"  {lv.id}  {ch.label:>24}  level {lv.index}  gamma {lv.gamma:.3e}  delta {lv.delta:.4g}  "
                      f"gamma/delta^d {lv.ratio:.3e}  mesh {lv.mesh.label():<18} {st}")
        return 0
    try:
        outcome = run_study(study, out, workers=args.workers, dask_local=args.dask_local, scheduler=args.scheduler,
                            quiet=args.quiet, plots=not args.no_plots)
    except ImportError as exc:
        print(f"femot study: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nfemot study: interrupted; finished runs are stored in {out}; rerun the same command to resume.",
              file=sys.stderr)
        return 130
    if outcome.failed or outcome.errors:
        return 1
    return 0
