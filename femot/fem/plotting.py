"""Figures of nodal fields on a mesh: densities, controls, states (matplotlib, imported lazily).

:func:`plot_field` draws one nodal field of a 1D or 2D mesh on a matplotlib axis, with a
labelled colour bar; ``masses=True`` first turns masses at the vertices (a control, a
discrete marginal) into the density they represent with respect to the lumped P1 weights.
Writing the same fields to a file for ParaView is :func:`femot.fem.save_mesh` with
``point_data``.
"""
from __future__ import annotations

import numpy as np

from femot.fem.quadrature import quadrature

__all__ = ["plot_field", "nodal_density"]


def nodal_density(mesh, masses) -> np.ndarray:
    """The density of vertex masses with respect to the lumped P1 weights of ``mesh``.

    A measure ``sum_i m_i delta_{x_i}`` at the vertices corresponds to the nodal density
    ``m_i / w_i`` with ``w_i = int phi_i`` (the lumped mass); the two have the same integral
    under the lumped quadrature.

    Parameters
    ----------
    mesh : skfem.Mesh
        A simplicial mesh (1D or 2D).
    masses : array_like, shape (n_vertices,)
        Masses at the vertices.

    Returns
    -------
    ndarray, shape (n_vertices,)

    Examples
    --------
    >>> import skfem
    >>> mesh = skfem.MeshLine(np.linspace(0.0, 1.0, 5))
    >>> [round(float(v), 6) for v in nodal_density(mesh, np.full(5, 0.2))]
    [1.6, 0.8, 0.8, 0.8, 1.6]
    """
    w = quadrature(mesh, "lumped").weights
    m = np.asarray(masses, dtype=float)
    if m.shape != w.shape:
        raise ValueError(f"masses: shape {m.shape} does not match the {w.size} vertices of the mesh")
    if not np.all(np.isfinite(m)):
        raise ValueError("masses: contains NaN or infinite entries")
    return m / w


def plot_field(mesh, values, ax=None, *, masses: bool = False, title: str | None = None, label: str = "",
               cmap: str = "viridis", contours: int = 0, colorbar: bool = True, vmin=None, vmax=None):
    """Draw a nodal field of a 1D or 2D mesh; returns the matplotlib axis.

    2D: Gouraud-shaded triangles with an equal aspect ratio and a colour bar labelled
    ``label`` (optionally ``contours`` white contour lines); 1D: a line through the vertices
    in the order of their coordinates.

    Parameters
    ----------
    mesh : skfem.Mesh
        ``MeshLine`` or ``MeshTri``.
    values : array_like, shape (n_vertices,)
        Nodal values (or masses with ``masses=True``).
    ax : matplotlib.axes.Axes, optional
        Axis to draw on; default a new figure's.
    masses : bool, optional
        ``values`` are vertex masses: draw :func:`nodal_density` instead.  Default False.
    title, label : str, optional
        Axis title; colour-bar (2D) or y-axis (1D) label.
    cmap : str, optional
        Colour map (2D).  Default ``"viridis"``.
    contours : int, optional
        Number of contour lines drawn over the colours (2D).  Default 0.
    colorbar : bool, optional
        Add a colour bar (2D).  Default True.
    vmin, vmax : float, optional
        Colour range (2D; e.g. shared by several panels).  Default: the values' range.

    Returns
    -------
    matplotlib.axes.Axes

    Raises
    ------
    ValueError
        If ``values`` does not have one entry per vertex or the mesh is not 1D or 2D.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt, skfem
    >>> from femot.fem import plot_field
    >>> ax = plot_field(skfem.MeshTri(), [0.0, 1.0, 1.0, 2.0], label="u", title="a field")
    >>> ax.get_title(), ax.get_xlabel()
    ('a field', 'x1')
    >>> plt.close("all")
    """
    import matplotlib.pyplot as plt

    vals = nodal_density(mesh, values) if masses else np.asarray(values, dtype=float)
    p = np.asarray(mesh.p)
    if vals.shape != (p.shape[1],):
        raise ValueError(f"values: shape {vals.shape} does not match the {p.shape[1]} vertices of the mesh")
    if ax is None:
        _, ax = plt.subplots(figsize=(5.0, 4.2) if p.shape[0] == 2 else (5.5, 3.2), layout="constrained")
    if p.shape[0] == 1:
        order = np.argsort(p[0])
        ax.plot(p[0, order], vals[order], color="tab:blue")
        ax.set_xlabel("x")
        ax.set_ylabel(label)
    elif p.shape[0] == 2:
        import matplotlib.tri as mtri

        tri = mtri.Triangulation(p[0], p[1], np.asarray(mesh.t).T)
        im = ax.tripcolor(tri, vals, shading="gouraud", cmap=cmap, vmin=vmin, vmax=vmax)
        if contours:
            ax.tricontour(tri, vals, levels=contours, colors="w", linewidths=0.5)
        ax.set_aspect("equal")
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
        if colorbar:
            ax.figure.colorbar(im, ax=ax, label=label, shrink=0.9)
    else:
        raise ValueError(f"mesh: plot_field draws 1D and 2D meshes, not dimension {p.shape[0]}")
    if title:
        ax.set_title(title, fontsize=10)
    return ax
