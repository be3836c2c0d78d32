"""The semi-discrete reference measure of a 2D mesh: a density on the mesh for :mod:`femot.core.semidiscrete`."""
from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull

from femot.core.semidiscrete import SemiDiscreteDomain
from femot.fem.meshes import element_volumes

__all__ = ["mesh_domain"]


def mesh_domain(mesh, density=None, kind: str = "P1") -> SemiDiscreteDomain:
    """The domain of a 2D triangle mesh with a density, as a :class:`~femot.core.semidiscrete.SemiDiscreteDomain`.

    With ``density=None`` (Lebesgue measure) on a convex mesh the domain is its convex hull, one convex
    polygon (each Laguerre cell is clipped once); otherwise the triangles are the convex pieces
    (non-convex domains, P0 or P1 densities).

    Parameters
    ----------
    mesh : skfem.MeshTri
        A 2D triangle mesh.
    density : array_like or None
        None (density 1), nodal values (``kind="P1"``) or one value per triangle (``kind="P0"``).
    kind : {"P1", "P0"}

    Returns
    -------
    SemiDiscreteDomain

    Raises
    ------
    ValueError
        If ``mesh`` is not a 2D triangle mesh or the density is malformed.
    """
    p = np.asarray(getattr(mesh, "p", None), dtype=float)
    t = np.asarray(getattr(mesh, "t", None))
    if p.ndim != 2 or p.shape[0] != 2 or t.ndim != 2 or t.shape[0] != 3:
        raise ValueError("mesh must be a 2D triangle mesh (scikit-fem MeshTri)")
    if density is None:
        hull = ConvexHull(p.T)
        area = float(element_volumes(mesh).sum())
        if abs(hull.volume - area) <= 1e-12 * area:
            return SemiDiscreteDomain.polygon(p.T[hull.vertices])
    return SemiDiscreteDomain.triangles(p.T, t.T.astype(np.int64), density, kind)
