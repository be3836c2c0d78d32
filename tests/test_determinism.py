"""Bit-identical results for every thread count (NUMBA_NUM_THREADS = 1, 2, 3).

The probe below runs in subprocesses that differ only in ``NUMBA_NUM_THREADS``
(and, to make the BLAS side visible too, ``OPENBLAS_NUM_THREADS``).  It lowers
the size thresholds of ``femot.core.kernels`` so that the dense passes of these
small instances really run in parallel over several chunks, and pretends the
machine is idle so the load-aware budget does not fall back to one thread.  Every array
the computations return is hashed; the hashes and iteration counts must agree.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from _instances import without_timings

_ROOT = Path(__file__).resolve().parents[1]


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _probe(tmp: str) -> dict:
    """Solve the instances of the test; return hashes and iteration counts."""
    from femot.core import kernels

    # the dense passes of the two solves run in parallel (smaller passes stay serial: on a
    # busy machine thousands of tiny oversubscribed regions would only slow the test down)
    kernels.PAR_MIN_WORK = 20_000
    kernels.SERIAL_WORK = 20_000
    kernels.free_cores = lambda samples=3: 64  # the load-aware budget sees an idle machine
    from femot import GeometricCost, solve_qrot
    from femot.cli import main

    kernels.trace = []  # (work, threads) of every pass through the thread choice
    cap = getattr(kernels, "chunks_for", lambda work, n: n)  # (chunks of a pass over `work` entries)
    out: dict = {"chunks_1d": cap(240 * 260, kernels.num_chunks(240)), "chunks_2d": kernels.num_chunks(400)}
    rng = np.random.default_rng(7)
    # 1D, stored matrix
    x, y = np.sort(rng.random(240)), np.sort(rng.random(260))
    w1, w2 = np.full(240, 1 / 240), np.full(260, 1 / 260)
    m1, m2 = 1 + rng.random(240), 1 + rng.random(260)
    m1 /= w1 @ m1
    m2 /= w2 @ m2
    C = (x[:, None] - y[None, :]) ** 2
    r = solve_qrot(C, m1, m2, 1e-3, 0.0, w1, w2, tol=1e-12, init="mean")
    h1 = rng.standard_normal(240)
    h2 = rng.standard_normal(260)
    h2 += (w1 @ h1 - w2 @ h2) / w2.sum()  # mass preserving
    jv = r.jvp(h1, h2)
    out["qrot_1d"] = [_digest(r.alpha, r.beta, r.plan.data, r.plan.indices, r.plan.indptr), r.nit, r.status]
    out["jvp_1d"] = _digest(*(np.asarray(v.toarray() if hasattr(v, "toarray") else v) for v in
                               (jv if isinstance(jv, tuple) else (jv,))))
    # 2D, matrix-free geometric cost
    X, Y = rng.random((400, 2)), rng.random((380, 2)) * 0.8 + 0.1
    v1, v2 = np.full(400, 1 / 400), np.full(380, 1 / 380)
    n1, n2 = 1 + rng.random(400), 1 + rng.random(380)
    n1 /= v1 @ n1
    n2 /= v2 @ n2
    g = solve_qrot(GeometricCost(X, Y), n1, n2, 3e-3, 0.0, v1, v2, tol=1e-12)
    out["qrot_2d"] = [_digest(g.alpha, g.beta, g.plan.data, g.plan.indices, g.plan.indptr), g.nit, g.status]
    out["_threads"] = max(t for _, t in kernels.trace)  # not compared: must equal NUMBA_NUM_THREADS
    # ocp-1d, both formulations, two short levels; identification, a few iterations
    runs = {"ocp": ["demo", "ocp-1d", "--quick", "--levels", "2", "--cells", "72", "--delta-factor", "0.35",
                    "--formulation", "both",
                    "--quiet"],
            "identify": ["identify", "--random", "20", "--max-iter", "15", "--quiet"]}
    for name, argv in runs.items():
        path = os.path.join(tmp, f"{name}.json")
        main(argv + ["--json", path])
        with open(path) as fh:
            out[name] = _digest(np.frombuffer(json.dumps(without_timings(json.load(fh)), sort_keys=True).encode(),
                                              np.uint8))
    return out


def _run_probe(threads: int, tmp: Path) -> dict:
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               PYTHONPATH=str(_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    d = tmp / f"t{threads}"
    d.mkdir()
    p = subprocess.run([sys.executable, __file__, str(d)], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_results_do_not_depend_on_the_thread_count(tmp_path):
    results = {k: _run_probe(k, tmp_path) for k in (1, 2, 3)}
    base = results[1]
    for k in (2, 3):
        diff = {key: (base[key], results[k][key]) for key in base
                if not key.startswith("_") and results[k][key] != base[key]}
        assert not diff, f"NUMBA_NUM_THREADS={k} differs from 1: {diff}"
    assert base["chunks_1d"] > 1 and base["chunks_2d"] > 1  # the passes really split ...
    assert [results[k]["_threads"] for k in (1, 2, 3)] == [1, 2, 3]  # ... and ran on k threads


if __name__ == "__main__":
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        res = _probe(sys.argv[1])
    print(json.dumps(res))
