"""``femot warmup``: compile femot's numerical kernels ahead of the first real solve.

The kernels are compiled by numba on first use and cached beside the package; the first
solve in a fresh environment therefore pays one to two minutes of compilation. This command
runs small problems through every kernel family (dense and matrix-free costs in 1D and 2D,
both regularizations, derivatives) so that the compilation happens here, once.
"""
from __future__ import annotations

import argparse
import time

from femot.demos.common import printer

__all__ = ["cmd_warmup", "kernels_compiled", "warmup"]


def kernels_compiled() -> bool:
    """True when numba's on-disk cache holds compiled core kernels (a hint, not a guarantee).

    Returns
    -------
    bool
    """
    import os
    from pathlib import Path

    import femot.core

    places = [Path(femot.core.__file__).parent / "__pycache__"]
    if os.environ.get("NUMBA_CACHE_DIR"):
        places.append(Path(os.environ["NUMBA_CACHE_DIR"]))
    return any(any(p.rglob("kernels.*.nbi")) for p in places if p.is_dir())


def warmup(say=print) -> float:
    """Run small problems through the core's kernels; returns the seconds it took.

    Parameters
    ----------
    say : callable, optional
        Receives one progress line per kernel family (default ``print``).

    Returns
    -------
    float
        Wall time in seconds.
    """
    import numpy as np

    from femot.core import GeometricCost, solve_qrot

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    for label, (x1, x2) in (("1D", (rng.random((60, 1)), rng.random((70, 1)))),
                            ("2D", (rng.random((60, 2)), rng.random((70, 2))))):
        w1, w2 = np.full(len(x1), 1.0 / len(x1)), np.full(len(x2), 1.0 / len(x2))
        mu1, mu2 = 0.5 + rng.random(len(x1)), 0.5 + rng.random(len(x2))
        mu1, mu2 = mu1 / (w1 @ mu1), mu2 / (w2 @ mu2)
        dense = ((x1[:, None, :] - x2[None, :, :]) ** 2).sum(-1)
        for cost, name in ((dense, "dense"), (GeometricCost(x1, x2, p=2), "matrix-free")):
            for eps in (0.0, 1e-3):
                res = solve_qrot(cost, mu1, mu2, 1e-2, eps, w1, w2)
                h1 = rng.standard_normal(len(x1))
                h2 = np.full(len(x2), (w1 @ h1) / w2.sum())  # equal masses: valid for eps = 0
                res.jvp(h1, h2)
                res.vjp(G=dense)
            say(f"  {label} {name} cost: compiled ({time.perf_counter() - t0:.1f} s)")
    return time.perf_counter() - t0


def cmd_warmup(argv) -> int:
    """``femot warmup [--quiet]``: compile the kernels now; exit status 0 (command contract: :mod:`femot.cli`)."""
    p = argparse.ArgumentParser(prog="femot warmup", description=__doc__.split("\n\n")[0])
    p.add_argument("--quiet", action="store_true", help="print nothing")
    args = p.parse_args(argv)
    say = printer(args.quiet)
    say("femot warmup: compiling the numerical kernels (cached for later runs) ...")
    seconds = warmup(say)
    say(f"femot warmup: done in {seconds:.1f} s")
    return 0
