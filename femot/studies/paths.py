"""Solving along a coupled (gamma, delta) schedule (Part II (3.1)) in memory, for scripts and
demos that want the solutions themselves; a stored, resumable study is :func:`femot.studies.run_study`."""
from __future__ import annotations

import time

from femot.fem import solve_lower_level
from femot.problems import ControlProblem

__all__ = ["lower_level_path", "control_path"]


def lower_level_path(mu1, mu2, schedule, quadrature_of_level, *, cost=2.0, rho=None, enlarge=False,
                     callback=None) -> list:
    """Solve the smoothed lower level at every level of a coupled schedule, warm-started.

    Parameters
    ----------
    mu1, mu2 : femot.fem measures
        The marginals (equal masses).
    schedule : iterable of (gamma, delta)
        For example a :func:`femot.fem.coupled_schedule`.
    quadrature_of_level : callable
        ``quadrature_of_level(k, gamma, delta) -> Quadrature`` of level ``k``, used for both
        marginals (the level's mesh must resolve ``delta``).
    cost : float or callable
        ``beta`` for ``c = |x - y|^beta``, or a cost callable (see
        :func:`femot.fem.solve_lower_level`).
    rho : float, optional
        Enlargement of the domain when the supports touch the boundary (Part II, Lemma 2.4).
    enlarge : bool
        Work on the domain enlarged by ``rho``.
    callback : callable, optional
        ``callback(k, gamma, delta, result, seconds)`` after every level.

    Returns
    -------
    list
        The :class:`femot.fem.LowerLevelResult` of every level.

    Examples
    --------
    Two pairs of atoms (W_2^2 = 0.0025), the mesh refined with delta:

    >>> import numpy as np
    >>> from skfem import MeshLine
    >>> from femot.fem import DiracSum, quadrature
    >>> mu1, mu2 = DiracSum([0.4, 0.6], [0.5, 0.5]), DiracSum([0.45, 0.65], [0.5, 0.5])
    >>> level_q = lambda k, gamma, delta: quadrature(MeshLine(np.linspace(0.0, 1.0, int(4 / delta) + 1)))
    >>> results = lower_level_path(mu1, mu2, [(1e-2, 0.2), (1e-3, 0.15)], level_q)
    >>> [f"{r.transport_cost:.4f}" for r in results], all(r.success for r in results)
    (['0.0161', '0.0055'], True)
    """
    results: list = []
    previous = None
    for k, (gamma, delta) in enumerate(schedule):
        q = quadrature_of_level(k, gamma, delta)
        t0 = time.perf_counter()
        previous = solve_lower_level(mu1, mu2, q, q, gamma, delta, cost=cost, enlarge=enlarge, rho=rho,
                                     x0=previous)
        results.append(previous)
        if callback is not None:
            callback(k, gamma, delta, previous, time.perf_counter() - t0)
    return results


def control_path(op, y_d, mu2, nu, schedule, *, beta=2.0, rho=0.0, transport="value", max_iter=200,
                 rtol=1e-5, fw_rtol=1e-8, callback=None) -> list:
    """Solve the regularized control problem at every level of a coupled schedule.

    Every level builds :class:`femot.problems.ControlProblem` ``(op, y_d, mu2, nu, gamma,
    delta)`` and minimizes it from the uniform control (Part III, Algorithm 4.1).

    Parameters
    ----------
    op : femot.fem.PoissonOperator
        The state equation.
    y_d : numpy.ndarray
        Desired state at the vertices.
    mu2 : numpy.ndarray
        Prior masses at the vertices.
    nu : float
        Weight of the transport term.
    schedule : iterable of (gamma, delta)
        The coupled schedule.
    beta : float
        Cost exponent, ``c = |x - y|^beta``.
    rho : float
        Controls are supported at distance ``>= rho`` from the boundary.
    transport : {"value", "plan"}
        The transport term: the convex value ``V_gamma`` or the plan ``<c, pi>``.
    max_iter : int
        Trust-region iterations per level.
    rtol, fw_rtol : float
        Stopping rules of the plan and the value formulation.
    callback : callable, optional
        ``callback(k, gamma, delta, problem, result)`` after every level.

    Returns
    -------
    list of (ControlProblem, ControlResult)

    Examples
    --------
    >>> import numpy as np
    >>> from skfem import MeshLine
    >>> from femot.fem import PoissonOperator
    >>> op = PoissonOperator(MeshLine(np.linspace(0.0, 1.0, 33)))
    >>> x = op.vertices[:, 0]
    >>> mu2 = np.where(np.abs(x - 0.5) < 0.1, 1.0, 0.0)
    >>> out = control_path(op, np.sin(np.pi * x), mu2 / mu2.sum(), 0.05, [(1e-2, 0.2), (3e-3, 0.15)], rho=0.2)
    >>> [f"{r.fun:.4f}" for _, r in out], [bool(r.success) for _, r in out]
    (['0.1620', '0.1604'], [True, True])
    """
    out: list = []
    for k, (gamma, delta) in enumerate(schedule):
        problem = ControlProblem(op, y_d, mu2, nu, gamma, delta, beta=beta, rho=rho, transport=transport)
        result = problem.solve(options={"max_iter": int(max_iter)}, rtol=float(rtol), fw_rtol=float(fw_rtol))
        out.append((problem, result))
        if callback is not None:
            callback(k, gamma, delta, problem, result)
    return out
