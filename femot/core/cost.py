"""Cost objects consumed by the transport core.

The solver never touches the cost matrix directly: it asks a cost object for
the few fused passes it needs (sums over the active set, the active set as a
sparse pattern, line-search candidates).  ``DenseCost`` implements them over a
stored matrix; a blockwise or on-the-fly cost only has to provide the same
methods, and callers keep passing it where they pass an array today.
"""
from __future__ import annotations

import numpy as np

from femot.core import kernels

__all__ = ["DenseCost", "as_cost"]


class DenseCost:
    """A cost stored as a dense, C-contiguous ``(n1, n2)`` float array."""

    def __init__(self, c, name: str = "c"):
        try:
            m = np.ascontiguousarray(c, dtype=float)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be a numeric matrix: {exc}") from None
        if m.ndim != 2 or m.size == 0:
            raise ValueError(f"{name} must be a nonempty 2D array, got shape {m.shape}")
        finite, max_abs = kernels.finite_absmax(m)  # one pass, no n1*n2 temporaries
        if not finite:
            raise ValueError(f"{name} contains NaN or infinite entries")
        self.matrix = m
        self.shape = m.shape
        self.max_abs = float(max_abs)
        self._nchunk = kernels.num_chunks(self.shape[0])

    # -- passes used by the solver -------------------------------------------
    def evaluate(self, alpha, beta, w1, w2, dalpha=None, dbeta=None, t=0.0):
        """(rowsum, colsum, count, dsum) of z_+ at alpha + t dalpha, beta + t dbeta."""
        if dalpha is None:
            dalpha = np.zeros_like(alpha)
            dbeta = np.zeros_like(beta)
        return kernels.evaluate(self.matrix, alpha, beta, dalpha, dbeta, float(t), w1, w2, self._nchunk)

    def active(self, alpha, beta, count=None, threshold: float = 0.0):
        """CSR arrays (indptr, indices, z) of the entries with z > threshold."""
        if count is None or threshold != 0.0:
            count = kernels.count_above(self.matrix, alpha, beta, float(threshold))
        ip, ind, z, bad = kernels.active_csr(self.matrix, alpha, beta, count, float(threshold))
        if bad:  # counts came from a differently rounded point: recount
            count = kernels.count_above(self.matrix, alpha, beta, float(threshold))
            ip, ind, z, bad = kernels.active_csr(self.matrix, alpha, beta, count, float(threshold))
        return ip, ind, z

    def line_candidates(self, alpha, beta, dalpha, dbeta, tmax, w1, w2, max_count=None):
        """(z, dz, weight) of the entries positive somewhere on t in [0, tmax];
        None when there are more than ``max_count`` (nothing is allocated then)."""
        count = kernels.count_line_candidates(self.matrix, alpha, beta, dalpha, dbeta, float(tmax))
        if max_count is not None and count.sum() > max_count:
            return None
        return kernels.line_candidates(self.matrix, alpha, beta, dalpha, dbeta, float(tmax), w1, w2, count)

    def candidates(self, alpha, beta, threshold: float, max_count=None):
        """CSR (indptr, indices, cvals) of the entries with z > threshold; None when
        there are more than ``max_count`` of them (nothing is allocated then)."""
        count = kernels.count_above(self.matrix, alpha, beta, float(threshold))
        if max_count is not None and count.sum() > max_count:
            return None
        return kernels.candidates(self.matrix, alpha, beta, float(threshold), count)

    def entries(self, rows, cols):
        return self.matrix[rows, cols]

    def dense(self) -> np.ndarray:
        return self.matrix


def as_cost(c, shape=None):
    """Wrap an array (or pass through a cost object) after validating it."""
    if isinstance(c, DenseCost):
        cost = c
    elif hasattr(c, "evaluate") and hasattr(c, "active") and hasattr(c, "shape"):
        cost = c  # a user-provided cost object with the same protocol
    else:
        cost = DenseCost(c)
    if shape is not None and tuple(cost.shape) != tuple(shape):
        raise ValueError(f"c has shape {tuple(cost.shape)}, expected {tuple(shape)}")
    return cost
