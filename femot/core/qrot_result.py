"""The result of :func:`femot.solve_qrot`: potentials, plan, diagnostics and derivatives."""
from __future__ import annotations

import numpy as np
from scipy.optimize import OptimizeResult

from femot._validation import as_vector
from femot.core import sensitivity

__all__ = ["QROTResult"]


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

    Methods ``jvp``, ``dual_jvp``, ``vjp`` give derivatives of the marginal-to-plan map
    ``S_{gamma,eps}`` (Part III Def. 3.1) at this solution (:mod:`femot.core.sensitivity`).

    Internal state (the cost object, the biactivity tolerance, cached factorizations)
    is kept in attributes whose names start with ``_``; they are ordinary instance
    attributes, not entries of the result, so they appear in neither ``keys()`` nor
    the repr.

    Examples
    --------
    >>> import numpy as np
    >>> from femot import solve_qrot
    >>> res = solve_qrot([[0.0, 1.0], [1.0, 0.0]], [0.5, 0.5], [0.3, 0.7], 0.1)
    >>> res.status, [[round(float(v), 6) for v in row] for row in res.plan.toarray()]
    (0, [[0.3, 0.2], [0.0, 0.5]])
    >>> print(f"{res.transport_cost():.4f}")
    0.2000
    """

    def __setattr__(self, name, value):
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self[name] = value

    def __getstate__(self):
        # the cached factorization of the derivatives (SuperLU) cannot be pickled: rebuilt on demand
        return {k: v for k, v in self.__dict__.items() if k != "_dual_cache"}

    def biactive(self, tol: float | None = None):
        """The biactive set: :func:`femot.core.sensitivity.biactive`."""
        return sensitivity.biactive(self, tol)

    def jvp(self, h1, h2, A=None):
        """Directional derivative of the plan: :func:`femot.core.sensitivity.jvp`."""
        return sensitivity.jvp(self, h1, h2, A)

    def dual_jvp(self, h1, h2, A=None):
        """Derivative of the potentials: :func:`femot.core.sensitivity.dual_jvp`."""
        return sensitivity.dual_jvp(self, h1, h2, A)

    def vjp(self, G, A=None):
        """Adjoint of the plan derivative: :func:`femot.core.sensitivity.vjp`."""
        return sensitivity.vjp(self, G, A)

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
