"""``femot study CONFIG.toml --out DIR [--workers N | --dask-local N | --scheduler ADDRESS]``."""
from __future__ import annotations

import argparse
import signal
import sys

from femot._io import OutputPathError, check_writable
from femot.studies import ConfigError, load_config, run_study
from femot.studies.execution import DEFAULT_CONNECT_TIMEOUT, BackendError, check_dask
from femot.studies.registry import get_problem
from femot.studies.store import RunStore, StoreError, foreign_content

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
    p.add_argument("--connect-timeout", type=float, default=None, metavar="S",
                   help="seconds to wait for the --scheduler to answer (default 10)")
    p.add_argument("--force", action="store_true",
                   help="write into --out even if it holds another study or other files")
    p.add_argument("--check", action="store_true",
                   help="validate the config and the stored runs, list the runs and exit")
    p.add_argument("--no-plots", action="store_true", help="do not draw figures")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    return p


def _fail(msg: str) -> int:
    print(f"femot study: {msg}", file=sys.stderr)
    return 2


def _bytes(b: float) -> str:
    return f"{b / 2**30:.1f} GiB" if b >= 2**30 else f"{b / 2**20:.0f} MiB"


def _duration(t: float) -> str:
    return f"{t:.0f} s" if t < 120 else f"{t / 60:.0f} min" if t < 7200 else f"{t / 3600:.1f} h"


def _size_line(e: dict) -> str:
    """One ``--check`` line: nodes, pairs, the cost's storage, memory and time (estimates)."""
    cost = ("matrix-free cost (GeometricCost)" if e["matrix_free"]
            else f"dense cost {_bytes(e['cost_bytes'])}")
    return (f"nodes {e['nodes']} (controls {e['controls']}), transport nodes {e['transport_nodes']}, pairs "
            f"{e['pairs']:.3g}, {cost}, plan ~{e['plan_nnz']:.2g} nonzeros, memory ~{_bytes(e['memory_bytes'])}, "
            f"time ~{_duration(e['time_s'])}")


def cmd_study(argv) -> int:
    """``femot study CONFIG.toml``: run or resume a convergence study (:func:`femot.studies.run_study`).

    Exit status 1 if a run failed or raised, 2 also for an invalid configuration, 130 on
    interrupt (command contract: :mod:`femot.cli`).
    """
    args = build_parser().parse_args(argv)
    if args.workers < 1:
        return _fail("--workers must be >= 1")
    if args.dask_local is not None and args.dask_local < 1:
        return _fail("--dask-local must be >= 1")
    if args.connect_timeout is not None and not args.connect_timeout > 0:
        return _fail(f"--connect-timeout must be positive, got {args.connect_timeout:g}")
    if args.connect_timeout is not None and not args.scheduler:
        return _fail("--connect-timeout goes with --scheduler")
    try:
        study = load_config(args.config)
    except ConfigError as exc:
        return _fail(f"invalid config {args.config}: {exc}")
    out = args.out or f"femot-studies/{study.name}"
    if args.check:
        store = RunStore(out)
        print(f"study {study.name!r}: problem {study.problem}, d = {study.d}, {len(study.gammas)} levels, "
              f"{len(study.chains)} chain(s), {len(study.runs)} runs"
              + ((f"; every level resolved: h <= delta / {study.resolution_ratio:g}" if study.resolution_ratio >= 4
                  else f"; levels checked only at h <= delta / {study.resolution_ratio:g} (mesh.resolution_ratio "
                       f"below the default 4: delta is NOT resolved by the default criterion)")
                 if study.resolution_ratio and any(lv.delta > 0 for lv in study.runs) else ""))
        estimate = getattr(get_problem(study.problem), "estimate", None)
        sizes: dict = {}
        total = 0.0
        for ch in study.chains:
            for lv in ch.levels:
                st, why = store.inspect(lv.id)
                st = {"complete": "done", "absent": "todo"}.get(st, st)
                hh = f"  h {lv.h:.4g} (delta/h {lv.delta / lv.h:.3g})" if lv.h == lv.h and lv.delta > 0 else ""
                print(f"  {lv.id}  {ch.label:>24}  level {lv.index}  gamma {lv.gamma:.3e}  delta {lv.delta:.4g}  "
                      f"gamma/delta^d {lv.ratio:.3e}  mesh {lv.mesh.label():<18}{hh} {st}"
                      + (f" ({why}; it will be recomputed)" if why else ""))
                if estimate is not None:
                    key = (repr(lv.mesh.key()), lv.gamma, lv.delta)
                    if key not in sizes:
                        sizes[key] = estimate(study.params, lv)
                    e = sizes[key]
                    total += e["time_s"] if st != "done" else 0.0
                    print("      " + _size_line(e))
        if estimate is not None:
            print(f"estimated time of the runs to do: {_duration(total)} (order of magnitude; serial)")
        try:
            check_writable(out, "--out", directory=True)
            if args.scheduler or args.dask_local:
                check_dask()
        except (OutputPathError, ImportError) as exc:
            return _fail(str(exc))
        why = foreign_content(out, study)
        if why:
            print(f"note: {why}; running this study there needs --force")
        return 0

    def _terminated(signum, frame):  # SIGTERM (kill, a batch system's time limit): stop like Ctrl-C
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        if args.scheduler or args.dask_local:
            check_dask()
        outcome = run_study(study, out, workers=args.workers, dask_local=args.dask_local, scheduler=args.scheduler,
                            quiet=args.quiet, plots=not args.no_plots, force=args.force,
                            connect_timeout=args.connect_timeout or DEFAULT_CONNECT_TIMEOUT)
    except OutputPathError as exc:
        return _fail(str(exc).replace("out:", "--out:", 1))
    except (StoreError, BackendError, ImportError) as exc:
        return _fail(str(exc).replace("force=True (--force)", "--force"))
    except KeyboardInterrupt as exc:
        how = " by SIGTERM" if str(exc) == "SIGTERM" else ""
        print(f"\nfemot study: interrupted{how}; finished runs are stored in {out}; rerun the same command to "
              f"resume.", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    if outcome.failed or outcome.errors:
        return 1
    return 0
