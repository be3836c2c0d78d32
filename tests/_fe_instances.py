"""The FE lower-level instance class: smoothed marginals on a lumped-P1 transport grid.

Built from femot's public FE functions the way a control problem on [-1, 1]^2 builds its
lower level (Borchard-Wachsmuth test problem at the uniform control): a state mesh of
[-1, 1]^2 whose admissible vertices (distance >= delta from the boundary) carry the
uniform control, lumped Lebesgue measure of a finer mesh as the target, both smoothed by
T^delta onto a tensor transport grid enlarged by delta.  FE data differ from the unit
benchmarks in three ways: nonuniform quadrature weights, densities of large contrast
(the shift delta/|Omega| on the enlargement against the bulk), a cost scale of O(10).
"""
import numpy as np


def _square_mesh(refine):
    import skfem

    m = skfem.MeshTri().refined(refine)
    return skfem.MeshTri(2 * m.p - 1, m.t)


def fe_lower_level(level=0, delta=0.25, state_refine=4, target_refine=5):
    """Lower-level data ``(x, w, mu1, mu2)`` of the [-1, 1]^2 control problem at the uniform control.

    Parameters
    ----------
    level : int
        Refinement of the transport grid: spacing ``0.0625 / 2**level`` on
        ``[-1 - delta, 1 + delta]^2`` (level 0: 41 x 41 = 1,681 nodes at delta = 0.25);
        negative levels give coarser grids (level -1: 21 x 21).
    delta : float
        Smoothing radius (a multiple of the grid spacing).
    state_refine, target_refine : int
        Refinements of the state mesh (control atoms at its admissible vertices) and of the
        target mesh (lumped Lebesgue measure, mass 4).

    Returns
    -------
    x : ndarray (n, 2)
        Transport grid nodes.
    w : ndarray (n,)
        Lumped P1 weights of the grid.
    mu1, mu2 : ndarray (n,)
        Smoothed densities w.r.t. ``w``, of equal mass ``4 + delta``.
    """
    import skfem

    from femot.fem import quadrature
    from femot.fem.smoothing import Smoother

    h = 0.0625 * 2.0 ** (-level)
    k = int(round(delta / h))
    g = np.r_[-1 - h * np.arange(k, 0, -1), np.linspace(-1, 1, int(round(2 / h)) + 1), 1 + h * np.arange(1, k + 1)]
    q = quadrature(skfem.MeshTri.init_tensor(g, g))
    target = quadrature(_square_mesh(target_refine))
    mass = float(target.weights.sum())
    state = _square_mesh(state_refine).p.T
    atoms = state[np.max(np.abs(state), axis=1) <= 1 - delta + 1e-12]
    sm = Smoother(q, delta)
    mu1 = sm.operator(sources=atoms, mass=mass).apply(np.full(len(atoms), mass / len(atoms)))
    mu2 = sm.operator(sources=target.nodes, mass=mass).apply(target.weights)
    return q.nodes, q.weights, mu1, mu2


def sqdist(x, y):
    """Dense squared Euclidean cost ``|x_i - y_j|^2``."""
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
