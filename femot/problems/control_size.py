"""Size, memory and time estimates of a :class:`femot.problems.ControlProblem`, without building it."""
from __future__ import annotations

from math import gamma as gamma_fn
from math import pi

import numpy as np

from femot._validation import check_positive_scalar
from femot.fem import quadrature
from femot.fem.grid_kernel import common_lattice
from femot.fem.meshes import admissible_vertices
from femot.fem.smoothing import FFT_MIN_PAIRS, mesh_spacing

__all__ = ["estimate_size", "MATRIX_FREE_PAIRS"]

#: Above this many transport pairs ``n_q^2`` :class:`femot.problems.ControlProblem` uses a matrix-free
#: :class:`femot.GeometricCost` instead of a dense cost matrix (``matrix_free=None``).
MATRIX_FREE_PAIRS = 4.0e6

#: Seconds per Newton step of the lower level and transport pair (dense cost: every pass streams the
#: n_q^2 pairs) or plan nonzero (matrix-free: the k-d tree passes touch about the active pairs and
#: their leaves); seconds per Hessian-vector product and state node (two Poisson solves) and plan
#: nonzero (one dual solve).  Measured on a shared 2-core machine (the ocp-2d demo instance).
_T_PAIR, _T_NNZ_MF, _T_HV_NODE, _T_HV_NNZ = 2e-8, 2e-7, 1.5e-6, 3e-8
#: Newton steps of the lower level per upper-level solve assumed by :func:`estimate_size`.
_NEWTON_STEPS = 200
#: Bytes per plan nonzero (plan, Newton matrix, working sets).
_BYTES_NNZ = 40
#: Fill of the sparse LUs per plan nonzero (dual Newton matrix) and per state node (the CG
#: preconditioner's saddle-point system), measured at 66,049 nodes: 2.4e7 for 1.0e6, 3.1e7 for 65,025.
_DUAL_FILL, _PRECOND_FILL = 24.0, 470.0


def _ball_volume(d: int) -> float:
    """omega_d, the volume of the unit ball in R^d."""
    return pi ** (d / 2) / gamma_fn(d / 2 + 1)


def _plan_nnz(nq: int, d: int, h: float, gamma: float, dens: float) -> float:
    """Plan nonzeros for c = |x - y|^2: nq rows, each ~ the nodes in the ball of radius r (estimate_size)."""
    omega = _ball_volume(d)
    r = ((d + 2) * gamma * dens / (2 * omega)) ** (1.0 / (d + 2))
    return float(min(float(nq) ** 2, nq * max(1.0, omega * r**d / h**d)))


def estimate_size(state_mesh, gamma: float, delta: float, *, mass: float = 1.0, transport_mesh=None,
                  enlarge: bool = False, rho: float | None = None, matrix_free: bool | None = None,
                  control_vertices=None) -> dict:
    """Size, memory and a time estimate of a :class:`ControlProblem`, without building it.

    The transport pairs are ``n_q^2`` (``n_q`` the vertices of the transport mesh, enlarged
    by delta with ``enlarge``); the cost is dense (``8 n_q^2`` bytes) up to
    :data:`MATRIX_FREE_PAIRS`, matrix-free above.  The plan's nonzeros are estimated from
    the width of the regularized plan: for ``c = |x - y|^2`` near a smooth transport map
    ``pi(x, .) ~ (r^2 - |y - T(x)|^2)_+ / gamma``, whose integral ``2 omega_d r^(d+2) / (d + 2)``
    equals the density ``m = (mass + delta) / |Omega_q|``, so a row holds the nodes of a ball of
    radius ``r = ((d + 2) gamma m / (2 omega_d))^(1/(d+2))`` (``omega_d r^d / h^d`` of them, h the
    node spacing).  The time is an order of magnitude: ``_NEWTON_STEPS`` lower-level Newton steps
    plus ``30 n^0.57`` Hessian-vector products (n controls), with per-pair/per-node constants
    measured on a shared 2-core machine (the plan formulation makes fewer products, the
    value formulation's certified stop these).

    Parameters
    ----------
    state_mesh : skfem.Mesh
        The mesh of the state (and, by default, of the transport).
    gamma, delta : float
        Regularization and smoothing radius.
    mass : float, optional
        The prior's mass ``|mu2^d|`` (default 1).
    transport_mesh, enlarge, rho, matrix_free, control_vertices : optional
        As for :class:`ControlProblem`.

    Returns
    -------
    dict
        ``nodes``, ``controls``, ``transport_nodes``, ``pairs``, ``matrix_free``, ``plan_nnz``
        (estimate), ``cost_bytes`` (dense cost, 0 matrix-free), ``smoothing`` ("sparse": the
        smoothing matrix, 12 bytes per control and node within delta; "fft": nodes and controls on
        one grid, the kernel applied by FFT, a few arrays of the padded grid), ``memory_bytes``
        (cost + plan + smoothing + the LU factors of the value formulation's Hessian products and
        preconditioner + state), ``time_s`` (estimate).
    """
    gamma = check_positive_scalar(gamma, "gamma")
    delta = check_positive_scalar(delta, "delta")
    tm = state_mesh if transport_mesh is None else transport_mesh
    h = mesh_spacing(tm)
    q = quadrature(tm)
    if enlarge:
        q = q.enlarged(delta, delta / np.ceil(delta / h - 1e-9))
    if control_vertices is not None:
        n_ctrl = int(np.unique(np.asarray(control_vertices)).size)
    else:
        r0 = (0.0 if enlarge else delta) if rho is None else float(rho)
        n_ctrl = int(admissible_vertices(state_mesh, r0).size)
    d = q.dim
    nq = int(q.n)
    pairs = float(nq) ** 2
    mf = pairs > MATRIX_FREE_PAIRS if matrix_free is None else bool(matrix_free)
    nnz = _plan_nnz(nq, d, h, gamma, (mass + delta) / float(q.weights.sum()))
    n_state = int(state_mesh.p.shape[1])
    cost_bytes = 0.0 if mf else 8.0 * pairs
    kernel = n_ctrl * _ball_volume(d) * (delta / h) ** d  # entries of the smoothing matrix
    # on a grid mesh Smoother.operator applies the kernel by FFT (femot.fem.grid_kernel): no matrix
    fft = kernel >= FFT_MIN_PAIRS and common_lattice(q.nodes, state_mesh.p.T) is not None
    smoothing_bytes = 48.0 * nq * (1 + 2 * delta / (h * nq ** (1 / d))) ** d if fft else 12.0 * kernel
    # value formulation: two cached LUs of the dual Newton matrix and one of the state preconditioner
    factor_bytes = 12.0 * (2 * _DUAL_FILL * nnz + _PRECOND_FILL * n_state)
    memory = cost_bytes + _BYTES_NNZ * nnz + smoothing_bytes + factor_bytes + 800.0 * n_state
    t_newton = _NEWTON_STEPS * (_T_NNZ_MF * nnz if mf else _T_PAIR * pairs)
    t_hv = 30.0 * n_ctrl ** 0.57 * (_T_HV_NODE * n_state + _T_HV_NNZ * nnz)
    return {"nodes": n_state, "controls": n_ctrl, "transport_nodes": nq, "pairs": pairs, "matrix_free": mf,
            "plan_nnz": int(nnz), "cost_bytes": cost_bytes, "smoothing": "fft" if fft else "sparse",
            "memory_bytes": memory, "time_s": t_newton + t_hv}
