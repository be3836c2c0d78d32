"""Nodal values from one set of nodes to another: the one transfer rule of femot.

Used to carry potentials, states or controls from one mesh (or quadrature) to the next
along a schedule: P1 interpolation on the old mesh where a new node lies in one of its
cells, the nearest old node's value elsewhere.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from femot.fem.meshes import locate

__all__ = ["interpolate_nodal"]


def _as_nodes(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"{name} must have shape (n,) or (n, d) with n >= 1, got {np.shape(x)}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite entries")
    return a


def interpolate_nodal(x_old, values, x_new, mesh=None) -> np.ndarray:
    """Values at the nodes ``x_old`` carried to the nodes ``x_new``.

    The rule: P1 interpolation on the old mesh where a new node lies in one of its cells,
    the value of the nearest old node elsewhere. Without ``mesh``, in 1D the old mesh is
    the one implied by the sorted nodes (``numpy.interp``: piecewise linear, constant
    beyond the ends); in 2D/3D every new node takes its nearest old node's value. On
    identical nodes the result is a copy of ``values``.

    Parameters
    ----------
    x_old : array_like, shape (n,) or (n, d)
        The nodes carrying ``values``; with ``mesh``, its vertices (``mesh.p.T``).
    values : array_like, shape (n,) or (n, k)
        Values at ``x_old`` (several columns are carried together).
    x_new : array_like, shape (m,) or (m, d)
        The nodes to carry the values to.
    mesh : skfem.Mesh or None, optional
        A simplicial mesh whose vertices are ``x_old``; P1 interpolation on its cells.

    Returns
    -------
    numpy.ndarray, shape (m,) or (m, k)
        The values at ``x_new``.

    Raises
    ------
    ValueError
        On mismatched shapes or dimensions, NaN/inf nodes, or a ``mesh`` whose vertices
        are not ``x_old``.

    Examples
    --------
    >>> import numpy as np
    >>> x_old = np.array([0.0, 0.5, 1.0])
    >>> interpolate_nodal(x_old, 2 * x_old + 1, [0.25, 0.75, 2.0]).tolist()
    [1.5, 2.5, 3.0]
    """
    xo = _as_nodes(x_old, "x_old")
    xn = _as_nodes(x_new, "x_new")
    v = np.asarray(values, dtype=float)
    if v.ndim not in (1, 2) or v.shape[0] != xo.shape[0]:
        raise ValueError(f"values must have shape ({xo.shape[0]},) or ({xo.shape[0]}, k), got {v.shape}")
    if xo.shape[1] != xn.shape[1]:
        raise ValueError(f"x_old has dimension {xo.shape[1]} but x_new has dimension {xn.shape[1]}")
    if xo.shape == xn.shape and np.array_equal(xo, xn):
        return v.copy()
    if mesh is not None:
        if mesh.p.shape != xo.T.shape or not np.array_equal(mesh.p, xo.T):
            raise ValueError("mesh: its vertices (mesh.p.T) must be x_old")
        out = v[cKDTree(xo).query(xn)[1]]
        cells, lam = locate(mesh, xn)
        inside = cells >= 0
        verts = mesh.t[:, cells[inside]].T  # (n_inside, d + 1)
        if v.ndim == 1:
            out[inside] = np.einsum("nk,nk->n", lam[inside], v[verts])
        else:
            out[inside] = np.einsum("nk,nkc->nc", lam[inside], v[verts])
        return out
    if xo.shape[1] == 1:
        order = np.argsort(xo[:, 0], kind="stable")
        xs = xo[order, 0]
        vs = v[order]
        if v.ndim == 1:
            return np.interp(xn[:, 0], xs, vs)
        return np.stack([np.interp(xn[:, 0], xs, vs[:, c]) for c in range(v.shape[1])], axis=1)
    return v[cKDTree(xo).query(xn)[1]]
