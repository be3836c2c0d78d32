"""The exact 2D (OCP) of ``femot demo ocp-2d-exact`` side by side with the published MATLAB peer.

Usage::

    python benchmarks/exact_ocp_2d.py --levels 4:8 [--start zero|nested] [--peer DIR] [--json OUT.json]

femot's side solves the levels in this process (:func:`femot.demos.ocp_2d_exact.run`).  With ``--peer DIR``
the peer (Borchard and Wachsmuth, repository gerw/transport_control) runs under GNU Octave on the same
meshes, unchanged, from ``DIR``: the folder must hold the peer's files, stand-ins for the PDE-toolbox
calls it makes (``initmesh`` returning [-1,1]^2 split into the two triangles of ``skfem.MeshTri()``
mapped by x -> 2x - 1, ``refinemesh`` as uniform red refinement, ``assema`` as P1 stiffness and mass,
``pdeplot`` doing nothing) and a driver ``run_peer(rmin, rmax, outfile)`` that sets every field the
peer's ``setup`` would default (with ``plot_u = false``), calls ``setup(r, problem)`` and
``solve_newton(problem)`` and writes one line ``r nodes J iterations residual seconds`` per level.
None of that is part of femot.  Without ``--peer`` only femot's side runs.

Prints per level both objectives, their relative difference and the time ratio peer / femot (one run,
same machine, sequential; timings on a shared machine are noisy).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace


def femot_side(levels: str, start: str):
    from femot.demos.ocp_2d_exact import run

    args = SimpleNamespace(levels=levels, alpha=1e-3, start=start, warmup=2, tol=1e-9, quiet=True, plot=None,
                           json=None, quick=False, seed=0)
    return {row["r"]: row for row in run(args)["levels"]}


def peer_side(levels: str, folder: Path, timeout: float):
    a, b = (int(s) for s in levels.split(":"))
    octave = shutil.which("octave-cli") or shutil.which("octave")
    if octave is None:
        raise SystemExit("--peer needs GNU Octave (octave-cli) on the PATH")
    if not (folder / "run_peer.m").exists() or not (folder / "solve_newton.m").exists():
        raise SystemExit(f"--peer {folder}: needs the peer's files and run_peer.m (see the module docstring)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "peer.txt"
        t0 = time.perf_counter()
        subprocess.run([octave, "--no-gui", "--quiet", "--eval", f"run_peer({a},{b},'{out}')"], cwd=folder,
                       capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - t0
        rows = {}
        if out.exists():
            for line in out.read_text().splitlines():
                r, n, J, it, res, sec = line.split()
                rows[int(r)] = dict(r=int(r), nodes=int(n), J=float(J), iterations=int(it), residual=float(res),
                                    time_s=float(sec))
    return rows, wall


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--levels", default="4:6")
    p.add_argument("--start", choices=("nested", "zero"), default="nested")
    p.add_argument("--peer", type=Path, default=None, help="folder with the peer's code, stand-ins and run_peer.m")
    p.add_argument("--peer-timeout", type=float, default=7200.0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    ours = femot_side(args.levels, args.start)
    peer, peer_wall = ({}, None)
    if args.peer is not None:
        peer, peer_wall = peer_side(args.levels, args.peer, args.peer_timeout)
    print(f"{'r':>2} {'nodes':>7} {'J femot':>23} {'J peer':>23} {'rel diff':>9} {'femot s':>8} {'peer s':>8} "
          f"{'ratio':>6}")
    rows = []
    for r, row in sorted(ours.items()):
        q = peer.get(r)
        rel = abs(row["J"] - q["J"]) / abs(q["J"]) if q else float("nan")
        ratio = q["time_s"] / row["time_s"] if q else float("nan")
        print(f"{r:>2} {row['nodes']:>7} {row['J']:>23.16e} {q['J'] if q else float('nan'):>23.16e} {rel:>9.1e} "
              f"{row['time_s']:>8.2f} {q['time_s'] if q else float('nan'):>8.2f} {ratio:>6.1f}")
        rows.append(dict(femot=row, peer=q, rel_diff=rel, time_ratio=ratio))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(levels=rows, start=args.start, peer_wall_s=peer_wall), indent=1))
    ok = all(r["femot"]["success"] for r in rows) and all(r["rel_diff"] <= 1e-8 for r in rows if r["peer"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
