"""Fused dense passes over the product index set (numba).

The regularized plan lives on all n1*n2 pairs, but only a sparse active set
carries mass.  Every routine here streams the cost matrix once, computing
``z_ij = alpha_i + beta_j - c_ij`` on the fly, so no dense temporary of size
n1*n2 is ever allocated.  Rows are split into chunks processed in parallel;
column sums are reduced from per-chunk buffers.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

__all__ = ["evaluate", "active_csr", "line_candidates", "csr_matvec", "num_chunks"]


def num_chunks(n1: int) -> int:
    """Row chunks for the parallel passes (a few per thread, never more than rows)."""
    return max(1, min(n1, 4 * numba.get_num_threads()))


@njit(parallel=True, cache=True)
def evaluate(c, alpha, beta, dalpha, dbeta, t, w1, w2, nchunk):
    """Sums over the active set at the point (alpha + t*dalpha, beta + t*dbeta).

    Returns ``rowsum_i = sum_j w2_j z_ij^+``, ``colsum_j = sum_i w1_i z_ij^+``,
    ``count_i = #{j : z_ij > 0}`` and ``dsum = sum_ij w1_i w2_j z_ij^+ dz_ij``
    with ``dz_ij = dalpha_i + dbeta_j`` (the derivative along the direction).
    """
    n1, n2 = c.shape
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
                z = a + bt[j] - c[i, j]
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


@njit(parallel=True, cache=True)
def active_csr(c, alpha, beta, count, threshold):
    """CSR arrays (indptr, indices, z) of ``{z_ij > threshold}`` given per-row counts."""
    n1, n2 = c.shape
    indptr = np.zeros(n1 + 1, np.int64)
    for i in range(n1):
        indptr[i + 1] = indptr[i] + count[i]
    nnz = indptr[n1]
    indices = np.empty(nnz, np.int32)
    data = np.empty(nnz)
    for i in prange(n1):
        p = indptr[i]
        a = alpha[i]
        for j in range(n2):
            z = a + beta[j] - c[i, j]
            if z > threshold:
                indices[p] = j
                data[p] = z
                p += 1
    return indptr, indices, data


@njit(parallel=True, cache=True)
def count_above(c, alpha, beta, threshold):
    """Per-row counts of ``z_ij > threshold``."""
    n1, n2 = c.shape
    count = np.zeros(n1, np.int64)
    for i in prange(n1):
        a = alpha[i]
        k = 0
        for j in range(n2):
            if a + beta[j] - c[i, j] > threshold:
                k += 1
        count[i] = k
    return count


@njit(parallel=True, cache=True)
def line_candidates(c, alpha, beta, dalpha, dbeta, tmax, w1, w2):
    """Entries that are positive somewhere on the segment t in [0, tmax].

    Returns (z, dz, weight) of those entries: along the line, the dual
    objective's derivative only involves them (Part III (3.1), exact line search).
    """
    n1, n2 = c.shape
    count = np.zeros(n1, np.int64)
    for i in prange(n1):
        a = alpha[i]
        da = dalpha[i]
        k = 0
        for j in range(n2):
            z = a + beta[j] - c[i, j]
            if z > 0.0 or z + tmax * (da + dbeta[j]) > 0.0:
                k += 1
        count[i] = k
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
            z = a + beta[j] - c[i, j]
            dz = da + dbeta[j]
            if z > 0.0 or z + tmax * dz > 0.0:
                zs[p] = z
                dzs[p] = dz
                ws[p] = w1[i] * w2[j]
                p += 1
    return zs, dzs, ws


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
