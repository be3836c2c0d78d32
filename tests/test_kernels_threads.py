"""Thread selection of the parallel passes (femot.core.kernels._run) under load."""
from __future__ import annotations

import subprocess
import sys
import time

import numba
import numpy as np
import pytest

from femot.core import kernels


@pytest.fixture
def traced():
    kernels.trace = []
    try:
        yield kernels.trace
    finally:
        kernels.trace = None


@pytest.fixture
def fake_load(monkeypatch):
    """Pretend that ``k`` other tasks are runnable (the load sample is re-taken)."""
    def set_load(k):
        monkeypatch.setattr(kernels, "_running_others", lambda: k)
        kernels.thread_budget(max_age=-1.0)
    yield set_load
    monkeypatch.undo()
    kernels.thread_budget(max_age=-1.0)


def _reference_sums(c, alpha, beta, w1, w2):
    z = np.maximum(alpha[:, None] + beta[None, :] - c, 0.0)
    return z @ w2, w1 @ z, (z > 0).sum(1)


def _problem(n1, n2, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.random((n1, n2))
    return c, rng.random(n1) * 0.6, rng.random(n2) * 0.6, rng.random(n1) + 0.5, rng.random(n2) + 0.5


def test_small_passes_run_on_one_thread(traced):
    c, a, b, w1, w2 = _problem(30, 40)
    rs, cs, cnt, _ = kernels.evaluate(c, a, b, np.zeros(30), np.zeros(40), 0.0, w1, w2, 4)
    assert traced and all(k == 1 for _, k in traced)
    assert traced[0][0] == c.size
    R, C, N = _reference_sums(c, a, b, w1, w2)
    assert np.allclose(rs, R, rtol=1e-13) and np.allclose(cs, C, rtol=1e-13) and np.array_equal(cnt, N)


def test_large_pass_threads_follow_the_free_cores(traced, fake_load):
    n = numba.get_num_threads()
    c, a, b, w1, w2 = _problem(400, 400)
    assert c.size >= kernels.PAR_MIN_WORK
    ncpu = kernels._cpu_count()
    fake_load(0)
    kernels.count_above(c, a, b, 0.0)
    assert traced[-1] == (c.size, min(n, ncpu))
    fake_load(ncpu)  # every core taken by another process: serial
    kernels.count_above(c, a, b, 0.0)
    assert traced[-1] == (c.size, 1)
    # numba's own setting still caps the count, and is left as it was
    numba.set_num_threads(1)
    try:
        fake_load(0)
        kernels.count_above(c, a, b, 0.0)
        assert traced[-1] == (c.size, 1)
        assert numba.get_num_threads() == 1
    finally:
        numba.set_num_threads(n)
    assert numba.get_num_threads() == n


@pytest.mark.parametrize("load", [0, 64])
def test_passes_agree_with_numpy_whatever_the_thread_count(fake_load, load):
    fake_load(load)
    c, a, b, w1, w2 = _problem(500, 300, seed=1)
    da, db = np.full(500, 0.01), np.full(300, -0.02)
    rs, cs, cnt, ds = kernels.evaluate(c, a, b, da, db, 0.5, w1, w2, kernels.num_chunks(500))
    at, bt = a + 0.5 * da, b + 0.5 * db
    R, C, N = _reference_sums(c, at, bt, w1, w2)
    z = np.maximum(at[:, None] + bt[None, :] - c, 0.0)
    D = float(w1 @ (z * (da[:, None] + db[None, :])) @ w2)
    assert np.allclose(rs, R, rtol=1e-12) and np.allclose(cs, C, rtol=1e-12) and np.array_equal(cnt, N)
    assert ds == pytest.approx(D, rel=1e-12)
    cnt2 = kernels.count_above(c, a, b, -0.1)
    ip, ind, zz, bad = kernels.active_csr(c, a, b, cnt2, -0.1)
    assert not bad
    full = a[:, None] + b[None, :] - c
    assert np.array_equal(np.diff(ip), (full > -0.1).sum(1))
    rows = np.repeat(np.arange(500), np.diff(ip))
    assert np.array_equal(zz, full[rows, ind])
    y = kernels.csr_matvec(ip, ind, w2)
    assert np.allclose(y, (full > -0.1) @ w2, rtol=1e-13)


def test_free_cores_sees_busy_processes():
    """Two CPU-bound processes beside us take two cores (at least one core is always left)."""
    ncpu = kernels._cpu_count()
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(1.0)
        if kernels._running_others() is None:
            pytest.skip("no /proc/loadavg on this platform")
        assert kernels.free_cores() <= max(1, ncpu - 2)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_threads_for_small_problem_is_serial_and_restores():
    n = numba.get_num_threads()
    with kernels.threads_for(100):
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == n
    with kernels.threads_for(10**9):
        assert numba.get_num_threads() == n


def test_solve_under_fake_load_matches_idle(fake_load):
    """The thread choice changes only the schedule, never the numbers beyond rounding."""
    from femot import solve_qrot

    n = 700
    x = (np.arange(n) + 0.5) / n
    y = np.sort(np.random.default_rng(3).random(n))
    c = (x[:, None] - y[None, :]) ** 2
    m1 = 1.0 + 0.5 * np.sin(3 * x)
    m2 = np.ones(n)
    w = np.full(n, 1.0 / n)
    m1 /= w @ m1
    fake_load(0)
    r0 = solve_qrot(c, m1, m2, 1e-3, w1=w, w2=w, tol=1e-10)
    fake_load(64)
    r1 = solve_qrot(c, m1, m2, 1e-3, w1=w, w2=w, tol=1e-10)
    assert r0.success and r1.success
    assert abs(r0.plan - r1.plan).max() <= 1e-8 * abs(r0.plan).max()
