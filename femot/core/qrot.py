"""Quadratically regularized optimal transport through its (doubly) regularized dual.

Solves the weighted problem of docs/core.md (Part III (H_gamma) with quadrature
weights; (3.1) when eps > 0):

    min  sum_ij w1_i w2_j (c_ij pi_ij + gamma/2 pi_ij^2)
    s.t. pi >= 0,  sum_j w2_j pi_ij = mu1_i,  sum_i w1_i pi_ij = mu2_j,

through the dual equations

    sum_j w2_j (alpha_i + beta_j - c_ij)_+ + gamma*eps*alpha_i = gamma*mu1_i
    sum_i w1_i (alpha_i + beta_j - c_ij)_+ + gamma*eps*beta_j  = gamma*mu2_j

with ``pi = (alpha (+) beta - c)_+ / gamma`` (Part III Thm 2.7, Def. 3.1).

Method: semismooth Newton on the concave dual objective Phi, with
* a Levenberg-Marquardt shift proportional to the residual (keeps the Newton
  matrix nonsingular for eps = 0 and for rows or columns without active entries),
  whose factor adapts to the accepted step (``_adapt_shift``: raised after a
  line search that stopped early, lowered after full steps), against the crawl of
  sparse, LP-like plans whose active pattern falls apart into components,
* an exact line search on the piecewise quadratic dual along the Newton
  direction (the derivative is piecewise linear; its root is found from the
  breakpoints of the few entries that change sign on the segment),
* when that search stops early at a kink, a search on the two semi-duals
  (alpha re-solved exactly for beta + t dbeta, or the twin): many rows can then
  switch columns in one step; the dual value never drops below the straight
  step's, so global convergence is kept (``_curved_step``),
* a cold start from the dual potentials of the exact (LP) transport problem for
  small instances, where the plan is sparse and plain Newton needs many
  iterations to grow its active set one entry at a time; for Monge costs, from
  staircase potentials of the eps-corrected marginals mu - eps*(alpha, beta)
  (``_monge_start``: with |alpha| ~ max|c| the correction is not small and moves
  the whole support), which also compete with a warm start ``x0``,
* otherwise, at small dimensionless gamma, a continuation in gamma from a gamma
  where the plan is wide (``_continuation_gammas``), started there by the closed
  form with every pair active or, for large point sets, by coarsened point sets.
Everything that touches all n1*n2 pairs is a fused streaming pass (``kernels``);
the linear algebra only sees the sparse active set.
"""
from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
from scipy.optimize import OptimizeResult

from femot._docstrings import cite
from femot._validation import (
    as_nonnegative_vector,
    as_positive_weights,
    as_vector,
    check_equal_mass,
    check_nonnegative_scalar,
    check_positive_scalar,
    check_qrot_data,
    floor_acceptance_message,
    mass_rtol,
)
from femot.core import kernels
from femot.core.coarsening import COARSE_START_MIN, coarse_start
from femot.core.cost import GeometricCost, as_cost
from femot.core.linalg import NewtonMatrix

__all__ = ["solve_qrot", "QROTResult", "residual_floor"]

_U = np.finfo(float).eps
# Width of the first Newton matrix's band after an exact-potential start, in units
# of gamma * max(mu): the regularized plan lives where z > -gamma * pi.
_FIRST_BAND = 2.0
# A curved step must reach at least this multiple of the straight step length:
# one that stops near the straight step only re-solves one side at the same t,
# which gains nothing structural and (at rounding-level gamma) perturbs the path.
_CURVE_FACTOR = 2.0
# ... and its candidate set may hold at most this many times (active entries + n1 + n2)
_CURVE_BUDGET = 20
# Adaptive Levenberg-Marquardt factor (``_adapt_shift``): raised after a step shorter
# than _SHORT_STEP (by 1/t, at most _LM_JUMP), lowered by _LM_DROP after one of at least
# _FULL_STEP, capped at _LM_MAX.
_SHORT_STEP = 0.1
_FULL_STEP = 0.9
_LM_JUMP = 100.0
_LM_DROP = 1000.0
_LM_MAX = 1e8
# Cold-start continuation in gamma (``_continuation_gammas``): below this dimensionless
# gamma the 'mean' start is replaced by a chain of at most _CONT_MAX_STAGES solves at
# gamma * 10^k, each to the residual _CONT_RTOL * max(mu).
_CONT_GAMMA_HAT = 1e-4
_CONT_MAX_STAGES = 12
_CONT_RTOL = 1e-6
# ... tried only after the plain cold start has had this many steps cut short
_CRAWL_STEPS = 3
# dual_jvp factorizes the Newton matrix up to this many pattern entries (CG beyond)
_DUAL_LU_MAX_NNZ = 5_000_000

STATUS_MESSAGES = {
    0: "converged: residual below tolerance",
    1: "maximum number of Newton iterations reached",
    2: "line search failed: no descent along the Newton direction",
    3: "non-finite values encountered",
    4: "gamma too small for double precision at this cost scale: the plan cannot be resolved",
    5: "accepted at the double-precision floor",
}
# A residual may be accepted at the rounding floor (instead of ``tol``) only when
# that floor is this small against the data: PRECISION_RTOL * max(mu1, mu2), a
# bound in the density units of the residual, so weights do not enter it.
PRECISION_RTOL = 1e-3


def residual_floor(w1, w2, scale: float, gamma: float) -> float:
    """Smallest residual double precision can certify.

    Rounding in ``alpha_i + beta_j - c_ij`` is about ``u * scale`` per entry,
    ``scale = max(|c|, |alpha| + |beta|)``; summing over a row and dividing by
    gamma gives ``n_eff * u * scale / gamma`` with ``n_eff = max(sum w1, sum w2)``.

    Parameters
    ----------
    w1, w2 : array_like
        Quadrature weights of the two marginals, shapes ``(n1,)`` and ``(n2,)``.
    scale : float
        Magnitude of the evaluated entries, ``max(|c|, |alpha| + |beta|)``.
    gamma : float
        Regularization parameter (> 0).

    Returns
    -------
    float
        The floor ``max(sum w1, sum w2) * u * scale / gamma`` (``u`` the unit roundoff), in the
        units of the marginal residual.
    """
    n_eff = max(float(np.sum(w1)), float(np.sum(w2)))
    return n_eff * _U * scale / gamma


def _active_floor(ip, ind, z, alpha, beta, m1, m2, w1, w2, gamma, eps, cost=None):
    """Rounding floor of the residual from the potentials on the active set.

    Only active entries enter the row and column sums, so only they matter
    (:func:`residual_floor` charges ``max|c|`` to every pair instead).  Per
    active entry two effects limit the accuracy of ``pi_ij = z_ij / gamma``:

    * evaluation: ``fl(fl(alpha_i + beta_j) - c_ij)`` is off by at most about
      ``u (|alpha_i + beta_j| + |z_ij|) <= u (|c_ij| + 2 z_ij)``;
    * resolution: alpha_i and beta_j move in steps of about ``u |alpha_i|``,
      ``u |beta_j|``, so z_ij cannot be tuned more finely than
      ``u (|alpha_i| + |beta_j|)``.

    Dividing by gamma and summing with the weights over each row (column)
    gives the floor of that residual component; ``u (mu + eps |alpha|)`` is the
    rounding of the remaining terms.  ``|c_ij|`` is read from the cost when it
    provides ``entries``, else bounded by ``|alpha_i| + |beta_j| + z_ij``.
    """
    n1, n2 = alpha.size, beta.size
    rows = np.repeat(np.arange(n1), np.diff(ip))
    pot = np.abs(alpha)[rows] + np.abs(beta)[ind]
    zabs = np.abs(z)
    if cost is not None and hasattr(cost, "entries") and rows.size:
        cabs = np.abs(np.asarray(cost.entries(rows, ind), dtype=float))
    else:
        cabs = pot + zabs
    e = pot + cabs + 2.0 * zabs
    row_err = np.bincount(rows, w2[ind] * e, minlength=n1)
    col_err = np.bincount(ind, w1[rows] * e, minlength=n2)
    worst = max(float(row_err.max(initial=0.0)), float(col_err.max(initial=0.0)))
    rest = max(float(np.max(m1 + eps * np.abs(alpha))), float(np.max(m2 + eps * np.abs(beta))))
    return _U * worst / gamma + 4.0 * _U * rest


def _precision_message(gamma, floor, residual, thresh):
    """Message of status 4, naming the smallest gamma that would work.

    At fixed potentials and active set the floor scales like 1/gamma, so it
    reaches the admissible level ``thresh`` at ``gamma * floor / thresh``.  A
    larger gamma also widens the active set (more terms in each row sum), so
    the suggestion carries a factor 2 and is rounded up to two digits.
    """
    g_min = 2.0 * gamma * floor / max(thresh, np.finfo(float).tiny)
    if np.isfinite(g_min) and g_min > 0:
        e = np.floor(np.log10(g_min)) - 1
        g_min = np.ceil(g_min / 10 ** e) * 10 ** e
    return (f"{STATUS_MESSAGES[4]}: the residual {residual:.2e} cannot be certified below the rounding "
            f"floor {floor:.2e}, which exceeds {PRECISION_RTOL:g} * max(mu1, mu2) = {thresh:.2e}; "
            f"use gamma >= {g_min:.2g}")


class QROTResult(OptimizeResult):
    """Result of :func:`solve_qrot`.

    Attributes
    ----------
    alpha, beta : numpy.ndarray
        Dual potentials, shapes (n1,) and (n2,).
    plan : scipy.sparse.csr_matrix
        The plan density ``pi`` (positive entries only), shape (n1, n2).
    residual : float
        Max abs violation of the marginal equations (in units of mu).
    residual_floor : float
        The attainable accuracy used in the stopping test (the
        sharper of ``residual_floor()`` and the active-set estimate).
    success, status, message, nit, history
        Solver diagnostics (status codes in :func:`solve_qrot`).
    gamma, eps : float
        The regularization parameters.
    w1, w2 : numpy.ndarray
        The quadrature weights.

    Methods ``jvp``, ``vjp`` give derivatives of the marginal-to-plan map
    ``S_{gamma,eps}`` (Part III Def. 3.1) at this solution.

    Internal state (the cost object, the biactivity tolerance, cached factorizations)
    is kept in attributes whose names start with ``_``; they are ordinary instance
    attributes, not entries of the result, so they appear in neither ``keys()`` nor
    the repr.
    """

    def __setattr__(self, name, value):
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self[name] = value

    # -- helpers --------------------------------------------------------------
    def _z_on(self, rows, cols):
        return self.alpha[rows] + self.beta[cols] - self._cost.entries(rows, cols)

    def biactive(self, tol: float | None = None):
        """Index arrays (rows, cols) of the biactive set Omega_0 = {alpha_i + beta_j = c_ij}.

        Entries with ``|z_ij| <= tol`` count as biactive; the default tolerance
        is the rounding level ``64 u max(|c|, |alpha|+|beta|)``.

        Parameters
        ----------
        tol : float or None, optional
            Entries with ``|alpha_i + beta_j - c_ij| <= tol`` are counted; None (default) uses the
            rounding level of the solution.

        Returns
        -------
        rows, cols : numpy.ndarray
            ``int64`` index arrays of equal length, the biactive pairs.
        """
        if tol is None:
            tol = self._ztol
        ip, ind, z = self._cost.active(self.alpha, self.beta, threshold=-tol)
        rows = np.repeat(np.arange(ip.size - 1), np.diff(ip))
        keep = z <= tol
        return rows[keep], ind[keep].astype(np.int64)

    def _pattern(self, A):
        """CSR structure of Omega_+ united with the chosen A ⊂ Omega_0."""
        P = self.plan
        if A is None:
            return P.indptr, P.indices
        rows, cols = (np.asarray(a, dtype=np.int64) for a in A)
        if rows.shape != cols.shape:
            raise ValueError("A must be a pair (rows, cols) of equal-length index arrays")
        n1, n2 = P.shape
        if rows.size and (rows.min() < 0 or rows.max() >= n1 or cols.min() < 0 or cols.max() >= n2):
            raise ValueError("A contains indices outside the plan's shape")
        zA = self._z_on(rows, cols)
        if np.any(np.abs(zA) > self._ztol):
            raise ValueError("A must be a subset of the biactive set Omega_0 (alpha_i + beta_j = c_ij)")
        pat = sp.csr_matrix((np.ones(P.nnz), P.indices, P.indptr), shape=P.shape)
        pat = pat + sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=P.shape)
        pat.sort_indices()
        return pat.indptr, pat.indices

    def _system(self, A):
        ip, ind = self._pattern(A)
        kappa = self.gamma * self.eps
        # eps = 0: K is singular along (1, -1) per connected component; a tiny
        # shift selects the minimum-norm solution without changing the plan.
        shift = kappa if kappa > 0 else 1e-12
        return NewtonMatrix(ip, ind, self.plan.shape[1], self.w1, self.w2, shift), ip, ind

    # -- derivatives ----------------------------------------------------------
    @cite("III")
    def jvp(self, h1, h2, A=None):
        """Directional derivative ``S'(mu; h)`` of the plan (Part III Thm 3.11).

        At a differentiable point (Omega_0 empty) this is the derivative; with a
        set ``A ⊂ Omega_0`` (pair of index arrays) having outer structure it is
        the Bouligand element of Thm 3.12.  With weights the linearized
        equations read ``K eta = gamma * diag(w1, w2) h`` and the result is
        ``chi ∘ (eta_1 (+) eta_2) / gamma``, returned as CSR on the pattern.
        One sparse solve with the Newton matrix.

        With eps = 0, S is defined only on marginals of equal mass, so the
        direction must keep the masses equal: ``sum w1 h1 == sum w2 h2`` (up to
        1e-9 relative to ``sum w1 |h1| + sum w2 |h2|``), else ValueError.

        Parameters
        ----------
        h1 : array_like, shape (n1,)
            Direction of the first marginal (nodal values, like ``mu1``).
        h2 : array_like, shape (n2,)
            Direction of the second marginal.
        A : tuple of two int arrays or None, optional
            A subset ``(rows, cols)`` of the biactive set Omega_0 joined to the active set
            (Part III Thm 3.12); None (default) uses Omega_+ alone.

        Returns
        -------
        scipy.sparse.csr_matrix, shape (n1, n2)
            The derivative of the plan density on the pattern Omega_+ (plus ``A``).

        Raises
        ------
        ValueError
            If ``h1``/``h2`` have the wrong length or hold NaN/inf, if eps = 0 and the direction
            does not keep the masses equal, or if ``A`` is malformed, out of range or not
            contained in Omega_0.
        """
        n1, n2 = self.plan.shape
        rtol = mass_rtol(h1, h2)
        h1 = as_vector(h1, "h1", length=n1)
        h2 = as_vector(h2, "h2", length=n2)
        if self.eps == 0.0:
            a, b = float(self.w1 @ h1), float(self.w2 @ h2)
            size = float(self.w1 @ np.abs(h1) + self.w2 @ np.abs(h2))
            if abs(a - b) > rtol * size:
                raise ValueError(
                    f"h1 and h2 must change the masses equally when eps = 0: sum w1*h1 = {a:.6g} != "
                    f"sum w2*h2 = {b:.6g} (S is defined only on marginals of equal mass; use eps > 0 "
                    f"for unbalanced perturbations)")
        K, ip, ind = self._system(A)
        rhs = np.concatenate([self.w1 * h1, self.w2 * h2])
        eta, _ = K.solve(rhs, self.linear_solver, rtol=1e-13)
        rows = np.repeat(np.arange(n1), np.diff(ip))
        vals = eta[rows] + eta[n1 + ind]
        return sp.csr_matrix((vals, ind, ip), shape=(n1, n2))

    def _dual_solver(self, A):
        """``(solve, ncomp, label)`` for the Newton matrix on Omega_+ ∪ A, cached for A = None.

        ``solve(rhs)`` applies K^{-1} (sparse LU, factorized once, for small or sparse
        systems; Jacobi-PCG on the Schur complement otherwise); ``label`` are the connected
        components of the pattern (rows first), computed for eps = 0 only.
        """
        cache = self.__dict__.get("_dual_cache")
        if A is None and cache is not None:
            return cache
        K, ip, ind = self._system(A)
        ncomp, label = 1, None
        if self.eps == 0.0:
            from femot.core.sensitivity import pattern_components

            ncomp, label = pattern_components(ip, ind, self.plan.shape[1])
        # one factorization serves every product at this solution (and eps = 0 makes K
        # singular along (1, -1), where CG on the Schur complement crawls): sparse LU unless
        # the pattern is too large to factorize
        method = self.get("linear_solver", "auto")
        direct = method == "direct" or (method == "auto" and K.nnz <= _DUAL_LU_MAX_NNZ)
        lu = None
        if direct:
            import scipy.sparse.linalg as spla

            try:
                lu = spla.splu(K.sparse(), permc_spec="MMD_AT_PLUS_A")
            except RuntimeError:  # numerically singular pivot: CG copes (K is PSD)
                lu = None
        if lu is not None:
            solve = lu.solve
        else:
            def solve(rhs):
                return K.solve(rhs, "cg", rtol=1e-13)[0]
        out = (solve, ncomp, label)
        if A is None:
            self.__dict__["_dual_cache"] = out
        return out

    @cite("III")
    def dual_jvp(self, h1, h2, A=None):
        """Derivative ``(dalpha, dbeta)`` of the dual potentials along marginal directions (h1, h2).

        Differentiates the (doubly) regularized dual system of Part III
        (3.1) (weighted),

            sum_j w2_j (alpha_i + beta_j - c_ij)_+ + gamma*eps*alpha_i = gamma*mu1_i
            sum_i w1_i (alpha_i + beta_j - c_ij)_+ + gamma*eps*beta_j  = gamma*mu2_j,

        on the active pattern ``Omega_+`` (plus a chosen ``A ⊂ Omega_0`` at kinks, as
        in :meth:`jvp`, Part III Thm 3.11 / 3.12): ``(dalpha, dbeta)`` solves

            K (dalpha, dbeta) = gamma * (w1 * h1, w2 * h2),

        with ``K`` the symmetric Newton matrix (the Hessian of ``-gamma*Phi``).  One sparse
        solve, the same matrix as :meth:`jvp` (whose plan derivative is
        ``chi ∘ (dalpha (+) dbeta) / gamma``).  Since ``w1 * alpha`` is the gradient of the
        optimal value V(mu1, mu2) = max Phi with respect to mu1 (envelope theorem), this
        gives Hessian-vector products of V: ``d(w1 * alpha) = w1 * dalpha``.

        eps = 0: the potentials are unique only up to ``(alpha + t, beta - t)`` (per
        connected component of the active pattern), so the directions must preserve mass,
        ``<w1, h1> = <w2, h2>`` (ValueError otherwise), and the returned derivative is the
        one of the normalized potentials with equal weighted means on every connected
        component C of the pattern: ``<w1, dalpha>_C / |w1|_C = <w2, dbeta>_C / |w2|_C``.
        If the pattern is disconnected (degenerate points only) and (h1, h2) does not
        balance the mass on each component, no derivative exists along (h1, h2) (the
        support must change); the direction is then balanced on each component C by a
        constant correction ``(h1 - s_C, h2 + s_C)`` before the solve.  eps > 0: the
        solution is unique and any direction is allowed.

        Parameters
        ----------
        h1 : array_like, shape (n1,)
            Direction of the first marginal.
        h2 : array_like, shape (n2,)
            Direction of the second marginal.
        A : tuple of two int arrays or None, optional
            A subset ``(rows, cols)`` of the biactive set Omega_0 joined to the pattern, as in
            :meth:`jvp`; None (default) uses Omega_+ alone.

        Raises
        ------
        ValueError
            If ``h1``/``h2`` have the wrong length or hold NaN/inf, if eps = 0 and
            ``<w1, h1> != <w2, h2>`` (relative 1e-10), or if ``A`` is not a subset of Omega_0.

        Returns
        -------
        dalpha : ndarray (n1,), dbeta : ndarray (n2,)
        """
        n1, n2 = self.plan.shape
        h1 = as_vector(h1, "h1", length=n1)
        h2 = as_vector(h2, "h2", length=n2)
        w1, w2 = self.w1, self.w2
        if self.eps == 0.0:
            imbalance = float(w1 @ h1 - w2 @ h2)
            size = float(np.abs(w1 * h1).sum() + np.abs(w2 * h2).sum())
            if abs(imbalance) > 1e-10 * max(size, 1e-300):
                raise ValueError(f"h1, h2 must preserve mass when eps = 0 (<w1, h1> - <w2, h2> = {imbalance:.3e}): "
                                 f"the potentials are defined only on equal masses")
        rhs = self.gamma * np.concatenate([w1 * h1, w2 * h2])
        with kernels.threads_for(int(self.plan.nnz) * 8):
            solve, ncomp, label = self._dual_solver(A)
            if self.eps == 0.0:
                sign = np.concatenate([np.ones(n1), -np.ones(n2)])
                wt = np.concatenate([w1, w2])
                # the range of K is orthogonal to every kernel vector (1 on the rows, -1 on the
                # columns of one component): remove the (rounding-level) inconsistent part
                bal = np.bincount(label, sign * rhs, minlength=ncomp)
                mass = np.bincount(label, wt, minlength=ncomp)
                rhs = rhs - (bal / mass)[label] * wt * sign
            d = solve(rhs)
        if self.eps == 0.0:
            # fix the free shift on every component: equal weighted means of both parts
            mean1 = np.bincount(label[:n1], w1 * d[:n1], minlength=ncomp)
            mean2 = np.bincount(label[n1:], w2 * d[n1:], minlength=ncomp)
            m1w = np.bincount(label[:n1], w1, minlength=ncomp)
            m2w = np.bincount(label[n1:], w2, minlength=ncomp)
            both = (m1w > 0) & (m2w > 0)
            # only components with both rows and columns have the (1, -1) freedom
            t = np.zeros(ncomp)
            t[both] = 0.5 * (mean1[both] / m1w[both] - mean2[both] / m2w[both])
            d = d - sign * t[label]
        return d[:n1].copy(), d[n1:].copy()

    def dual_value(self, mu1, mu2) -> float:
        """The dual objective Phi(alpha, beta) of docs/core.md at the computed potentials.

        ``Phi = <w1, alpha mu1> + <w2, beta mu2> - gamma/2 sum_ij w1_i w2_j pi_ij^2
        - eps/2 (<w1, alpha^2> + <w2, beta^2>)`` with ``pi = (alpha (+) beta - c)_+ / gamma``;
        ``mu1, mu2`` are the marginals of the solve.  At the solution this is the optimal
        value V(mu1, mu2) of the (doubly) regularized problem (strong duality; for eps = 0
        the primal value ``sum w1 w2 (c pi + gamma/2 pi^2)``); for any potentials it is a
        lower bound of V.

        Parameters
        ----------
        mu1 : array_like, shape (n1,)
            The first marginal of the solve (nodal values).
        mu2 : array_like, shape (n2,)
            The second marginal of the solve.

        Returns
        -------
        float
            The dual objective at ``(alpha, beta)``.

        Raises
        ------
        ValueError
            If ``mu1``/``mu2`` have the wrong length or hold NaN/inf.
        """
        n1, n2 = self.plan.shape
        m1 = as_vector(mu1, "mu1", length=n1)
        m2 = as_vector(mu2, "mu2", length=n2)
        P = self.plan.tocoo()
        sq = float(np.sum(self.w1[P.row] * self.w2[P.col] * P.data * P.data))
        a, b = self.alpha, self.beta
        val = float(self.w1 @ (a * m1) + self.w2 @ (b * m2)) - 0.5 * self.gamma * sq
        if self.eps > 0:
            val -= 0.5 * self.eps * float(self.w1 @ (a * a) + self.w2 @ (b * b))
        return val

    @cite("III")
    def vjp(self, G, A=None):
        """Adjoint of the plan derivative: gradients of ``<G, pi>`` w.r.t. (mu1, mu2).

        ``<G, pi> = sum_ij G_ij pi_ij`` (entrywise).  Following Part III
        Prop. 3.14: with b = (row sums, column sums) of ``G`` masked to
        ``Omega_+ ∪ A``, ``(p1, p2) = diag(w1, w2) K^{-1} b``.  For a smooth
        upper objective J(pi, mu1), ``p1 + grad_mu1 J`` is a Clarke subgradient
        of the reduced objective.  One sparse solve.

        Parameters
        ----------
        G : array_like or scipy.sparse matrix, shape (n1, n2)
            The weight of the linear functional ``<G, pi>``, e.g. the gradient of an upper-level
            objective with respect to the plan; only its entries on the pattern are read.
        A : tuple of two int arrays or None, optional
            A subset ``(rows, cols)`` of the biactive set Omega_0 joined to the pattern, as in
            :meth:`jvp`; None (default) uses Omega_+ alone.

        Returns
        -------
        p1 : numpy.ndarray, shape (n1,)
            Gradient of ``<G, pi>`` with respect to ``mu1``.
        p2 : numpy.ndarray, shape (n2,)
            Gradient of ``<G, pi>`` with respect to ``mu2``.

        Raises
        ------
        ValueError
            If ``G`` has the wrong shape or NaN/inf entries on the pattern, or ``A`` is invalid.
        """
        n1, n2 = self.plan.shape
        K, ip, ind = self._system(A)
        rows = np.repeat(np.arange(n1), np.diff(ip))
        if sp.issparse(G):
            if G.shape != (n1, n2):
                raise ValueError(f"G has shape {G.shape}, expected {(n1, n2)}")
            # G restricted to the (row-sorted) pattern, matched through linear keys
            H = sp.csr_matrix(G).tocoo()
            keys = rows.astype(np.int64) * n2 + ind
            hk = H.row.astype(np.int64) * n2 + H.col
            pos = np.searchsorted(keys, hk)
            pos = np.minimum(pos, max(keys.size - 1, 0))
            hit = keys.size > 0
            Gv = np.zeros(keys.size)
            if hit:
                ok = keys[pos] == hk
                np.add.at(Gv, pos[ok], H.data[ok].astype(float))
        else:
            G = np.asarray(G, dtype=float)
            if G.shape != (n1, n2):
                raise ValueError(f"G has shape {G.shape}, expected {(n1, n2)}")
            Gv = G[rows, ind]
        if not np.all(np.isfinite(Gv)):
            raise ValueError("G contains NaN or infinite entries")
        b = np.concatenate([np.bincount(rows, Gv, minlength=n1), np.bincount(ind, Gv, minlength=n2)])
        u, _ = K.solve(b, self.linear_solver, rtol=1e-13)
        return self.w1 * u[:n1], self.w2 * u[n1:]

    def transport_cost(self, c=None) -> float:
        """Unregularized transport cost ``sum_ij w1_i w2_j c_ij pi_ij`` of the plan.

        Parameters
        ----------
        c : array_like or None, optional
            A dense cost matrix of shape ``(n1, n2)`` to evaluate the plan with; None (default)
            uses the cost of the solve.

        Returns
        -------
        float
            The weighted cost of the computed plan.
        """
        P = self.plan.tocoo()
        cv = self._cost.entries(P.row, P.col) if c is None else np.asarray(c)[P.row, P.col]
        return float(np.sum(self.w1[P.row] * self.w2[P.col] * cv * P.data))


class _Engine:
    """Streaming passes with safe screening.

    After a dense pass keeps the working set W = {z > -delta}, every entry
    outside W stays inactive as long as the potentials move by less than delta
    in total (|dz_ij| <= |d alpha_i| + |d beta_j|).  Passes then run over W
    only, and the result is exact, not a heuristic.  W is rebuilt with a
    smaller margin when the budget is used up.
    """

    def __init__(self, cost, w1, w2, screening=True, max_fraction=0.3):
        self.cost, self.w1, self.w2 = cost, w1, w2
        self.n1, self.n2 = cost.shape
        # a cost whose passes already search only the pairs above the threshold (a
        # GeometricCost's k-d tree) gains nothing from a screening band
        self.screening = bool(screening) and hasattr(cost, "candidates") and getattr(cost, "screening", True)
        self.max_fraction = max_fraction
        self.ws = None
        self.slack = 0.0
        self.failed_delta = np.inf
        self.dense_passes = 0
        self.nchunk = kernels.num_chunks(self.n1)

    def prepare(self, alpha, beta, reach):
        """Make exact evaluation possible for any move of size <= reach."""
        if not self.screening or (self.ws is not None and reach <= self.slack):
            return
        delta = 2.0 * reach
        if delta >= 0.5 * self.failed_delta or not np.isfinite(delta) or delta <= 0:
            self.ws = None
            return
        self.dense_passes += 1
        ws = self.cost.candidates(alpha, beta, -delta, max_count=self.max_fraction * self.n1 * self.n2)
        if ws is None:
            self.ws, self.failed_delta = None, delta
        else:
            self.ws, self.slack, self.failed_delta = ws, delta, np.inf

    def moved(self, amount):
        self.slack -= amount

    def evaluate(self, alpha, beta, da=None, db=None, t=0.0):
        if da is None:
            da, db = np.zeros_like(alpha), np.zeros_like(beta)
        if self.ws is None:
            self.dense_passes += 1
            return self.cost.evaluate(alpha, beta, self.w1, self.w2, da, db, t)
        ip, ind, cv = self.ws
        return kernels.ws_evaluate(ip, ind, cv, self.n2, alpha, beta, da, db, float(t), self.w1, self.w2,
                                   self.nchunk)

    def active(self, alpha, beta, count):
        if self.ws is None:
            self.dense_passes += 1
            return self.cost.active(alpha, beta, count)
        ip, ind, cv = self.ws
        return kernels.ws_active(ip, ind, cv, alpha, beta, 0.0)

    def line_candidates(self, alpha, beta, da, db):
        """Candidates of the exact line search, or None when they would not fit the memory budget."""
        if self.ws is None:
            self.dense_passes += 1
            return self.cost.line_candidates(alpha, beta, da, db, 1.0, self.w1, self.w2,
                                             max_count=self.max_fraction * self.n1 * self.n2)
        ip, ind, cv = self.ws
        return kernels.ws_line_candidates(ip, ind, cv, alpha, beta, da, db, 1.0, self.w1, self.w2)


def _is_monge(cost):
    if hasattr(cost, "is_monge"):
        return bool(cost.is_monge())
    return hasattr(cost, "dense") and kernels.is_monge(cost.dense(), 1e-12 * max(cost.max_abs, 1.0))


def _level(alpha, beta, m1, m2, w1, w2, gamma, eps, clip=False):
    """Best shift along the (1, -1) direction, which leaves alpha (+) beta unchanged.

    Maximizes the dual over s in (alpha - s, beta + s): the eps-terms of (3.1)
    then balance the masses, <w1, mu1 - eps alpha> = <w2, mu2 - eps beta>
    (eps = 0: equal weighted means, the recentering of the solver).
    """
    dm = gamma * (w2 @ m2 - w1 @ m1) / (gamma * eps) if eps > 0 else 0.0
    s = (dm + w1 @ alpha - w2 @ beta) / (w1.sum() + w2.sum())
    if clip and eps > 0:
        # rows that cannot carry mass drop out: balance the clipped masses,
        # F(s) = <w1, (mu1 - eps (alpha - s))_+> - <w2, (mu2 - eps (beta + s))_+> = 0,
        # F nondecreasing in s (bracket by doubling, then bisection)
        def F(t):
            return (w1 @ np.maximum(m1 - eps * (alpha - t), 0.0)
                    - w2 @ np.maximum(m2 - eps * (beta + t), 0.0))
        step = 1.0 + abs(s)
        lo, hi = s, s
        for _ in range(200):
            if F(lo) <= 0:
                break
            lo -= step
            step *= 2
        step = 1.0 + abs(s)
        for _ in range(200):
            if F(hi) >= 0:
                break
            hi += step
            step *= 2
        if F(lo) <= 0 <= F(hi):
            for _ in range(100):
                mid = 0.5 * (lo + hi)
                if mid in (lo, hi):
                    break
                if F(mid) < 0:
                    lo = mid
                else:
                    hi = mid
            s = 0.5 * (lo + hi)
    return alpha - s, beta + s


def _monge_start(cost, m1, m2, w1, w2, gamma, eps, sweeps=30, start=None):
    """Cold start for Monge costs: staircase potentials for the eps-corrected marginals.

    In (3.1) the rows carry the mass ``mu1 - eps*alpha`` (columns ``mu2 - eps*beta``);
    with |alpha| ~ max|c| this shift is not small, so the exact OT support of
    (mu1, mu2) can differ globally from the regularized one.  Fixed point in
    O(n1 + n2) per sweep: north-west corner plan P of the corrected marginals
    (clipped at 0, rebalanced), potentials with ``z = gamma * pi`` on its
    staircase (``kernels.northwest_corner_potentials``), best (1, -1) level.
    Rows that cannot carry mass (mu1_i - eps*alpha_i < 0) are inactive at the
    solution with alpha_i = mu1_i / eps, so alpha is capped there.  The sweeps
    stop at a fixed point or after ``sweeps``; each is O(n1 + n2), so many are
    cheap (at n = 500 with eps*max|c| ~ 1e-3 the residual falls from 5e-6 after
    3 sweeps to 1e-7 after 10, where a Newton step from the 3-sweep point
    scrambles the active set).  Among the exact OT duals and a few of the sweeps
    (the first ones, powers of two, the last) the point with the smallest
    residual of (3.1) is returned (one dense pass each), with a flag telling
    whether it came from a sweep.  The sweeps put z = gamma * pi on the staircase, so the
    solver's first Newton matrix is then the true active set (no band).  With ``start`` (a warm start) the sweeps begin
    from it instead of the exact duals, and it competes in the selection.
    """
    c = cost.kernel_operand if hasattr(cost, "kernel_operand") else cost.dense()  # read on the staircase only
    cand = []
    if start is None:
        a, b = w1 * m1, w2 * m2
        al, be = kernels.northwest_corner_duals(c, a / a.sum(), b / b.sum())
        cand.append(_level(al, be, m1, m2, w1, w2, gamma, eps))
    else:
        cand.append(start)
    if eps == 0.0 and start is None:
        # no eps-correction to make: the exact duals (with the first-step band) are
        # the start, and the sweep's dense residual passes would only cost time
        return cand[0][0], cand[0][1], False
    for _ in range(sweeps if eps > 0 else 1):
        al, be = cand[-1]
        a = w1 * np.maximum(m1 - eps * al, 0.0)
        b = w2 * np.maximum(m2 - eps * be, 0.0)
        if not (a.sum() > 0 and b.sum() > 0):
            break
        tot = 0.5 * (a.sum() + b.sum())
        al, be = kernels.northwest_corner_potentials(c, a * (tot / a.sum()), b * (tot / b.sum()), gamma, w1, w2)
        al, be = _level(al, be, m1, m2, w1, w2, gamma, eps, clip=True)
        if eps > 0:
            al, be = np.minimum(al, m1 / eps), np.minimum(be, m2 / eps)
        if not (np.all(np.isfinite(al)) and np.all(np.isfinite(be))):
            break
        cand.append((al, be))
        if np.array_equal(al, cand[-2][0]) and np.array_equal(be, cand[-2][1]):
            break
    kappa = gamma * eps

    def residual(x):
        rs, cs = cost.evaluate(x[0], x[1], w1, w2)[:2]
        return max(float(np.abs((rs + kappa * x[0]) / gamma - m1).max()),
                   float(np.abs((cs + kappa * x[1]) / gamma - m2).max()))

    last = len(cand) - 1
    checked = sorted(set(range(min(4, last))) | {2 ** p for p in range(2, 6) if 2 ** p < last} | {last})
    k = min(checked, key=lambda i: residual(cand[i]))
    return cand[k][0], cand[k][1], k > 0


def _coarse_start(cost, m1, m2, w1, w2, gamma, eps):
    """Potentials solved on coarsened point sets (``init='coarse'``), or None.

    Only for a :class:`~femot.core.cost.GeometricCost` with more than ``COARSE_START_MIN``
    points on a side (levels of about 4 times fewer points down to ``COARSE_START_MIN / 2``,
    gamma coupled to each level, :func:`femot.core.coarsening.coarse_start`); the levels
    solved are kept in ``cost.last_coarse_levels``.
    """
    if not isinstance(cost, GeometricCost) or max(cost.shape) <= COARSE_START_MIN:
        return None
    out = coarse_start(cost.x1, cost.x2, m1, m2, gamma, w1, w2, p=cost.p, eps=eps,
                       coarsest=max(2, COARSE_START_MIN // 2), solver=solve_qrot)
    if out is None:
        return None
    cost.last_coarse_levels = out[2]
    return out[0], out[1]


def _auto_init(cost) -> str:
    """The cold start ``init='auto'`` resolves to (before any fallback)."""
    n1, n2 = cost.shape
    if _is_monge(cost):
        return "monge"
    if n1 * n2 <= 40000 and hasattr(cost, "dense"):
        return "exact"
    if isinstance(cost, GeometricCost) and max(n1, n2) > COARSE_START_MIN:
        return "coarse"  # point costs: potentials from coarsened point sets
    return "mean"


def _initial_point(cost, m1, m2, w1, w2, gamma, eps, init):
    n1, n2 = cost.shape
    if init == "auto":
        init = _auto_init(cost)
    if init == "coarse":
        start = _coarse_start(cost, m1, m2, w1, w2, gamma, eps)
        if start is not None:
            return start[0], start[1], "coarse"
        init = "mean"
    if init == "monge":
        # Monge costs (e.g. h(x - y), h convex, on sorted 1D points): the
        # north-west corner rule is an optimal plan and its staircase gives
        # exact dual potentials in O(n1 + n2).
        mass1, mass2 = float(w1 @ m1), float(w2 @ m2)
        if mass1 > 0 and mass2 > 0:
            al, be, swept = _monge_start(cost, m1, m2, w1, w2, gamma, eps)
            return al, be, "monge" if swept else "monge-duals"
        init = "mean"
    if init == "exact":
        from femot.core.exact import exact_ot

        mass1, mass2 = float(w1 @ m1), float(w2 @ m2)
        if mass1 > 0 and mass2 > 0:
            # Exact OT needs equal masses; balance a copy (only a starting point).
            r = exact_ot(cost.dense(), m1 / mass1, m2 / mass2, w1, w2)
            if r.success:
                return r.alpha.copy(), r.beta.copy(), "exact"
        init = "mean"
    if init == "zero":
        return np.zeros(n1), np.zeros(n2), "zero"
    if init == "mean":
        # Closed-form solution when every pair is active: it puts every row and
        # column in contact with its cheaper partners.
        W1, W2 = float(w1.sum()), float(w2.sum())
        kappa = gamma * eps
        if hasattr(cost, "weighted_sums"):
            cw2, cw1 = cost.weighted_sums(w1, w2)
        else:
            c = cost.dense()
            cw2, cw1 = c @ w2, w1 @ c
        # alpha_i (W2 + kappa) + <w2, beta> = gamma m1_i + (c w2)_i, same for beta.
        # Choose the split <w1,alpha> = <w2,beta> (any works when kappa = 0).
        sa = (gamma * (w1 @ m1) + w1 @ cw2) / (2 * W2 + kappa) if W2 + kappa > 0 else 0.0
        alpha = (gamma * m1 + cw2 - sa) / (W2 + kappa)
        sb = w1 @ alpha
        beta = (gamma * m2 + cw1 - sb) / (W1 + kappa)
        return alpha, beta, "mean"
    raise ValueError(f"init must be 'auto', 'monge', 'exact', 'mean', 'coarse' or 'zero', got {init!r}")


def _exact_line_search(z, dz, ws, q0, q1, lin, tmax=1.0):
    """Root in (0, tmax] of phi'(t) = sum ws (z + t dz)_+ dz + q0 + t q1 - lin.

    phi' is nondecreasing and piecewise linear with breakpoints -z/dz.  Up to a
    few hundred thousand candidates the root is found exactly from the sorted
    breakpoints; beyond, by a bracketing Newton/secant iteration (each step one
    vectorized pass, no sort).
    """
    if z.size > 200_000:
        return _bracketed_root(z, dz, ws, q0, q1, lin, tmax)
    if z.size == 0:
        return tmax if q1 <= 0 else min(tmax, (lin - q0) / q1)
    act0 = (z > 0) | ((z == 0) & (dz > 0))
    A0 = float(np.sum(ws[act0] * z[act0] * dz[act0]))
    A1 = float(np.sum(ws[act0] * dz[act0] ** 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        tb = -z / dz
    cross = (dz != 0) & (tb > 0) & (tb < tmax)
    idx = np.nonzero(cross)[0]
    order = idx[np.argsort(tb[idx], kind="stable")]
    tbs = tb[order]
    sgn = np.where(dz[order] > 0, 1.0, -1.0)  # entering (+) or leaving (-)
    dA0 = np.concatenate([[A0], sgn * ws[order] * z[order] * dz[order]]).cumsum()
    dA1 = np.concatenate([[A1], sgn * ws[order] * dz[order] ** 2]).cumsum()
    right = np.concatenate([tbs, [tmax]])
    vals = dA0 + right * dA1 + q0 + right * q1 - lin
    k = int(np.argmax(vals > 0)) if np.any(vals > 0) else right.size - 1
    if vals[k] <= 0:
        return tmax
    slope = dA1[k] + q1
    left = 0.0 if k == 0 else right[k - 1]
    if slope <= 0:
        return max(left, 1e-16)
    t = (lin - q0 - dA0[k]) / slope
    return float(min(max(t, left), right[k]))


def _streamed_root(dphi, f0, f1, rtol=1e-3, max_eval=30):
    """Approximate root in (0, 1) of a nondecreasing phi' from values only (Illinois regula falsi).

    Used only when the line-search candidates would not fit in memory (early,
    far-from-solution iterations of large problems), where a loose root suffices.
    """
    lo, hi, flo, fhi = 0.0, 1.0, f0, f1
    side = 0
    t = 0.0
    for _ in range(max_eval):
        t = (lo * fhi - hi * flo) / (fhi - flo)
        ft = dphi(t)
        if abs(ft) <= rtol * abs(f0):
            return t
        if ft < 0:
            lo, flo = t, ft
            if side == -1:
                fhi *= 0.5
            side = -1
        else:
            hi, fhi = t, ft
            if side == 1:
                flo *= 0.5
            side = 1
    return lo


def _bracketed_root(z, dz, ws, q0, q1, lin, tmax, rtol=1e-13, max_eval=100):
    """Root of the piecewise linear phi' by Newton steps from the left, secant safeguard."""
    def dphi(t):
        val, slope = kernels.line_derivative(z, dz, ws, float(t))
        return val + q0 + t * q1 - lin, slope + q1

    flo, slo = dphi(0.0)
    if flo >= 0:
        return 0.0
    fhi, _ = dphi(tmax)
    if fhi <= 0:
        return tmax
    lo, hi = 0.0, tmax
    scale = abs(flo)
    for _ in range(max_eval):
        t = lo - flo / slo if slo > 0 else np.inf
        if not (lo < t < hi):
            t = 0.5 * (lo + hi) if not (fhi > flo) else (lo * fhi - hi * flo) / (fhi - flo)
            if not (lo < t < hi):
                t = 0.5 * (lo + hi)
        ft, st = dphi(t)
        if abs(ft) <= rtol * scale or hi - lo <= 1e-15 * tmax:
            return float(t)
        if ft < 0:
            lo, flo, slo = t, ft, st
        else:
            hi, fhi = t, ft
    return float(lo)


class _SemiDual:
    """The dual restricted to a candidate set S, and its semi-duals along a direction.

    Part III (3.1) is separable in each alpha_i once beta is fixed (and vice
    versa): maximizing Phi over alpha alone gives the concave, C^1 semi-dual
    psi(beta) whose gradient is the column residual (Danskin).  Along
    ``beta + t*dbeta`` with every row re-solved exactly (``kernels.semidual_rows``)
    rows may leave one column for another *during* the step; on the straight line
    alpha_i moves linearly and the exact line search stops at the first such kink.
    ``S`` must hold every entry positive at any evaluated point; callers verify
    that through ``delta`` (entries outside S are <= -delta at the start).
    """

    def __init__(self, ip, ind, cv, n2, w1, w2, m1, m2, gamma, kappa):
        self.n1, self.n2 = ip.size - 1, n2
        self.ip, self.ind, self.cv = ip, ind, cv
        self.rows = np.repeat(np.arange(self.n1), np.diff(ip))
        self.w1, self.w2, self.m1, self.m2 = w1, w2, m1, m2
        self.gamma, self.kappa = gamma, kappa
        self.nchunk = kernels.num_chunks(max(self.n1, n2))
        self._csc = None

    def phi(self, a, b):
        """gamma * Phi(a, b), Phi the dual objective (concave; maximized by the solution)."""
        z = np.maximum(a[self.rows] + b[self.ind] - self.cv, 0.0)
        zsq = float(np.sum(self.w1[self.rows] * self.w2[self.ind] * z * z))
        return self._value(a, b, zsq)

    def residual(self, a, b):
        """Max-norm residual of (3.1) (units of mu) at (a, b)."""
        z = np.maximum(a[self.rows] + b[self.ind] - self.cv, 0.0)
        rs = np.bincount(self.rows, self.w2[self.ind] * z, minlength=self.n1)
        cs = np.bincount(self.ind, self.w1[self.rows] * z, minlength=self.n2)
        r1 = (rs + self.kappa * a) / self.gamma - self.m1
        r2 = (cs + self.kappa * b) / self.gamma - self.m2
        return max(float(np.abs(r1).max()), float(np.abs(r2).max()))

    def _value(self, a, b, zsq):
        k, g = self.kappa, self.gamma
        return (g * (self.w1 @ (self.m1 * a) + self.w2 @ (self.m2 * b)) - 0.5 * zsq
                - 0.5 * k * (self.w1 @ (a * a) + self.w2 @ (b * b)))

    def search(self, side, alpha, beta, da, db, within, t_min=0.0):
        """Maximize the semi-dual psi(t) on [t_min, 1]; side 'rows' re-solves alpha
        along beta + t db, side 'cols' re-solves beta along alpha + t da.

        psi' is nonincreasing and piecewise linear: bracketed Newton with
        bisection safeguard.  Only points accepted by ``within(a, b)`` (exactness
        of S) are returned.  Returns (value, alpha, beta, t, evaluations), or None
        when the maximum is not beyond t_min.
        """
        g, k = self.gamma, self.kappa
        if side == "rows":
            ptr, idx, val, ny = self.ip, self.ind, self.cv, self.n2
            x, y, dy, wx, wy, mx, my = alpha, beta, db, self.w1, self.w2, self.m1, self.m2
        else:
            if self._csc is None:
                T = sp.csr_matrix((self.cv, self.ind, self.ip), shape=(self.n1, self.n2)).tocsc()
                T.sort_indices()
                self._csc = (T.indptr.astype(np.int64), T.indices.astype(np.int32), T.data)
            ptr, idx, val = self._csc
            ny = self.n1
            x, y, dy, wx, wy, mx, my = beta, alpha, da, self.w2, self.w1, self.m2, self.m1
        rhs = g * mx
        best = None
        guess = x

        def evaluate(t):
            nonlocal best, guess
            xt, ysum, yslope, zsq = kernels.semidual_rows(ptr, idx, val, ny, y, dy, float(t), guess, wx, wy,
                                                          k, rhs, self.nchunk)
            yt = y + t * dy
            guess = xt
            d1 = float(wy @ (dy * (g * my - ysum - k * yt)))
            d2 = -float(wy @ (dy * (yslope + k * dy)))
            value = (g * (wx @ (mx * xt) + wy @ (my * yt)) - 0.5 * zsq
                     - 0.5 * k * (wx @ (xt * xt) + wy @ (yt * yt)))
            pt = (xt, yt) if side == "rows" else (yt, xt)
            if np.isfinite(value) and (best is None or value > best[0]) and within(*pt):
                best = (value, pt[0], pt[1], float(t))
            return d1, d2

        # psi is concave: one evaluation at t_min tells whether its maximum on
        # [0, 1] lies beyond t_min (the usual answer is no, and this is all it costs)
        nev = 1
        f0, s0 = evaluate(t_min)
        if not f0 > 0:
            return None
        if t_min < 1.0:
            nev += 1
            f1, s1 = evaluate(1.0)
            if f1 < 0:
                # psi' is a staircase (steep while a row switches columns, flat
                # in between): Newton from the endpoint moved last, exact on the
                # root's linear piece; bisection whenever the bracket did not halve.
                lo, flo, slo, hi, fhi, shi = t_min, f0, s0, 1.0, f1, s1
                last, halve = 0, False
                while nev < 60 and hi - lo > 1e-15:
                    t = np.inf
                    if not halve:
                        if last >= 0 and slo < 0:
                            t = lo - flo / slo
                        elif last < 0 and shi < 0:
                            t = hi - fhi / shi
                        if not lo < t < hi:
                            t = (lo * fhi - hi * flo) / (fhi - flo)
                    if not lo < t < hi:
                        t = 0.5 * (lo + hi)
                    width = hi - lo
                    ft, st = evaluate(t)
                    nev += 1
                    if abs(ft) <= 1e-13 * abs(f0):
                        break
                    if ft > 0:
                        lo, flo, slo, last = t, ft, st, 1
                    else:
                        hi, fhi, shi, last = t, ft, st, -1
                    halve = hi - lo > 0.5 * width
        if best is None:
            return None
        return best + (nev,)


def _curved_step(engine, cost, alpha, beta, da, db, t_lin, move, m1, m2, w1, w2, gamma, kappa, nnz):
    """Best of the straight exact line search and the two semi-dual searches.

    Every candidate's dual value is at least that of the straight point (the
    semi-dual dominates the dual along the same t), so global convergence of the
    damped Newton method is kept; the curved paths let many rows (or columns)
    switch partners in one step.  Returns (alpha, beta, t, path) or None.

    Skipped when the candidate set would exceed ``_CURVE_BUDGET`` times the size of
    the active set (``nnz``) plus ``n1 + n2``: a move that large (a sparse plan
    far from the solution) makes each of the up to 60 semi-dual evaluations cost
    as much as several Newton iterations, and the straight step is then cheaper.
    """
    if _CURVE_FACTOR * t_lin >= 1.0:
        return None
    n1, n2 = cost.shape
    # small problems: the candidate set may be everything (a copy of c at most)
    budget = max(engine.max_fraction * n1 * n2, min(n1 * n2, 250_000))
    budget = min(budget, _CURVE_BUDGET * (nnz + n1 + n2))
    if engine.ws is not None and engine.slack >= 2.0 * move:
        if engine.ws[1].size > budget:
            return None
        (ip, ind, cv), delta = engine.ws, engine.slack
    elif hasattr(cost, "candidates") and np.isfinite(move) and move > 0:
        delta = 2.0 * move
        engine.dense_passes += 1
        cand = cost.candidates(alpha, beta, -delta, max_count=budget)
        if cand is None:
            return None
        ip, ind, cv = cand
    else:
        return None
    sd = _SemiDual(ip, ind, cv, n2, w1, w2, m1, m2, gamma, kappa)

    def within(a, b):
        return float(np.abs(a - alpha).max() + np.abs(b - beta).max()) < delta

    a_lin, b_lin = alpha + t_lin * da, beta + t_lin * db
    best_val = sd.phi(a_lin, b_lin)
    # a curved point must also not worsen the residual the stopping test uses
    res_cap = sd.residual(a_lin, b_lin) * (1.0 + 1e-6)
    # gains at the rounding level of Phi are noise, not progress
    best_val = max(best_val, sd.phi(alpha, beta)) + 1e-12 * abs(best_val)
    best = None
    for side in ("rows", "cols"):
        r = sd.search(side, alpha, beta, da, db, within, min(1.0, _CURVE_FACTOR * t_lin))
        if r is not None and r[3] > _CURVE_FACTOR * t_lin and r[0] > best_val and sd.residual(r[1], r[2]) <= res_cap:
            best_val, best = r[0], (r[1], r[2], r[3], side)
    return best


@cite("III", "LMM")
def solve_qrot(c, mu1, mu2, gamma, eps=0.0, w1=None, w2=None, *, x0=None, tol=1e-10, max_iter=200,
               init="auto", linear_solver="auto", lm=1e-4, screening=True, curve=True,
               verbose=False, callback=None) -> QROTResult:
    """Quadratically regularized optimal transport (docs/core.md; Part III (H_gamma), (3.1)).

    Parameters
    ----------
    c : array_like of shape (n1, n2) or Cost
        Cost matrix or cost object (see ``femot.core.cost``).
    mu1, mu2 : array_like, shapes (n1,) and (n2,)
        Nonnegative densities w.r.t. the weights ``w1``, ``w2``.  With
        eps = 0 their masses must agree to 1e-9 (relative; 16 machine epsilons
        of a lower-precision floating input such as float32), and mu2 is then
        rescaled to the mass of mu1 so the marginal equations are consistent.
    gamma : float
        Regularization parameter (> 0).
    eps : float, optional
        Dual Tikhonov parameter (>= 0, default 0); eps > 0 admits unequal masses.
    w1, w2 : array_like or None, optional
        Positive quadrature weights (default ones: the Hitchcock problem).
    x0 : tuple of two arrays or None, optional
        ``(alpha, beta)`` warm start.
    tol : float, optional
        Target for the residual ``max_i |sum_j w2_j pi_ij + eps alpha_i - mu1_i|``
        (and its twin), in the density units of mu (default 1e-10).  A residual above ``tol``
        but below the rounding floor (the accuracy double precision can
        certify at these potentials, see ``_active_floor``) counts as converged
        only when that floor is at most ``PRECISION_RTOL * max(mu1, mu2)``
        (1e-3 of the largest density); otherwise the result has status 4.
    max_iter : int, optional
        Largest number of Newton iterations (default 200).
    init : str, optional
        Cold start: 'auto' (default) picks 'monge' for Monge costs (north-west corner
        staircase potentials of the eps-corrected marginals, O(n) per sweep, see
        ``_monge_start``), 'exact' (LP duals) for n1*n2 <= 40000, 'coarse' for a
        cost with ``coarse_start`` (a GeometricCost with more than 4000 points on a
        side: potentials solved on coarsened point sets, ``femot.core.multiscale``),
        else 'mean' (closed form with every pair active); or 'zero'.  When 'auto' resolves to
        'mean' or 'coarse' and ``gamma M / (max|c| W1 W2) < 1e-4`` (M the mass, W1, W2 the total
        weights: the plan then has few entries per row), the cold start is a continuation
        instead: solves at ``gamma * 10^k, ..., gamma * 10``, the largest from that start, each
        further one from the previous potentials (the result's ``init`` is 'continuation', its ``continuation``
        lists the stages and ``nit_total`` counts their iterations too).  With ``x0`` and a Monge
        cost, 'auto'/'monge' also run the sweeps seeded by x0 and start from
        whichever has the smaller residual; 'x0' (or any other value) uses x0 as is.
    linear_solver : {'auto', 'direct', 'cg'}, optional
        Solver of the Newton systems: sparse LU, Jacobi-PCG, or chosen by size (default).
    lm : float, optional
        Initial and smallest Levenberg-Marquardt factor (shift = lm * gamma * residual;
        default 1e-4); the factor is raised after steps the line search cut short and
        lowered back after full steps.
    screening : bool, optional
        Restrict passes to a provably sufficient working set (exact; default True).
    curve : bool, optional
        When the exact line search stops early, also search along the
        semi-duals and keep the best point (does not change what a solution is; default True).
    verbose : bool, optional
        Print an iteration table (default False).
    callback : callable or None, optional
        Called as ``callback(entry)`` after every Newton iteration with a copy of that
        iteration's history entry (residual, step, active-set size, ...).

    Returns
    -------
    QROTResult
        Alpha, beta, plan (CSR), residual, residual_floor, success,
        status, message, nit, history, and the derivative methods jvp/vjp; after a
        continuation also ``continuation`` (per stage: gamma, nit, status, residual,
        init) and ``nit_total``.  ``time_s`` includes the stages.
        ``success`` is ``status in (0, 5)``; the codes (``STATUS_MESSAGES``) are

        * 0 converged: residual <= tol;
        * 1 maximum number of Newton iterations reached;
        * 2 line search failed (no descent along the Newton direction);
        * 3 non-finite values encountered;
        * 4 gamma too small for double precision at this cost scale: the rounding
          floor exceeds 1e-3 * max(mu1, mu2), so the plan cannot be resolved (the
          message names a gamma that would work).  Replaces 0, 1 and 2 then;
        * 5 accepted at the double-precision floor: tol < residual <= floor, and the
          floor is at most 1e-3 * max(mu1, mu2) (``success`` is True; the message
          gives residual, tol and floor).

    Raises
    ------
    ValueError
        If an argument is malformed: a cost that is not a finite matrix or cost object, marginals
        or weights of the wrong length or shape, complex, negative or non-finite, ``gamma <= 0``,
        gamma so large that the cost vanishes in the rounding of the potentials, ``eps < 0``, or
        unequal masses with eps = 0.
    """
    cost = as_cost(c)
    with kernels.threads_for(cost.shape[0] * cost.shape[1]):
        return _solve_qrot(cost, mu1, mu2, gamma, eps, w1, w2, x0=x0, tol=tol, max_iter=max_iter, init=init,
                           linear_solver=linear_solver, lm=lm, screening=screening, curve=curve,
                           verbose=verbose, callback=callback)


def _continuation_gammas(p: "_QROTData") -> list:
    """The decreasing gammas of the cold-start continuation (empty when none is needed).

    ``gamma_hat = gamma M / (C W1 W2)`` (M the mass, C = max|c|, W1, W2 the total
    weights) is the problem's dimensionless regularization: for ``|x - y|^2`` on a domain
    of diameter D in d dimensions the plan's support around a point has radius about
    ``D gamma_hat^(1/(d+2))``.  Above ``_CONT_GAMMA_HAT`` the 'mean' start (every pair
    active) is a good start; below it the plan has a few entries per row and Newton from
    'mean' first spends expensive iterations on a dense active set, then discovers the
    sparse one an entry at a time (and coarsened point sets, ``init='coarse'``, give
    potentials of a coarser plan that Newton then refines equally slowly).  The
    continuation solves at
    ``gamma * 10^k, ..., gamma * 10`` (the largest one at most a factor 10 below the
    threshold), each from the previous potentials.
    """
    mass = float(p.w1 @ p.m1)
    scale = float(p.cost.max_abs) * p.W1 * p.W2
    if not (mass > 0 and scale > 0):
        return []
    g0 = _CONT_GAMMA_HAT * scale / mass
    k = int(np.floor(np.log10(g0 / p.gamma))) if g0 > p.gamma else 0
    return [p.gamma * 10.0 ** j for j in range(min(k, _CONT_MAX_STAGES), 0, -1)]


class _Crawl(Exception):
    """Raised by a solve with ``crawl_limit`` once that many steps were cut short."""

    def __init__(self, nit):
        super().__init__(nit)
        self.nit = nit


def _solve_qrot(cost, mu1, mu2, gamma, eps, w1, w2, *, x0, tol, max_iter, init, linear_solver, lm, screening,
                curve, verbose, callback, crawl_limit=None) -> QROTResult:
    """The semismooth Newton loop: initialization, one iteration at a time, output."""
    p = _QROTData(cost, mu1, mu2, gamma, eps, w1, w2, tol=tol, max_iter=max_iter, linear_solver=linear_solver,
                  screening=screening, curve=curve)
    stages: list = []
    crawled = None
    gammas = _continuation_gammas(p) if x0 is None and init == "auto" else []
    if gammas and _auto_init(cost) in ("mean", "coarse"):
        # Cold start at small gamma.  The plain start first: on data in general position
        # it converges in a few full steps; when its steps are cut short (_CRAWL_STEPS
        # times), continuation from the gamma where the plan is wide (its first stage from
        # the plain start too: 'mean', or coarsened point sets for large ones).
        try:
            return _solve_qrot(cost, p.m1, p.m2, gamma, p.eps, p.w1, p.w2, x0=None, tol=tol, max_iter=max_iter,
                               init=_auto_init(cost), linear_solver=linear_solver, lm=lm, screening=screening,
                               curve=curve, verbose=verbose, callback=callback, crawl_limit=_CRAWL_STEPS)
        except _Crawl as crawl:
            crawled = crawl.nit
        stage_tol = max(tol, _CONT_RTOL * max(float(p.m1.max()), float(p.m2.max())))
        for g in gammas:
            r = _solve_qrot(cost, p.m1, p.m2, g, p.eps, p.w1, p.w2, x0=x0, tol=stage_tol, max_iter=max_iter,
                            init="auto" if x0 is None else "x0", linear_solver=linear_solver, lm=lm,
                            screening=screening, curve=curve, verbose=False, callback=None)
            stages.append({"gamma": g, "nit": int(r.nit), "status": int(r.status), "residual": float(r.residual),
                           "init": r.init})
            if np.all(np.isfinite(r.alpha)) and np.all(np.isfinite(r.beta)):
                x0 = (r.alpha, r.beta)
        if x0 is not None:
            init = "x0"
    st = _init_state(p, x0, init, lm)
    if stages:
        st.init_used = "continuation"
    if verbose:
        print(f"{'it':>4} {'residual':>11} {'floor':>9} {'step':>9} {'active':>9} {'lin':>5} {'shift':>9}")
    for nit in range(p.max_iter + 1):
        st.nit = nit
        entry = _stopping_test(p, st)
        if st.status is not None:
            st.history.append(entry)
            break
        outcome = _newton_iteration(p, st, entry)
        if outcome == "retry":  # no descent: a larger Levenberg-Marquardt shift next time
            continue
        if outcome == "failed":
            st.history.append(entry)
            break
        st.history.append(entry)
        if crawl_limit is not None and entry["step"] < _SHORT_STEP:
            crawl_limit -= 1
            if crawl_limit <= 0:
                raise _Crawl(nit + 1)
        if verbose:
            print(f"{nit:4d} {entry['residual']:11.3e} {entry['floor']:9.2e} {entry['step']:9.2e} "
                  f"{entry['nnz']:9d} {entry['linear_iters']:5d} {entry['shift']:9.2e}")
        if callback is not None:
            callback(dict(entry))
    if st.status is None:  # (not reached: the stopping test ends the loop at max_iter)
        st.status = 1
    out = _output(p, st)
    if stages:
        out.continuation = stages
        out.crawled = crawled  # iterations of the plain cold start before it was abandoned
        out.nit_total = out.nit + sum(s["nit"] for s in stages) + (crawled or 0)
    if verbose:
        print(f"{out.message} after {st.nit} iterations; residual {out.residual:.3e} "
              f"(floor {out.residual_floor:.2e})")
    return out


class _QROTData:
    """The validated data of one solve (fixed during the iteration) and its pass engine."""

    def __init__(self, cost, mu1, mu2, gamma, eps, w1, w2, *, tol, max_iter, linear_solver, screening, curve):
        n1, n2 = cost.shape
        m1 = as_nonnegative_vector(mu1, "mu1", length=n1)
        m2 = as_nonnegative_vector(mu2, "mu2", length=n2)
        self.gamma = check_positive_scalar(gamma, "gamma")
        self.eps = check_nonnegative_scalar(eps, "eps")
        rtol_mass = mass_rtol(mu1, mu2, w1, w2)  # float32 input: its own rounding (before the casts)
        w1 = as_positive_weights(w1, "w1", n1)
        w2 = as_positive_weights(w2, "w2", n2)
        if self.eps == 0.0:
            # equal masses up to the input's precision; mu2 rebalanced to mu1's mass
            m2 = check_equal_mass(m1, w1, m2, w2, rtol=rtol_mass)
        check_qrot_data(mu1, mu2, self.gamma, cost.max_abs, m1, m2, w1, w2)  # shapes, gamma's upper range
        self.tol = check_positive_scalar(tol, "tol")
        self.max_iter = int(max_iter)
        if self.max_iter < 0:
            raise ValueError(f"max_iter must be >= 0, got {self.max_iter}")
        self.cost, self.n1, self.n2 = cost, n1, n2
        self.m1, self.m2, self.w1, self.w2 = m1, m2, w1, w2
        self.kappa = self.gamma * self.eps
        self.W1, self.W2 = float(w1.sum()), float(w2.sum())
        self.linear_solver, self.screening, self.curve = linear_solver, screening, curve
        self.t_start = time.perf_counter()

    def recenter(self, a, b) -> bool:
        """eps = 0: (alpha - s, beta + s) gives the same plan; rebalance when drifting.

        Returns True when it shifted (z is then equal only up to rounding, so
        sums and counts must be recomputed).
        """
        if self.kappa == 0.0:
            s = 0.5 * (self.w1 @ a / self.W1 - self.w2 @ b / self.W2)
            if abs(s) > 1e-3 * (self.cost.max_abs + 1.0):
                a -= s
                b += s
                return True
        return False

    def residuals(self, alpha, beta, rs, cs):
        """The marginal residuals ``(r1, r2)`` of (3.1) from the row and column sums of ``z``."""
        r1 = (rs + self.kappa * alpha) / self.gamma - self.m1
        r2 = (cs + self.kappa * beta) / self.gamma - self.m2
        return r1, r2


class _QROTState:
    """The iterate and the loop's bookkeeping, changed by :func:`_newton_iteration`."""

    def __init__(self, alpha, beta, init_used, engine, lm):
        self.alpha, self.beta, self.init_used, self.engine, self.lm = alpha, beta, init_used, engine, lm
        self.lm0 = lm  # the adaptive factor never drops below the user's value
        self.rowsum = self.colsum = self.count = self.r1 = self.r2 = None
        self.act: tuple | None = None  # active set (ip, ind, z) at the current point, when computed
        self.history: list = []
        self.status: int | None = None  # set when the loop stops
        self.message: str | None = None
        self.nit = 0
        self.ls_fail = 0
        self.stall, self.last_move, self.prev_res = 0, np.inf, np.inf
        self.res0 = None  # residual at the start: the inexact-Newton tolerance is relative to it

    def update_sums(self, p: _QROTData, ev) -> None:
        self.rowsum, self.colsum, self.count, _ = ev
        self.r1, self.r2 = p.residuals(self.alpha, self.beta, self.rowsum, self.colsum)


def _init_state(p: _QROTData, x0, init, lm) -> _QROTState:
    """Starting potentials (warm start ``x0`` or a cold start ``init``), their sums and residuals."""
    cost, m1, m2, w1, w2 = p.cost, p.m1, p.m2, p.w1, p.w2
    if x0 is not None:
        try:
            a0, b0 = x0
        except (TypeError, ValueError):
            raise ValueError("x0 must be a pair (alpha, beta)") from None
        alpha = as_vector(a0, "x0[0] (alpha)", length=p.n1).copy()
        beta = as_vector(b0, "x0[1] (beta)", length=p.n2).copy()
        init_used = "warm"
        if init in ("auto", "monge") and _is_monge(cost) and float(w1 @ m1) > 0 and float(w2 @ m2) > 0:
            # x0 competes with staircase sweeps seeded by it (kept only if better)
            a1, b1, swept = _monge_start(cost, m1, m2, w1, w2, p.gamma, p.eps, start=(alpha, beta))
            if swept:
                alpha, beta, init_used = a1.copy(), b1.copy(), "warm+monge"
        elif init not in ("auto", "monge", "x0", "exact", "mean", "zero", "coarse"):
            raise ValueError(f"init must be 'auto', 'monge', 'exact', 'mean', 'zero', 'coarse' or 'x0', got {init!r}")
    else:
        alpha, beta, init_used = _initial_point(cost, m1, m2, w1, w2, p.gamma, p.eps, init)
    p.recenter(alpha, beta)
    st = _QROTState(alpha, beta, init_used, _Engine(cost, w1, w2, screening=p.screening), lm)
    st.update_sums(p, st.engine.evaluate(alpha, beta))
    return st


def _stopping_test(p: _QROTData, st: _QROTState) -> dict:
    """The history entry of the current point; sets ``st.status`` when the loop must stop.

    Stops on convergence (residual at most ``max(tol, rounding floor)``), non-finite
    values, a stall at the rounding level of the potentials, or the iteration limit.
    """
    alpha, beta = st.alpha, st.beta
    res = max(float(np.abs(st.r1).max()), float(np.abs(st.r2).max()))
    scale = max(p.cost.max_abs, float(np.abs(alpha).max() + np.abs(beta).max()))
    floor = residual_floor(p.w1, p.w2, scale, p.gamma)
    st.act = None
    if p.tol < res <= floor:
        # about to stop at the coarse floor: sharpen it from the potentials
        # on the active set (the pass is reused by the Newton step or the plan)
        st.act = ip, ind, z = st.engine.active(alpha, beta, st.count)
        floor = min(floor, _active_floor(ip, ind, z, alpha, beta, p.m1, p.m2, p.w1, p.w2, p.gamma, p.eps, p.cost))
    entry = {"it": st.nit, "residual": res, "floor": floor, "n_active": int(st.count.sum())}
    if not np.isfinite(res):
        st.status = 3
    elif res <= max(p.tol, floor):
        st.status = 0
    else:
        # Stall: the last step moved the potentials only at their rounding level
        # and the residual did not drop; the iteration can no longer change the
        # point (it happens when gamma is far below what the potentials resolve).
        pot = float(np.abs(alpha).max() + np.abs(beta).max())
        st.stall = st.stall + 1 if (st.last_move <= 64 * _U * pot and res >= 0.999 * st.prev_res) else 0
        st.prev_res = res
        if st.stall >= 3:
            st.status = 2
            st.message = f"{STATUS_MESSAGES[2]}: the steps stalled at the rounding level of the potentials"
        elif st.nit == p.max_iter:
            st.status = 1
    return entry


def _newton_iteration(p: _QROTData, st: _QROTState, entry: dict) -> str:
    """One damped semismooth Newton step on the dual (3.1) from ``st``, in place.

    Returns ``"ok"`` (``entry`` completed with the step's data), ``"retry"`` (the
    direction was not a descent direction: the shift is raised, the point kept) or
    ``"failed"`` (no descent three times; ``st.status`` is 2).
    """
    cost, engine, gamma, kappa = p.cost, st.engine, p.gamma, p.kappa
    m1, m2, w1, w2, n1, n2 = p.m1, p.m2, p.w1, p.w2, p.n1, p.n2
    alpha, beta, res = st.alpha, st.beta, entry["residual"]
    if st.nit == 0 and st.init_used in ("monge-duals", "exact"):
        # From exact OT potentials only the LP support is active; the
        # regularized plan spreads over {z > -gamma * pi}: take that band as
        # the first Newton matrix so the first step is not vanishingly short.
        tau0 = _FIRST_BAND * gamma * max(float(m1.max()), float(m2.max()))
        ip, ind, _ = cost.active(alpha, beta, None, threshold=-tau0)
    else:
        ip, ind, _ = st.act if st.act is not None else engine.active(alpha, beta, st.count)
    # The shift keeps K nonsingular (eps = 0, rows without active entries)
    # and bounds the step; it vanishes with the residual.
    shift = kappa + st.lm * gamma * res
    K = NewtonMatrix(ip, ind, n2, w1, w2, shift)
    shift_floor = 1e-14 * max(float(K.deg1.max(initial=0.0)), float(K.deg2.max(initial=0.0)), 1e-300)
    if shift < shift_floor:
        shift = shift_floor
        K = NewtonMatrix(ip, ind, n2, w1, w2, shift)
    g = np.concatenate([w1 * (gamma * st.r1), w2 * (gamma * st.r2)])
    if st.nit == 0:
        st.res0 = res
    # Inexact Newton: loose linear solves far away, tight ones near the solution.
    d, lin_its = K.solve(-g, p.linear_solver, rtol=min(0.1, max(1e-10, 0.1 * res / st.res0)))
    da, db = d[:n1], d[n1:]
    if kappa == 0.0:
        # (1, -1) spans the kernel of K when eps = 0; with a tiny shift the
        # solve returns a huge, meaningless component along it that would
        # wreck the rounding of alpha_i + beta_j.  The gradient is orthogonal
        # to it (equal masses), so removing it keeps d a descent direction.
        s = 0.5 * (w1 @ da / p.W1 - w2 @ db / p.W2)
        da -= s
        db += s
    # phi(t) = (gamma * -Phi)(x + t d); phi'(t) = dsum(t) + q0 + t q1 - lin
    q0 = kappa * (w1 @ (alpha * da) + w2 @ (beta * db))
    q1 = kappa * (w1 @ (da * da) + w2 @ (db * db))
    lin = gamma * (w1 @ (m1 * da) + w2 @ (m2 * db))
    dphi0 = float(g @ d)
    if not dphi0 < 0:
        st.ls_fail += 1
        if st.ls_fail > 2:
            st.status = 2
            return "failed"
        st.lm *= 100.0  # fall back towards a gradient step
        return "retry"
    move = float(np.abs(da).max() + np.abs(db).max())
    engine.prepare(alpha, beta, move)
    ev = engine.evaluate(alpha, beta, da, db, 1.0)
    dphi1 = ev[3] + q0 + q1 - lin
    t = 1.0
    if dphi1 > 0:
        cand = engine.line_candidates(alpha, beta, da, db)
        if cand is None:  # too many to store: root of phi' by streaming passes
            t = _streamed_root(lambda t_: engine.evaluate(alpha, beta, da, db, t_)[3] + q0 + t_ * q1 - lin,
                               dphi0, dphi1)
        else:
            z, dz, ws = cand
            t = _exact_line_search(z, dz, ws, q0, q1, lin, 1.0)
        ev = engine.evaluate(alpha, beta, da, db, t)
    path = "line"
    curved = None
    if t < 1.0 and p.curve:
        curved = _curved_step(engine, cost, alpha, beta, da, db, t, move, m1, m2, w1, w2, gamma, kappa, K.nnz)
    if curved is not None:
        a_new, b_new, t, path = curved
        moved = float(np.abs(a_new - alpha).max() + np.abs(b_new - beta).max())
        alpha, beta = a_new, b_new
        st.last_move = moved
        if moved < engine.slack:
            engine.moved(moved)
        else:
            engine.ws = None
        p.recenter(alpha, beta)
        ev = engine.evaluate(alpha, beta)
    else:
        alpha = alpha + t * da
        beta = beta + t * db
        st.last_move = t * move
        engine.moved(t * move)
        if p.recenter(alpha, beta):
            ev = engine.evaluate(alpha, beta)
    if kappa > 0.0:
        # Exact ascent along (1, -1), which leaves z and the plan unchanged:
        # with a mass mismatch the level must reach |M1 - M2| / (eps (W1 + W2)),
        # which the shifted Newton steps (eigenvalue kappa + shift along this
        # direction) approach only by a factor per iteration when eps is small.
        a_lev, b_lev = _level(alpha, beta, m1, m2, w1, w2, gamma, p.eps)
        if p.eps * abs(float(a_lev[0] - alpha[0])) > 1e-2 * res:
            alpha, beta = a_lev, b_lev
            engine.ws = None  # z equal only up to rounding of the shift: re-screen
            ev = engine.evaluate(alpha, beta)
    _adapt_shift(st, t)
    st.alpha, st.beta = alpha, beta
    st.update_sums(p, ev)
    entry.update(step=t, path=path, linear_iters=int(lin_its), shift=shift, nnz=int(K.nnz))
    return "ok"


def _adapt_shift(st: _QROTState, t: float) -> None:
    """Adapt the Levenberg-Marquardt factor to the step length the line search accepted.

    With eps = 0 the Newton matrix is singular along ``(1, -1)`` on every connected
    component of the active pattern, not only globally.  When the plan is nearly that of
    the linear program (a few entries per row: FE data at small gamma), the pattern falls
    apart into many components, and a component whose rows and columns carry unequal
    mass gets a step ``~ 1 / shift`` along its own ``(1, -1)``, far beyond the cost scale.
    The exact line search then stops where the first outside entry turns active
    (t ~ 1e-7) and every iteration adds one entry.  A short step therefore raises the
    factor by ``1 / t`` (the shift that would have made the component's move end at the
    accepted point), at most by ``_LM_JUMP`` per step; a full step lowers it by
    ``_LM_DROP``, never below its initial value (the shift still vanishes with the
    residual, so the local convergence is kept).  The bounded jump keeps one short step
    of an otherwise regular run (a kink met early) from turning the next ones into
    gradient steps.
    """
    if t < _SHORT_STEP:
        st.lm = min(st.lm * min(1.0 / max(t, 1e-300), _LM_JUMP), _LM_MAX)
    elif t >= _FULL_STEP:
        st.lm = max(st.lm / _LM_DROP, st.lm0)


def _output(p: _QROTData, st: _QROTState) -> QROTResult:
    """The result: the plan on the active set, the final floor and the precision verdict (status 4)."""
    alpha, beta, gamma, history = st.alpha, st.beta, p.gamma, st.history
    status: int = 1 if st.status is None else st.status
    m1, m2, w1, w2 = p.m1, p.m2, p.w1, p.w2
    ip, ind, z = st.act if st.act is not None else st.engine.active(alpha, beta, st.count)
    plan = sp.csr_matrix((z / gamma, ind, ip), shape=(p.n1, p.n2))
    res_final = history[-1]["residual"]
    floor_final = history[-1]["floor"]
    message = STATUS_MESSAGES[status] if st.message is None else st.message
    if status != 3:  # (all-zero marginals: thresh = 0, only tol can certify; no gamma would help)
        if st.act is None:
            floor_final = min(floor_final, _active_floor(ip, ind, z, alpha, beta, m1, m2, w1, w2, gamma, p.eps,
                                                         p.cost))
            history[-1]["floor"] = floor_final
        # Precision: a residual certified only by the rounding floor is a
        # success only when that floor is small against the data; otherwise
        # (and whenever the floor blocks convergence) the plan is unresolved.
        thresh = PRECISION_RTOL * max(float(m1.max()), float(m2.max()))
        if status in (1, 2):
            # a failed run: rows (columns) still off by more than thresh need
            # their plan entries tuned, at least one entry each, which moves in
            # steps of u (|alpha_i| + |beta_j|) / gamma (the active-set floor
            # misses this when such a row has no active entry at all)
            r1, r2 = st.r1, st.r2
            g = _U / gamma * max(
                float(w2.min()) * float((np.abs(alpha)[np.abs(r1) > thresh] + np.abs(beta).min()).max(initial=0.0)),
                float(w1.min()) * float((np.abs(beta)[np.abs(r2) > thresh] + np.abs(alpha).min()).max(initial=0.0)))
            if g > thresh:
                floor_final = max(floor_final, g)
        if thresh > 0 and floor_final > thresh and (status in (1, 2) or (status == 0 and res_final > p.tol)):
            status = 4
            message = _precision_message(gamma, floor_final, res_final, thresh)
        elif status == 0 and res_final > p.tol:  # certified by the floor, not by tol: say so
            status = 5
            message = floor_acceptance_message(res_final, p.tol, floor_final)
    out = QROTResult(
        alpha=alpha, beta=beta, plan=plan, residual=res_final, residual_floor=floor_final,
        success=status in (0, 5), status=status, message=message, nit=st.nit, history=history,
        gamma=gamma, eps=p.eps, w1=w1, w2=w2, init=st.init_used, linear_solver=p.linear_solver,
        time_s=time.perf_counter() - p.t_start, dense_passes=st.engine.dense_passes,
    )
    out._cost = p.cost
    out._scale = max(p.cost.max_abs, float(np.abs(alpha).max() + np.abs(beta).max()))
    out._ztol = max(64 * _U * out._scale, 10 * gamma * res_final)
    return out
