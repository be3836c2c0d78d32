"""Fused dense passes over the product index set (numba).

Every routine streams the cost once, computing ``z_ij = alpha_i + beta_j - c_ij`` on the fly (no
dense temporary of size n1*n2), rows split into chunks processed in parallel.  Results never
depend on the thread count or the machine's load (docs/core.md, "Same numbers on every
machine"): the number of chunks is fixed by the sizes and the per-chunk buffers are combined in
chunk order.  Each parallel pass picks its thread count (``_run``): one thread below
``PAR_MIN_WORK`` entries, else ``thread_budget()``, the cores not used by other processes.
"""
from __future__ import annotations

import functools
import os
import threading
import time

import numba
import numpy as np
from numba import njit, prange
from numba.core import types
from numba.extending import overload

from femot._threads import blas_one_thread

__all__ = ["evaluate", "active_csr", "line_candidates", "csr_matvec", "num_chunks", "dot", "thread_budget",
           "threads_for", "PAR_MIN_WORK"]

#: Passes over fewer entries (pairs of a dense pass, stored entries plus rows of
#: a sparse one) run on one thread.  Below about this size (tens of microseconds)
#: the start-up of a region eats the gain of a second thread; the protection
#: against oversubscription comes from the load-aware budget, which this does not
#: replace (at 50,000, about half of the ocp-2d demo's conjugate-gradient products
#: still run in parallel on an idle machine, as they did before).
PAR_MIN_WORK = 50_000
#: Solves over fewer pairs run on one thread (``threads_for``).
SERIAL_WORK = 200_000
#: Seconds between two samples of the machine's load.
LOAD_REFRESH_S = 0.25

_budget = {"free": None, "stamp": -np.inf}
#: When a list, every parallel pass appends (work, threads) to it (benchmarks/load.py).
trace = None


def _running_others():
    """Runnable tasks on the machine that are not threads of this process (None if unknown)."""
    try:
        with open("/proc/loadavg") as fh:
            running = int(fh.read().split()[3].split("/")[0])
        own = 0
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat", "rb") as fh:
                    st = fh.read()
            except OSError:  # thread ended meanwhile
                continue
            k = st.rfind(b")")
            if st[k + 2:k + 3] == b"R":
                own += 1
        return max(0, running - max(own, 1))
    except (OSError, ValueError, IndexError):
        return None


def _cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def free_cores(samples: int = 3) -> int:
    """Cores of this process's affinity not taken by other runnable tasks (at least 1).

    The minimum over a few instantaneous samples, so that a short-lived task
    does not count; without ``/proc`` the one-minute load average is used.

    Parameters
    ----------
    samples : int, optional
        Number of samples of the other runnable tasks (default 3).

    Returns
    -------
    int
        Free cores, at least 1.
    """
    others = [o for o in (_running_others() for _ in range(samples)) if o is not None]
    if others:
        busy = min(others)
    else:
        try:
            busy = int(round(os.getloadavg()[0]))
        except (AttributeError, OSError):
            busy = 0
    return max(1, _cpu_count() - busy)


def thread_budget(max_age: float | None = None) -> int:
    """Threads a large parallel pass may use now: numba's count capped by the free cores.

    The load is re-sampled when the last sample is older than ``max_age``
    seconds (default ``LOAD_REFRESH_S``); a sample costs about a millisecond.

    Parameters
    ----------
    max_age : float or None, optional
        Largest age in seconds of a reusable load sample; None (default) means ``LOAD_REFRESH_S``.

    Returns
    -------
    int
        Number of threads, between 1 and ``numba.get_num_threads()``.
    """
    now = time.perf_counter()
    if now - _budget["stamp"] > (LOAD_REFRESH_S if max_age is None else max_age):
        _budget["free"] = free_cores()
        _budget["stamp"] = now
    return max(1, min(numba.get_num_threads(), _budget["free"]))


def _run(kernel, work, args):
    n = numba.get_num_threads()
    want = 1 if (n == 1 or work < PAR_MIN_WORK) else min(n, thread_budget())
    if trace is not None:
        trace.append((work, want))
    if want == n:
        return kernel(*args)
    numba.set_num_threads(want)
    try:
        return kernel(*args)
    finally:
        numba.set_num_threads(n)


def chunks_for(work: int, nchunk: int) -> int:
    """Chunks of one pass: at most ``nchunk``, about one per ``CHUNK_WORK`` entries of work.

    Every chunk costs a column buffer (zeroed, then added in): on a sparse pass
    over a working set these n2-sized buffers would otherwise rival the pass
    itself.  A function of the sizes only, so results stay thread-independent.

    Parameters
    ----------
    work : int
        Entries the pass visits.
    nchunk : int
        The caller's chunk count (``num_chunks`` of the rows).

    Returns
    -------
    int
        ``max(1, min(nchunk, work // CHUNK_WORK))``.
    """
    return max(1, min(int(nchunk), int(work) // CHUNK_WORK))


def _region(work_of, chunked: bool = False):
    """Decorator: run a parallel kernel with the thread count ``_run`` picks for its size.

    With ``chunked`` the kernel's last argument is its chunk count, capped by
    :func:`chunks_for` of the pass's work.
    """
    def deco(kernel):
        @functools.wraps(kernel.py_func)
        def wrapper(*args):
            work = work_of(*args)
            if chunked:
                args = args[:-1] + (chunks_for(work, args[-1]),)
            return _run(kernel, work, args)
        wrapper.kernel = kernel
        return wrapper
    return deco


_nesting = threading.local()  # depth of threads_for blocks in this thread


class threads_for:
    """Context manager around a solve: serial below ``min_work`` pairs, fresh load sample otherwise.

    Parallel regions cost tens of microseconds to start and suffer badly when
    the machine is oversubscribed; below ``min_work`` pairs one thread is faster.
    Above, the thread budget is re-sampled on entry (see the module notes).
    In both cases BLAS runs on one thread inside the block: its reductions
    (dot products, norms) would otherwise round differently for different
    ``OPENBLAS_NUM_THREADS`` (module notes, Determinism).  Nested blocks are cheap.

    Parameters
    ----------
    work : int
        Number of pairs the solve will touch.
    min_work : int or None, optional
        Below this many pairs the block runs on one thread (default None: ``SERIAL_WORK``).
    """

    def __init__(self, work: int, min_work: int | None = None):
        self.serial = work < (SERIAL_WORK if min_work is None else min_work)
        self.saved = None
        self.blas = None

    def __enter__(self):
        if self.serial:
            self.saved = numba.get_num_threads()
            numba.set_num_threads(1)
        else:
            thread_budget(max_age=0.05)
        depth = getattr(_nesting, "depth", 0)
        if depth == 0:
            self.blas = blas_one_thread()
            self.blas.__enter__()
        _nesting.depth = depth + 1
        return self

    def __exit__(self, *exc):
        _nesting.depth -= 1
        if self.blas is not None:
            self.blas.__exit__(*exc)
            self.blas = None
        if self.saved is not None:
            numba.set_num_threads(self.saved)
        return False


# -- the cost operand ---------------------------------------------------------
# Every dense pass reads the cost through ``_cval(c, i, j)`` and ``_dims(c)``.
# ``c`` is either a 2D array (a stored matrix) or a tuple ``(X1, X2, p)`` of
# point coordinates (C-contiguous (n1, d) and (n2, d) arrays) and an exponent:
# then ``c_ij = |x_i - y_j|^p`` (Euclidean) is computed on the fly.  The choice
# is made at compile time, so the matrix path is unchanged.

def _cval(c, i, j):  # pragma: no cover - replaced by the overload below in compiled code
    raise NotImplementedError


def _dims(c):  # pragma: no cover
    raise NotImplementedError


@overload(_cval, inline="always", jit_options={"cache": True})
def _cval_impl(c, i, j):
    if isinstance(c, types.Array):
        def get(c, i, j):
            return c[i, j]
        return get
    if isinstance(c, types.BaseTuple):
        def geo(c, i, j):
            X1 = c[0]
            X2 = c[1]
            p = c[2]
            dim = X1.shape[1]
            if dim == 2:  # the common case, unrolled (same rounding as the loop)
                d0 = X1[i, 0] - X2[j, 0]
                d1 = X1[i, 1] - X2[j, 1]
                s = d0 * d0 + d1 * d1
            else:
                s = 0.0
                for k in range(dim):
                    d = X1[i, k] - X2[j, k]
                    s += d * d
            if p == 2.0:
                return s
            if p == 1.0:
                return np.sqrt(s)
            return s ** (0.5 * p)
        return geo


@overload(_dims, inline="always", jit_options={"cache": True})
def _dims_impl(c):
    if isinstance(c, types.Array):
        return lambda c: (c.shape[0], c.shape[1])
    if isinstance(c, types.BaseTuple):
        return lambda c: (c[0].shape[0], c[1].shape[0])


def _npairs(c) -> int:
    """Pairs of a cost operand (Python side)."""
    if isinstance(c, tuple):
        return c[0].shape[0] * c[1].shape[0]
    return c.size


#: Largest number of row chunks of a parallel pass (the passes use at most this many threads).
MAX_CHUNKS = 16
#: Smallest number of rows of a chunk.
MIN_CHUNK_ROWS = 8
#: Entries of work per chunk (``chunks_for``): below, fewer chunks.
CHUNK_WORK = 16_384


def num_chunks(n1: int) -> int:
    """Row chunks for the parallel passes: a function of the number of rows only.

    The chunks fix the order in which column sums are accumulated, so they must
    not depend on the thread count or the load (module notes, Determinism).
    ``MAX_CHUNKS`` chunks keep up to that many threads busy; each has at least
    ``MIN_CHUNK_ROWS`` rows so that the per-chunk column buffers stay cheap.

    Parameters
    ----------
    n1 : int
        Number of rows of the pass.

    Returns
    -------
    int
        ``max(1, min(MAX_CHUNKS, n1 // MIN_CHUNK_ROWS))``.
    """
    return max(1, min(MAX_CHUNKS, int(n1) // MIN_CHUNK_ROWS))


@njit(cache=True)
def dot(x, y):
    """``sum_k x_k y_k`` in a fixed order (8 interleaved partial sums, combined pairwise).

    A BLAS dot product may split a long vector by its thread count and so
    round differently on another machine; this one never does, at BLAS speed
    for the vector lengths of the solvers.
    """
    n = x.size
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    m = n - n % 8
    for k in range(0, m, 8):
        s0 += x[k] * y[k]
        s1 += x[k + 1] * y[k + 1]
        s2 += x[k + 2] * y[k + 2]
        s3 += x[k + 3] * y[k + 3]
        s4 += x[k + 4] * y[k + 4]
        s5 += x[k + 5] * y[k + 5]
        s6 += x[k + 6] * y[k + 6]
        s7 += x[k + 7] * y[k + 7]
    for k in range(m, n):
        s0 += x[k] * y[k]
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@_region(lambda c, *a: _npairs(c), chunked=True)
@njit(parallel=True, cache=True)
def evaluate(c, alpha, beta, dalpha, dbeta, t, w1, w2, nchunk):
    """Sums over the active set at the point (alpha + t*dalpha, beta + t*dbeta).

    Returns ``rowsum_i = sum_j w2_j z_ij^+``, ``colsum_j = sum_i w1_i z_ij^+``,
    ``count_i = #{j : z_ij > 0}`` and ``dsum = sum_ij w1_i w2_j z_ij^+ dz_ij``
    with ``dz_ij = dalpha_i + dbeta_j`` (the derivative along the direction).
    """
    n1, n2 = _dims(c)
    rowsum = np.zeros(n1)
    count = np.zeros(n1, np.int64)
    colpart = np.zeros((nchunk, n2))
    dpart = np.zeros(nchunk)
    bt = np.empty(n2)
    for j in range(n2):
        bt[j] = beta[j] + t * dbeta[j]
    for ch in prange(nchunk):
        i0 = ch * n1 // nchunk
        i1 = (ch + 1) * n1 // nchunk
        col = colpart[ch]
        dacc = 0.0
        for i in range(i0, i1):
            a = alpha[i] + t * dalpha[i]
            da = dalpha[i]
            wi = w1[i]
            s = 0.0
            sd = 0.0
            k = 0
            for j in range(n2):
                z = a + bt[j] - _cval(c, i, j)
                if z > 0.0:
                    s += w2[j] * z
                    sd += w2[j] * z * (da + dbeta[j])
                    col[j] += wi * z
                    k += 1
            rowsum[i] = s
            count[i] = k
            dacc += wi * sd
        dpart[ch] = dacc
    colsum = np.zeros(n2)
    for ch in range(nchunk):
        for j in range(n2):
            colsum[j] += colpart[ch, j]
    return rowsum, colsum, count, dpart.sum()


@_region(lambda c, *a: _npairs(c))
@njit(parallel=True, cache=True)
def active_csr(c, alpha, beta, count, threshold):
    """CSR arrays (indptr, indices, z) of ``{z_ij > threshold}`` given per-row counts."""
    n1, n2 = _dims(c)
    indptr = np.zeros(n1 + 1, np.int64)
    for i in range(n1):
        indptr[i + 1] = indptr[i] + count[i]
    nnz = indptr[n1]
    indices = np.empty(nnz, np.int32)
    data = np.empty(nnz)
    bad = np.zeros(n1, np.bool_)
    for i in prange(n1):
        p = indptr[i]
        a = alpha[i]
        for j in range(n2):
            z = a + beta[j] - _cval(c, i, j)
            if z > threshold:
                if p < indptr[i + 1]:
                    indices[p] = j
                    data[p] = z
                p += 1
        bad[i] = p != indptr[i + 1]
    return indptr, indices, data, bad.any()


@_region(lambda c, *a: _npairs(c))
@njit(parallel=True, cache=True)
def count_above(c, alpha, beta, threshold):
    """Per-row counts of ``z_ij > threshold``."""
    n1, n2 = _dims(c)
    count = np.zeros(n1, np.int64)
    for i in prange(n1):
        a = alpha[i]
        k = 0
        for j in range(n2):
            if a + beta[j] - _cval(c, i, j) > threshold:
                k += 1
        count[i] = k
    return count


@_region(lambda c, *a: _npairs(c))
@njit(parallel=True, cache=True)
def count_line_candidates(c, alpha, beta, dalpha, dbeta, tmax):
    """Per-row counts of the entries positive somewhere on t in [0, tmax]."""
    n1, n2 = _dims(c)
    count = np.zeros(n1, np.int64)
    for i in prange(n1):
        a = alpha[i]
        da = dalpha[i]
        k = 0
        for j in range(n2):
            z = a + beta[j] - _cval(c, i, j)
            if z > 0.0 or z + tmax * (da + dbeta[j]) > 0.0:
                k += 1
        count[i] = k
    return count


@_region(lambda c, *a: _npairs(c))
@njit(parallel=True, cache=True)
def line_candidates(c, alpha, beta, dalpha, dbeta, tmax, w1, w2, count):
    """Entries that are positive somewhere on the segment t in [0, tmax].

    Returns (z, dz, weight) of those entries: along the line, the dual
    objective's derivative only involves them (Part III (3.1), exact line search).
    """
    n1, n2 = _dims(c)
    ptr = np.zeros(n1 + 1, np.int64)
    for i in range(n1):
        ptr[i + 1] = ptr[i] + count[i]
    m = ptr[n1]
    zs = np.empty(m)
    dzs = np.empty(m)
    ws = np.empty(m)
    for i in prange(n1):
        p = ptr[i]
        a = alpha[i]
        da = dalpha[i]
        for j in range(n2):
            z = a + beta[j] - _cval(c, i, j)
            dz = da + dbeta[j]
            if z > 0.0 or z + tmax * dz > 0.0:
                zs[p] = z
                dzs[p] = dz
                ws[p] = w1[i] * w2[j]
                p += 1
    return zs, dzs, ws


@_region(lambda indptr, indices, *a: indices.size + indptr.size)
@njit(parallel=True, cache=True)
def csr_matvec(indptr, indices, x):
    """Row-parallel ``y = P x`` for a 0/1 pattern matrix P given by CSR structure."""
    n = indptr.size - 1
    y = np.zeros(n)
    for i in prange(n):
        s = 0.0
        for p in range(indptr[i], indptr[i + 1]):
            s += x[indices[p]]
        y[i] = s
    return y


@njit(cache=True)
def transpose_pattern(indptr, indices, ncols):
    """CSR structure of the transpose of a pattern (counting sort, O(nnz))."""
    n = indptr.size - 1
    tptr = np.zeros(ncols + 1, np.int64)
    for p in range(indices.size):
        tptr[indices[p] + 1] += 1
    for j in range(ncols):
        tptr[j + 1] += tptr[j]
    fill = tptr[:-1].copy()
    tind = np.empty(indices.size, np.int32)
    for i in range(n):
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            tind[fill[j]] = i
            fill[j] += 1
    return tptr, tind


# -- passes over a sparse working set (CSR of candidate entries with their costs) --

@_region(lambda c, *a: _npairs(c))
@njit(parallel=True, cache=True)
def candidates(c, alpha, beta, threshold, count):
    """CSR (indptr, indices, cvals) of the entries with z_ij > threshold, given their row counts."""
    n1, n2 = _dims(c)
    indptr = np.zeros(n1 + 1, np.int64)
    for i in range(n1):
        indptr[i + 1] = indptr[i] + count[i]
    indices = np.empty(indptr[n1], np.int32)
    cvals = np.empty(indptr[n1])
    for i in prange(n1):
        p = indptr[i]
        a = alpha[i]
        for j in range(n2):
            cij = _cval(c, i, j)
            if a + beta[j] - cij > threshold:
                indices[p] = j
                cvals[p] = cij
                p += 1
    return indptr, indices, cvals


@_region(lambda indptr, indices, *a: indices.size + indptr.size, chunked=True)
@njit(parallel=True, cache=True)
def ws_evaluate(indptr, indices, cvals, n2, alpha, beta, dalpha, dbeta, t, w1, w2, nchunk):
    """Same as ``evaluate`` restricted to a working set."""
    n1 = indptr.size - 1
    rowsum = np.zeros(n1)
    count = np.zeros(n1, np.int64)
    colpart = np.zeros((nchunk, n2))
    dpart = np.zeros(nchunk)
    for ch in prange(nchunk):
        i0 = ch * n1 // nchunk
        i1 = (ch + 1) * n1 // nchunk
        col = colpart[ch]
        dacc = 0.0
        for i in range(i0, i1):
            a = alpha[i] + t * dalpha[i]
            da = dalpha[i]
            wi = w1[i]
            s = 0.0
            sd = 0.0
            k = 0
            for p in range(indptr[i], indptr[i + 1]):
                j = indices[p]
                b = beta[j] + t * dbeta[j]  # same rounding as the later beta + t*dbeta
                z = a + b - cvals[p]
                if z > 0.0:
                    s += w2[j] * z
                    sd += w2[j] * z * (da + dbeta[j])
                    col[j] += wi * z
                    k += 1
            rowsum[i] = s
            count[i] = k
            dacc += wi * sd
        dpart[ch] = dacc
    colsum = np.zeros(n2)
    for ch in range(nchunk):
        for j in range(n2):
            colsum[j] += colpart[ch, j]
    return rowsum, colsum, count, dpart.sum()


@_region(lambda indptr, indices, *a: indices.size + indptr.size)
@njit(parallel=True, cache=True)
def ws_active(indptr, indices, cvals, alpha, beta, threshold):
    """CSR (indptr, indices, z) of the working-set entries with z > threshold."""
    n1 = indptr.size - 1
    count = np.zeros(n1, np.int64)
    for i in prange(n1):
        k = 0
        for p in range(indptr[i], indptr[i + 1]):
            if alpha[i] + beta[indices[p]] - cvals[p] > threshold:
                k += 1
        count[i] = k
    optr = np.zeros(n1 + 1, np.int64)
    for i in range(n1):
        optr[i + 1] = optr[i] + count[i]
    oind = np.empty(optr[n1], np.int32)
    oz = np.empty(optr[n1])
    for i in prange(n1):
        q = optr[i]
        a = alpha[i]
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            z = a + beta[j] - cvals[p]
            if z > threshold:
                oind[q] = j
                oz[q] = z
                q += 1
    return optr, oind, oz


@_region(lambda indptr, indices, *a: indices.size + indptr.size)
@njit(parallel=True, cache=True)
def ws_count(indptr, indices, cvals, alpha, beta, threshold):
    n1 = indptr.size - 1
    count = np.zeros(n1, np.int64)
    for i in prange(n1):
        a = alpha[i]
        k = 0
        for p in range(indptr[i], indptr[i + 1]):
            if a + beta[indices[p]] - cvals[p] > threshold:
                k += 1
        count[i] = k
    return count


@njit(cache=True)
def ws_line_candidates(indptr, indices, cvals, alpha, beta, dalpha, dbeta, tmax, w1, w2):
    """Working-set entries positive somewhere on t in [0, tmax]: (z, dz, weight)."""
    n1 = indptr.size - 1
    m = 0
    for i in range(n1):
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            z = alpha[i] + beta[j] - cvals[p]
            if z > 0.0 or z + tmax * (dalpha[i] + dbeta[j]) > 0.0:
                m += 1
    zs = np.empty(m)
    dzs = np.empty(m)
    ws = np.empty(m)
    q = 0
    for i in range(n1):
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            z = alpha[i] + beta[j] - cvals[p]
            dz = dalpha[i] + dbeta[j]
            if z > 0.0 or z + tmax * dz > 0.0:
                zs[q] = z
                dzs[q] = dz
                ws[q] = w1[i] * w2[j]
                q += 1
    return zs, dzs, ws


@njit(cache=True)
def is_monge(c, tol):
    """True when c_ij + c_{i+1,j+1} <= c_{i,j+1} + c_{i+1,j} + tol on all adjacent 2x2 minors."""
    n1, n2 = _dims(c)
    for i in range(n1 - 1):
        for j in range(n2 - 1):
            if _cval(c, i, j) + _cval(c, i + 1, j + 1) > _cval(c, i, j + 1) + _cval(c, i + 1, j) + tol:
                return False
    return True


@njit(cache=True)
def northwest_corner_duals(c, a, b):
    """Potentials along the north-west corner staircase (exact OT duals for Monge costs).

    The staircase visits n1 + n2 - 1 cells forming a spanning tree of the
    bipartite graph; alpha_i + beta_j = c_ij on each of them.
    """
    n1, n2 = _dims(c)
    alpha = np.zeros(n1)
    beta = np.zeros(n2)
    i = 0
    j = 0
    ra = a[0]
    rb = b[0]
    alpha[0] = 0.0
    beta[0] = _cval(c, 0, 0)
    while i < n1 - 1 or j < n2 - 1:
        # advance the side that runs out first (ties: rows first)
        if (ra <= rb and i < n1 - 1) or j == n2 - 1:
            rb -= ra
            i += 1
            ra = a[i]
            alpha[i] = _cval(c, i, j) - beta[j]
        else:
            ra -= rb
            j += 1
            rb = b[j]
            beta[j] = _cval(c, i, j) - alpha[i]
    return alpha, beta


@njit(cache=True)
def line_derivative(z, dz, ws, t):
    """(sum ws (z + t dz)_+ dz, sum over the positive entries of ws dz^2) without temporaries."""
    val = 0.0
    slope = 0.0
    for k in range(z.size):
        zt = z[k] + t * dz[k]
        if zt > 0.0:
            wd = ws[k] * dz[k]
            val += wd * zt
            slope += wd * dz[k]
    return val, slope


@njit(cache=True)
def finite_absmax(c):
    """(all entries finite, max |c_ij|) in one pass without temporaries."""
    m = 0.0
    for v in c.ravel():
        if not np.isfinite(v):
            return False, np.inf
        a = abs(v)
        if a > m:
            m = a
    return True, m


@_region(lambda indptr, indices, *a: indices.size + indptr.size, chunked=True)
@njit(parallel=True, cache=True)
def semidual_rows(indptr, indices, cvals, n2, beta, dbeta, t, a0, w1, w2, kappa, rhs, nchunk):
    """Exact row equations for fixed columns: the semi-dual along ``beta + t*dbeta``.

    For every row i of the CSR set, solves the monotone piecewise-linear equation

        f_i(a) = sum_j w2_j (a + b_j - c_ij)_+ + kappa*a - rhs_i = 0,   b = beta + t*dbeta

    (Part III (3.1), first line, with beta fixed) by Newton's method from ``a0``:
    f_i is convex and nondecreasing, so after at most one step from the left the
    iterates decrease monotonically to the root, crossing each kink at most once.
    With kappa = 0 and rhs_i = 0 the largest root (the c-transform) is taken.

    Returns ``(alpha, colsum, colslope, zsq)``: the row solutions, the column sums
    ``sum_i w1_i z_ij^+``, their derivatives in t (with d alpha_i / dt from the
    implicit function theorem on each row's active set) and ``sum w1_i w2_j (z_ij^+)^2``.
    """
    n1 = indptr.size - 1
    alpha = np.empty(n1)
    colpart = np.zeros((nchunk, n2))
    slopepart = np.zeros((nchunk, n2))
    zpart = np.zeros(nchunk)
    bt = np.empty(n2)
    for j in range(n2):
        bt[j] = beta[j] + t * dbeta[j]
    for ch in prange(nchunk):
        i0 = ch * n1 // nchunk
        i1 = (ch + 1) * n1 // nchunk
        col = colpart[ch]
        cslope = slopepart[ch]
        zacc = 0.0
        for i in range(i0, i1):
            p0 = indptr[i]
            p1 = indptr[i + 1]
            a = a0[i]
            right = False  # True once an iterate lies right of the root
            for _ in range(200):
                f = kappa * a - rhs[i]
                s = kappa
                for p in range(p0, p1):
                    z = a + bt[indices[p]] - cvals[p]
                    if z > 0.0:
                        f += w2[indices[p]] * z
                        s += w2[indices[p]]
                if f > 0.0:
                    a_new = a - f / s
                    if a_new >= a:
                        break
                    right = True
                    a = a_new
                elif f < 0.0:
                    if right:  # rounding below the root: accept
                        break
                    if s > 0.0:
                        a = a - f / s
                    else:
                        # flat (no active entry, kappa = 0): f = -rhs up to the first
                        # kink lo, then grows with slope w0; one step lands right of the root
                        lo = np.inf
                        for p in range(p0, p1):
                            v = cvals[p] - bt[indices[p]]
                            if v < lo:
                                lo = v
                        if not lo < np.inf:
                            break
                        w0 = 0.0
                        for p in range(p0, p1):
                            if cvals[p] - bt[indices[p]] == lo:
                                w0 += w2[indices[p]]
                        a = lo - f / w0
                    right = False
                else:
                    break
            alpha[i] = a
            wi = w1[i]
            s = kappa
            sd = 0.0
            for p in range(p0, p1):
                j = indices[p]
                if a + bt[j] - cvals[p] > 0.0:
                    s += w2[j]
                    sd += w2[j] * dbeta[j]
            da = -sd / s if s > 0.0 else 0.0
            for p in range(p0, p1):
                j = indices[p]
                z = a + bt[j] - cvals[p]
                if z > 0.0:
                    col[j] += wi * z
                    cslope[j] += wi * (da + dbeta[j])
                    zacc += wi * w2[j] * z * z
        zpart[ch] = zacc
    colsum = np.zeros(n2)
    colslope = np.zeros(n2)
    for ch in range(nchunk):
        for j in range(n2):
            colsum[j] += colpart[ch, j]
            colslope[j] += slopepart[ch, j]
    return alpha, colsum, colslope, zpart.sum()


@njit(cache=True)
def northwest_corner_potentials(c, a, b, zscale, w1, w2):
    """Potentials that make the north-west corner plan the regularized plan on its staircase.

    Runs the north-west corner rule on the masses ``a``, ``b`` (equal totals) and,
    along the staircase (a spanning tree of the bipartite graph), sets
    ``alpha_i + beta_j - c_ij = zscale * P_ij / (w1_i w2_j)`` with ``P_ij`` the mass
    of the cell.  With ``zscale = gamma`` and Monge ``c`` this is the solution
    of the dual equations of Part III (3.1) whenever the support of the
    regularized plan is the staircase (``zscale = 0`` gives the exact OT duals).
    """
    n1, n2 = _dims(c)
    alpha = np.zeros(n1)
    beta = np.zeros(n2)
    i = 0
    j = 0
    ra = a[0]
    rb = b[0]
    beta[0] = _cval(c, 0, 0) + zscale * min(ra, rb) / (w1[0] * w2[0])
    while i < n1 - 1 or j < n2 - 1:
        if (ra <= rb and i < n1 - 1) or j == n2 - 1:
            rb = max(rb - ra, 0.0)
            i += 1
            ra = a[i]
            alpha[i] = _cval(c, i, j) + zscale * min(ra, rb) / (w1[i] * w2[j]) - beta[j]
        else:
            ra = max(ra - rb, 0.0)
            j += 1
            rb = b[j]
            beta[j] = _cval(c, i, j) + zscale * min(ra, rb) / (w1[i] * w2[j]) - alpha[i]
    return alpha, beta


# -- passes used by the coordinate (matrix-free) costs -------------------------

@njit(cache=True)
def cost_entries(c, rows, cols):
    """``c_ij`` at the index pairs (rows[k], cols[k])."""
    out = np.empty(rows.size)
    for k in range(rows.size):
        out[k] = _cval(c, rows[k], cols[k])
    return out


@_region(lambda c, *a: _npairs(c), chunked=True)
@njit(parallel=True, cache=True)
def weighted_sums(c, w1, w2, nchunk):
    """``(c @ w2, w1 @ c)`` in one streaming pass."""
    n1, n2 = _dims(c)
    rows = np.empty(n1)
    colpart = np.zeros((nchunk, n2))
    for ch in prange(nchunk):
        i0 = ch * n1 // nchunk
        i1 = (ch + 1) * n1 // nchunk
        col = colpart[ch]
        for i in range(i0, i1):
            s = 0.0
            wi = w1[i]
            for j in range(n2):
                v = _cval(c, i, j)
                s += w2[j] * v
                col[j] += wi * v
            rows[i] = s
    cols = np.zeros(n2)
    for ch in range(nchunk):
        for j in range(n2):
            cols[j] += colpart[ch, j]
    return rows, cols


@_region(lambda c, *a: _npairs(c))
@njit(parallel=True, cache=True)
def cost_absmax(c):
    """``max_ij |c_ij|`` in one streaming pass."""
    n1, n2 = _dims(c)
    m = np.zeros(n1)
    for i in prange(n1):
        r = 0.0
        for j in range(n2):
            v = abs(_cval(c, i, j))
            if v > r:
                r = v
        m[i] = r
    return m.max()
