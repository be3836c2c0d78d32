"""Pair searches for the cost ``c_ij = |x_i - y_j|^p`` without touching all n1*n2 pairs.

A bounded search in a balanced k-d tree over the points ``y_j`` returns exactly the pairs a full
streaming pass would (``z_ij > tau``), in time proportional to the pairs returned; the bounds and
why they are safe are in docs/core.md, section 6.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from femot.core import kernels
from femot.core._docs import pass_doc

__all__ = ["PointTree", "LEAF_SIZE"]

#: Points per leaf of the k-d tree (at most).
LEAF_SIZE = 16
#: Relative margin of the node bound (see the module notes).
MARGIN_RTOL = 1e-12


# -- tree construction --------------------------------------------------------

@njit(cache=True)
def _build(Y, leaf_size):
    """Balanced k-d tree: permutation of the points and per-node boxes.

    The tree is implicit: node k at depth l (k = 2^l - 1 + q) holds the points
    ``perm[q*n >> l ... ((q+1)*n >> l) - 1]`` (integer division by 2^l), its
    children are 2k+1 and 2k+2.  Each node is split at its median along the
    axis of largest extent.
    """
    n, d = Y.shape
    depth = 0
    while (n >> depth) > leaf_size:
        depth += 1
    perm = np.arange(n)
    for lev in range(depth):
        nn = 1 << lev
        for q in range(nn):
            s = q * n // nn
            e = (q + 1) * n // nn
            if e - s < 2:
                continue
            axis = 0
            best = -1.0
            for k in range(d):
                lo = np.inf
                hi = -np.inf
                for r in range(s, e):
                    v = Y[perm[r], k]
                    if v < lo:
                        lo = v
                    if v > hi:
                        hi = v
                if hi - lo > best:
                    best = hi - lo
                    axis = k
            keys = np.empty(e - s)
            for r in range(s, e):
                keys[r - s] = Y[perm[r], axis]
            order = np.argsort(keys, kind="mergesort")
            seg = perm[s:e].copy()
            for r in range(e - s):
                perm[s + r] = seg[order[r]]
    nnode = (1 << (depth + 1)) - 1
    lo = np.full((nnode, d), np.inf)
    hi = np.full((nnode, d), -np.inf)
    first_leaf = (1 << depth) - 1
    nl = 1 << depth
    for q in range(nl):
        k = first_leaf + q
        for r in range(q * n // nl, (q + 1) * n // nl):
            for a in range(d):
                v = Y[perm[r], a]
                if v < lo[k, a]:
                    lo[k, a] = v
                if v > hi[k, a]:
                    hi[k, a] = v
    for k in range(first_leaf - 1, -1, -1):
        for a in range(d):
            lo[k, a] = min(lo[2 * k + 1, a], lo[2 * k + 2, a])
            hi[k, a] = max(hi[2 * k + 1, a], hi[2 * k + 2, a])
    Yp = np.empty((n, d))
    for r in range(n):
        for a in range(d):
            Yp[r, a] = Y[perm[r], a]
    return perm, Yp, lo, hi, depth


@njit(cache=True)
def _node_bounds(vp, Yp, depth, p):
    """Per-node data for the bound of ``beta_j - c_ij`` (values ``vp`` in tree order).

    Column 0: ``max_node beta``.  For p = 2 and d <= 2 also a linear model of beta
    over the node, ``beta_j <= off - g.c + g.y_j`` with the fit's largest deviation
    folded into ``off`` (column 1, +inf when unused; columns 2.. hold g).  Then for
    every point of the node ``beta_j - |x - y_j|^2 <= off + g.x + |g|^2/4 -
    dist(x + g/2, box)^2`` (the maximum of a concave quadratic over the box), which is
    much sharper than ``max beta - dist(x, box)^2`` when beta varies across the node.
    """
    n = vp.size
    d = Yp.shape[1]
    nnode = (1 << (depth + 1)) - 1
    B = np.zeros((nnode, 2 + d))
    lev = 0
    for k in range(nnode):
        if k >= (1 << (lev + 1)) - 1:
            lev += 1
        q = k - ((1 << lev) - 1)
        s = q * n // (1 << lev)
        e = (q + 1) * n // (1 << lev)
        bmax = -np.inf
        for r in range(s, e):
            if vp[r] > bmax:
                bmax = vp[r]
        B[k, 0] = bmax
        B[k, 1] = np.inf
        cnt = e - s
        if p != 2.0 or d > 2 or cnt < 3 or not np.isfinite(bmax):
            continue
        c0 = 0.0
        c1 = 0.0
        vb = 0.0
        for r in range(s, e):
            c0 += Yp[r, 0]
            if d == 2:
                c1 += Yp[r, 1]
            vb += vp[r]
        c0 /= cnt
        c1 /= cnt
        vb /= cnt
        s00 = 0.0
        s01 = 0.0
        s11 = 0.0
        r0 = 0.0
        r1 = 0.0
        for r in range(s, e):
            u0 = Yp[r, 0] - c0
            dv = vp[r] - vb
            s00 += u0 * u0
            r0 += u0 * dv
            if d == 2:
                u1 = Yp[r, 1] - c1
                s01 += u0 * u1
                s11 += u1 * u1
                r1 += u1 * dv
        g0 = 0.0
        g1 = 0.0
        if d == 1:
            if s00 <= 0.0:
                continue
            g0 = r0 / s00
        else:
            det = s00 * s11 - s01 * s01
            tr = s00 + s11
            if not det > 1e-6 * tr * tr:
                continue
            g0 = (s11 * r0 - s01 * r1) / det
            g1 = (s00 * r1 - s01 * r0) / det
        err = 0.0
        vabs = 0.0
        for r in range(s, e):
            u = vp[r] - vb - g0 * (Yp[r, 0] - c0)
            if d == 2:
                u -= g1 * (Yp[r, 1] - c1)
            if abs(u) > err:
                err = abs(u)
            if abs(vp[r]) > vabs:
                vabs = abs(vp[r])
        # rounding of the fit and of its later use: a generous allowance
        err += 1e-10 * (vabs + (abs(g0) + abs(g1)) * (abs(c0) + abs(c1) + 1.0))
        B[k, 1] = vb - g0 * c0 - g1 * c1 + err
        B[k, 2] = g0
        if d == 2:
            B[k, 3] = g1
    return B


@njit(inline="always")
def _node_bound(X1, i, lo, hi, k, p, B):
    """Upper bound of ``beta_j - c_ij`` over the points j of node k (see ``_node_bounds``)."""
    v = B[k, 0] - _lower(X1, i, lo, hi, k, p)
    if B[k, 1] < np.inf:
        d = X1.shape[1]
        s = 0.0
        gx = 0.0
        gg = 0.0
        for a in range(d):
            g = B[k, 2 + a]
            x = X1[i, a]
            u = x + 0.5 * g
            gap = 0.0
            if u < lo[k, a]:
                gap = lo[k, a] - u
            elif u > hi[k, a]:
                gap = u - hi[k, a]
            s += gap * gap
            gx += g * x
            gg += g * g
        v2 = B[k, 1] + gx + 0.25 * gg - s
        if v2 < v:
            v = v2
    return v


# -- the search ---------------------------------------------------------------

@njit(inline="always")
def _lower(X1, i, lo, hi, k, p):
    """dist(x_i, box_k)^p (a lower bound of c_ij for every point of node k)."""
    d = X1.shape[1]
    s = 0.0
    for a in range(d):
        x = X1[i, a]
        g = 0.0
        if x < lo[k, a]:
            g = lo[k, a] - x
        elif x > hi[k, a]:
            g = x - hi[k, a]
        s += g * g
    if p == 2.0:
        return s
    if p == 1.0:
        return np.sqrt(s)
    return s ** (0.5 * p)


@njit(inline="always")
def _cost(X1, i, Yp, r, p):
    """c_ij with y_j = Yp[r]: the point cost of ``kernels._cval`` itself (same rounding)."""
    return kernels._cval((X1, Yp, p), i, r)


@njit(inline="always")
def _leaves(X1, i, lo, hi, depth, p, a0, B0, a1, B1, two, cut, stack, out):
    """Leaves of the tree that may hold a pair with max(a0 + b0_j, a1 + b1_j) - c_ij > cut.

    (With ``two`` False only the first end, ``a0 + b0_j - c_ij > cut``, is tested.)

    Writes their indices (0 .. 2^depth - 1) into ``out``; returns how many.
    """
    first_leaf = (1 << depth) - 1
    top = 0
    stack[0] = 0
    m = 0
    while top >= 0:
        k = stack[top]
        top -= 1
        bound = a0 + _node_bound(X1, i, lo, hi, k, p, B0)
        if two:
            bound = max(bound, a1 + _node_bound(X1, i, lo, hi, k, p, B1))
        if not bound > cut:
            continue
        if k >= first_leaf:
            out[m] = k - first_leaf
            m += 1
        else:
            top += 1
            stack[top] = 2 * k + 2
            top += 1
            stack[top] = 2 * k + 1
    return m


@njit(parallel=True, cache=True)
def _count_line(X1, Yp, perm, lo, hi, depth, p, alpha, beta, dalpha, dbeta, tmax, margin):
    """Per row, the number of pairs positive somewhere on t in [0, tmax] (``_line``'s test)."""
    n1 = X1.shape[0]
    n2 = Yp.shape[0]
    nl = 1 << depth
    bp0 = np.empty(n2)
    bp1 = np.empty(n2)
    for r in range(n2):
        j = perm[r]
        bp0[r] = beta[j]
        bp1[r] = beta[j] + tmax * dbeta[j]
    bm0 = _node_bounds(bp0, Yp, depth, p)
    bm1 = _node_bounds(bp1, Yp, depth, p)
    count = np.zeros(n1, np.int64)
    for i in prange(n1):
        stack = np.empty(depth + 2, np.int64)
        out = np.empty(nl, np.int64)
        a = alpha[i]
        da = dalpha[i]
        nleaf = _leaves(X1, i, lo, hi, depth, p, a, bm0, a + tmax * da, bm1, True, -margin, stack, out)
        k = 0
        for m in range(nleaf):
            q = out[m]
            for r in range(q * n2 // nl, (q + 1) * n2 // nl):
                z = a + bp0[r] - _cost(X1, i, Yp, r, p)
                if z > 0.0 or z + tmax * (da + dbeta[perm[r]]) > 0.0:
                    k += 1
        count[i] = k
    return count


@njit(parallel=True, cache=True)
def _above(X1, Yp, perm, lo, hi, depth, p, alpha, bp, threshold, margin, count):
    """CSR (indptr, indices, z, cvals) of ``alpha_i + b_j - c_ij > threshold``, indices sorted per row."""
    n1 = X1.shape[0]
    n2 = Yp.shape[0]
    bm = _node_bounds(bp, Yp, depth, p)
    nl = 1 << depth
    indptr = np.zeros(n1 + 1, np.int64)
    for i in range(n1):
        indptr[i + 1] = indptr[i] + count[i]
    nnz = indptr[n1]
    indices = np.empty(nnz, np.int32)
    zs = np.empty(nnz)
    cs = np.empty(nnz)
    bad = np.zeros(n1, np.bool_)
    for i in prange(n1):
        stack = np.empty(depth + 2, np.int64)
        out = np.empty(nl, np.int64)
        a = alpha[i]
        nleaf = _leaves(X1, i, lo, hi, depth, p, a, bm, a, bm, False, threshold - margin, stack, out)
        s0 = indptr[i]
        e0 = indptr[i + 1]
        w = s0
        for m in range(nleaf):
            q = out[m]
            for r in range(q * n2 // nl, (q + 1) * n2 // nl):
                c = _cost(X1, i, Yp, r, p)
                z = a + bp[r] - c
                if z > threshold:
                    if w < e0:
                        indices[w] = perm[r]
                        zs[w] = z
                        cs[w] = c
                    w += 1
        if w != e0:
            bad[i] = True
            continue
        if e0 - s0 > 1:
            order = np.argsort(indices[s0:e0])
            ti = indices[s0:e0].copy()
            tz = zs[s0:e0].copy()
            tc = cs[s0:e0].copy()
            for r in range(e0 - s0):
                indices[s0 + r] = ti[order[r]]
                zs[s0 + r] = tz[order[r]]
                cs[s0 + r] = tc[order[r]]
    return indptr, indices, zs, cs, bad.any()


@njit(parallel=True, cache=True)
def _evaluate(X1, Yp, perm, lo, hi, depth, p, alpha, beta, dalpha, dbeta, t, w1, w2, nchunk, margin):
    """The solver's ``evaluate`` pass (see ``kernels.evaluate``) over the searched pairs only."""
    n1 = X1.shape[0]
    n2 = Yp.shape[0]
    nl = 1 << depth
    btp = np.empty(n2)
    for r in range(n2):
        j = perm[r]
        btp[r] = beta[j] + t * dbeta[j]
    bm = _node_bounds(btp, Yp, depth, p)
    rowsum = np.zeros(n1)
    count = np.zeros(n1, np.int64)
    colpart = np.zeros((nchunk, n2))
    dpart = np.zeros(nchunk)
    for ch in prange(nchunk):
        i0 = ch * n1 // nchunk
        i1 = (ch + 1) * n1 // nchunk
        col = colpart[ch]
        stack = np.empty(depth + 2, np.int64)
        out = np.empty(nl, np.int64)
        dacc = 0.0
        for i in range(i0, i1):
            a = alpha[i] + t * dalpha[i]
            da = dalpha[i]
            wi = w1[i]
            s = 0.0
            sd = 0.0
            k = 0
            nleaf = _leaves(X1, i, lo, hi, depth, p, a, bm, a, bm, False, -margin, stack, out)
            for m in range(nleaf):
                q = out[m]
                for r in range(q * n2 // nl, (q + 1) * n2 // nl):
                    z = a + btp[r] - _cost(X1, i, Yp, r, p)
                    if z > 0.0:
                        j = perm[r]
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
def _line(X1, Yp, perm, lo, hi, depth, p, alpha, beta, dalpha, dbeta, tmax, w1, w2, count, margin):
    """(z, dz, weight) of the pairs positive somewhere on t in [0, tmax] (see ``kernels.line_candidates``)."""
    n1 = X1.shape[0]
    n2 = Yp.shape[0]
    nl = 1 << depth
    bp0 = np.empty(n2)
    bp1 = np.empty(n2)
    for r in range(n2):
        j = perm[r]
        bp0[r] = beta[j]
        bp1[r] = beta[j] + tmax * dbeta[j]
    bm0 = _node_bounds(bp0, Yp, depth, p)
    bm1 = _node_bounds(bp1, Yp, depth, p)
    ptr = np.zeros(n1 + 1, np.int64)
    for i in range(n1):
        ptr[i + 1] = ptr[i] + count[i]
    mtot = ptr[n1]
    zs = np.empty(mtot)
    dzs = np.empty(mtot)
    ws = np.empty(mtot)
    for i in prange(n1):
        stack = np.empty(depth + 2, np.int64)
        out = np.empty(nl, np.int64)
        a = alpha[i]
        da = dalpha[i]
        nleaf = _leaves(X1, i, lo, hi, depth, p, a, bm0, a + tmax * da, bm1, True, -margin, stack, out)
        w = ptr[i]
        for m in range(nleaf):
            q = out[m]
            for r in range(q * n2 // nl, (q + 1) * n2 // nl):
                j = perm[r]
                z = a + bp0[r] - _cost(X1, i, Yp, r, p)
                dz = da + dbeta[j]
                if z > 0.0 or z + tmax * dz > 0.0:
                    if w < ptr[i + 1]:
                        zs[w] = z
                        dzs[w] = dz
                        ws[w] = w1[i] * w2[j]
                    w += 1
    return zs, dzs, ws


# -- the Python side ----------------------------------------------------------

def _work(n1, n2):
    """Size estimate of a search for the thread choice (``kernels._run``)."""
    return n1 * min(n2, 512)


class PointTree:
    """A k-d tree over the points ``y_j`` answering the solver's threshold passes.

    ``X1`` are the row points, ``X2`` the column points (C-contiguous (n, d)),
    ``p`` the exponent and ``cmax`` an upper bound of ``max c_ij`` (for the
    margin).  All methods take and return arrays in the original column order.

    Parameters
    ----------
    X1 : numpy.ndarray, shape (n1, d)
        Row points (C-contiguous).
    X2 : numpy.ndarray, shape (n2, d)
        Column points, stored in the tree (C-contiguous).
    p : float
        Exponent of the cost ``|x - y|^p``.
    cmax : float
        Upper bound of ``max c_ij``; sets the rounding margin of the node bounds.
    leaf_size : int, optional
        Largest number of points in a leaf (default ``LEAF_SIZE``).
    """

    def __init__(self, X1, X2, p, cmax, leaf_size: int = LEAF_SIZE):
        self.X1 = X1
        self.p = float(p)
        self.cmax = float(cmax)
        self.n1, self.n2 = X1.shape[0], X2.shape[0]
        self.perm, self.Yp, self.lo, self.hi, self.depth = _build(X2, int(leaf_size))
        self.nchunk = kernels.num_chunks(self.n1)
        self.leaves = 1 << self.depth

    def _margin(self, *vecs):
        scale = self.cmax + sum(float(np.abs(v).max(initial=0.0)) for v in vecs)
        return MARGIN_RTOL * scale

    def _go(self, kernel, *args):
        return kernels._run(kernel, _work(self.n1, self.n2), args)

    @pass_doc
    def count_above(self, alpha, beta, threshold, rows=None):
        """Per-row counts of ``z_ij > threshold`` (of the given rows only, with ``rows``).

        Parameters
        ----------
        %(potentials)s
        threshold : float
            The pairs with ``alpha_i + beta_j - c_ij > threshold`` count.
        %(rows)s

        Returns
        -------
        numpy.ndarray of int64
            One count per (selected) row.
        """
        bp = np.ascontiguousarray(beta[self.perm])
        margin = self._margin(alpha, beta)
        if rows is not None:
            return _count_thr(np.ascontiguousarray(self.X1[rows]), self.Yp, self.lo, self.hi, self.depth, self.p,
                              np.ascontiguousarray(alpha[rows]), bp, float(threshold), margin)
        return self._count_exact(alpha, bp, threshold, margin)

    @pass_doc
    def above(self, alpha, beta, threshold, count=None):
        """CSR (indptr, indices, z, cvals) of the pairs with ``z_ij > threshold`` (sorted columns).

        Parameters
        ----------
        %(potentials)s
        threshold : float
            The pairs with ``alpha_i + beta_j - c_ij > threshold`` are returned.
        count : numpy.ndarray or None, optional
            Per-row counts from :meth:`count_above` at this point, if known; recounted if they
            do not match.

        Returns
        -------
        indptr, indices : numpy.ndarray
            CSR structure (original column order).
        z : numpy.ndarray
            ``alpha_i + beta_j - c_ij`` on the pairs.
        cvals : numpy.ndarray
            ``c_ij`` on the pairs.
        """
        bp = np.ascontiguousarray(beta[self.perm])
        margin = self._margin(alpha, beta)
        if count is None:
            count = self._count_exact(alpha, bp, threshold, margin)
        ip, ind, z, c, bad = self._go(_above, self.X1, self.Yp, self.perm, self.lo, self.hi, self.depth, self.p,
                                      alpha, bp, float(threshold), margin, count)
        if bad:  # counts came from a differently rounded point: recount
            count = self._count_exact(alpha, bp, threshold, margin)
            ip, ind, z, c, bad = self._go(_above, self.X1, self.Yp, self.perm, self.lo, self.hi, self.depth,
                                          self.p, alpha, bp, float(threshold), margin, count)
        return ip, ind, z, c

    def _count_exact(self, alpha, bp, threshold, margin):
        return self._go(_count_thr, self.X1, self.Yp, self.lo, self.hi, self.depth, self.p, alpha, bp,
                        float(threshold), margin)

    @pass_doc
    def evaluate(self, alpha, beta, dalpha, dbeta, t, w1, w2):
        """Active-set sums at ``(alpha + t dalpha, beta + t dbeta)``, searched through the tree.

        Same results as :meth:`femot.core.cost.Cost.evaluate`.

        Parameters
        ----------
        %(potentials)s
        %(direction)s
        t : float
            Step along the direction.
        %(weights)s

        Returns
        -------
        rowsum, colsum, count, dsum
            See :meth:`femot.core.cost.Cost.evaluate`.
        """
        a_eff = alpha + t * dalpha
        b_eff = beta + t * dbeta
        return self._go(_evaluate, self.X1, self.Yp, self.perm, self.lo, self.hi, self.depth, self.p, alpha, beta,
                        dalpha, dbeta, float(t), w1, w2, self.nchunk, self._margin(a_eff, b_eff))

    @pass_doc
    def count_line(self, alpha, beta, dalpha, dbeta, tmax, rows=None):
        """Per-row counts of the pairs positive somewhere on t in [0, tmax] (given rows only, with ``rows``).

        Parameters
        ----------
        %(potentials)s
        %(direction)s
        tmax : float
            Largest step.
        %(rows)s

        Returns
        -------
        numpy.ndarray of int64
            One count per (selected) row.
        """
        m = self._margin(alpha, beta, alpha + tmax * dalpha, beta + tmax * dbeta)
        if rows is not None:
            return _count_line(np.ascontiguousarray(self.X1[rows]), self.Yp, self.perm, self.lo, self.hi, self.depth,
                               self.p, np.ascontiguousarray(alpha[rows]), beta, np.ascontiguousarray(dalpha[rows]),
                               dbeta, float(tmax), m)
        return self._go(_count_line, self.X1, self.Yp, self.perm, self.lo, self.hi, self.depth, self.p, alpha, beta,
                        dalpha, dbeta, float(tmax), m)

    @pass_doc
    def line(self, alpha, beta, dalpha, dbeta, tmax, w1, w2, count):
        """The pairs positive somewhere on ``t in [0, tmax]``, with their slopes and weights.

        Parameters
        ----------
        %(potentials)s
        %(direction)s
        tmax : float
            Largest step.
        %(weights)s
        count : numpy.ndarray of int64, shape (n1,)
            Per-row counts from :meth:`count_line` with the same arguments.

        Returns
        -------
        z, dz, w : numpy.ndarray
            ``alpha_i + beta_j - c_ij``, ``dalpha_i + dbeta_j`` and ``w1_i w2_j`` over the pairs.
        """
        a1 = alpha + tmax * dalpha
        return self._go(_line, self.X1, self.Yp, self.perm, self.lo, self.hi, self.depth, self.p, alpha, beta,
                        dalpha, dbeta, float(tmax), w1, w2, count, self._margin(alpha, beta, a1, beta + tmax * dbeta))


@njit(parallel=True, cache=True)
def _count_thr(X1, Yp, lo, hi, depth, p, alpha, bp, threshold, margin):
    """Per row, #{j : alpha_i + b_j - c_ij > threshold} with the full pass's expression."""
    n1 = X1.shape[0]
    n2 = Yp.shape[0]
    bm = _node_bounds(bp, Yp, depth, p)
    nl = 1 << depth
    count = np.zeros(n1, np.int64)
    for i in prange(n1):
        stack = np.empty(depth + 2, np.int64)
        out = np.empty(nl, np.int64)
        a = alpha[i]
        nleaf = _leaves(X1, i, lo, hi, depth, p, a, bm, a, bm, False, threshold - margin, stack, out)
        k = 0
        for m in range(nleaf):
            q = out[m]
            for r in range(q * n2 // nl, (q + 1) * n2 // nl):
                if a + bp[r] - _cost(X1, i, Yp, r, p) > threshold:
                    k += 1
        count[i] = k
    return count
