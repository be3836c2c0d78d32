"""Meshes of the domains Omega_1, Omega_2: stored meshes, geometry queries, enlargement.

Simplicial scikit-fem meshes; the named ones are stored as VTU files in ``meshes/``
(docs/fem.md). Geometry for the smoothing of Part II (eq. (2.6), Assumption 2.3): exact
boundary distances, point location and the enlarged domain of Lemma 2.4.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from femot._docstrings import cite, fill_doc
from femot._validation import check_nonnegative_scalar, check_positive_scalar
from femot.fem.mesh_files import _DIM_CELL, read_mesh_file

__all__ = [
    "MESH_DIR",
    "BUILTIN_MESHES",
    "available_meshes",
    "builtin_mesh",
    "load_mesh",
    "save_mesh",
    "write_builtin_meshes",
    "mesh_dim",
    "element_volumes",
    "boundary_facets",
    "boundary_distance",
    "admissible_vertices",
    "simplex_set_boundary_distance",
    "cell_simplices",
    "locate",
    "enlarged_mesh",
]

# the argument and error entries the mesh functions share
_mesh_doc = fill_doc(
    mesh="""
mesh : skfem.Mesh
    A simplicial scikit-fem mesh (``MeshLine``, ``MeshTri`` or ``MeshTet``).
""",
    mesh_points="""
mesh : skfem.Mesh
    A simplicial scikit-fem mesh (``MeshLine``, ``MeshTri`` or ``MeshTet``).
points : array_like, shape (n, d)
    The points (shape ``(n,)`` accepted in 1D).
""",
    not_simplicial="""
ValueError
    If the mesh is not simplicial of dimension 1, 2 or 3.
""",
    bad_points="""
ValueError
    If the mesh is not simplicial or ``points`` has the wrong shape or NaN/inf entries.
""",
)

#: Folder holding the stored meshes (``<repository>/meshes``); override with $FEMOT_MESH_DIR.
MESH_DIR = Path(os.environ.get("FEMOT_MESH_DIR", Path(__file__).resolve().parents[2] / "meshes"))


def _interval(n_cells: int):
    from skfem import MeshLine

    return MeshLine(np.linspace(0.0, 1.0, n_cells + 1))


def _unit_square():
    from skfem import MeshTri

    return MeshTri.init_sqsymmetric().refined(4)


def _lshaped():
    from skfem import MeshTri

    return MeshTri.init_lshaped().refined(4)


def _disk(nrefs: int = 5):
    from skfem import MeshTri

    return MeshTri.init_circle(nrefs)


#: name -> (constructor, description) of the meshes stored in ``meshes/``.
BUILTIN_MESHES = {
    "unit_interval_16": (lambda: _interval(16), "[0, 1], 16 cells"),
    "unit_interval_64": (lambda: _interval(64), "[0, 1], 64 cells"),
    "unit_interval_256": (lambda: _interval(256), "[0, 1], 256 cells"),
    "unit_interval_1024": (lambda: _interval(1024), "[0, 1], 1024 cells"),
    "unit_square": (_unit_square, "[0, 1]^2, symmetric triangulation, 1089 vertices"),
    "lshaped": (_lshaped, "[-1, 1]^2 minus (0, 1]^2, 833 vertices, 1536 triangles"),
    "disk": (_disk, "unit disk (inscribed polygon), 2113 vertices, 4096 triangles"),
    "disk_coarse": (lambda: _disk(4), "unit disk (inscribed polygon), 545 vertices, 1024 triangles"),
}
_ALIASES = {"unit_interval": "unit_interval_64", "interval": "unit_interval_64",
            "square": "unit_square", "l_shaped": "lshaped", "lshape": "lshaped", "circle": "disk"}


def available_meshes() -> list[str]:
    """Names accepted by :func:`load_mesh` (stored meshes plus aliases).

    Examples
    --------
    >>> from femot.fem import available_meshes
    >>> "unit_square" in available_meshes()
    True
    """
    return sorted(set(BUILTIN_MESHES) | set(_ALIASES))


def builtin_mesh(name: str):
    """The mesh ``name`` (of :func:`available_meshes`) built with scikit-fem, as ``meshes/generate.py`` stores it.

    An unknown name raises a ValueError listing the known ones.
    """
    key = _ALIASES.get(name, name)
    if key not in BUILTIN_MESHES:
        raise ValueError(f"name: unknown mesh {name!r}; known meshes: {', '.join(available_meshes())}")
    return BUILTIN_MESHES[key][0]()


@_mesh_doc
def mesh_dim(mesh) -> int:
    """Spatial dimension of a simplicial scikit-fem mesh.

    Parameters
    ----------
    %(mesh)s

    Returns
    -------
    int
        1, 2 or 3.

    Raises
    ------
    %(not_simplicial)s

    Examples
    --------
    >>> import numpy as np, skfem
    >>> from femot.fem import mesh_dim
    >>> mesh_dim(skfem.MeshLine(np.linspace(0.0, 1.0, 5))), mesh_dim(skfem.MeshTri())
    (1, 2)
    """
    p, t = np.asarray(mesh.p), np.asarray(mesh.t)
    d = p.shape[0]
    if t.shape[0] != d + 1 or d not in (1, 2, 3):
        raise ValueError(f"mesh: only simplicial meshes (interval, triangle, tetrahedron) are supported, "
                         f"got {type(mesh).__name__} with {t.shape[0]} vertices per cell in dimension {d}")
    return d



def load_mesh(name_or_path, refine: int = 0):
    """Load a mesh by name (see :func:`available_meshes`) or from a file readable by meshio.

    Returns a scikit-fem ``MeshLine`` / ``MeshTri`` / ``MeshTet``, uniformly refined
    ``refine`` times. The highest-dimensional simplicial cells of the file define the
    mesh (boundary cells in gmsh files are ignored). Raises ``FileNotFoundError`` for a
    missing file and ``ValueError`` (naming the path) for unreadable or unsupported ones.

    Parameters
    ----------
    name_or_path : str or os.PathLike
        A mesh name (no suffix, no directory) or the path of a mesh file.
    refine : int, optional
        Number of uniform refinements, >= 0 (default 0).

    Returns
    -------
    skfem.Mesh

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If ``refine`` is not a nonnegative integer, the name is unknown, or the file is
        unreadable or unsupported.

    Examples
    --------
    >>> from femot.fem import load_mesh
    >>> mesh = load_mesh("unit_interval_16")
    >>> mesh.p.shape
    (1, 17)
    >>> load_mesh("unit_interval_16", refine=1).t.shape[1]
    32
    """
    if not isinstance(refine, (int, np.integer)) or refine < 0:
        raise ValueError(f"refine must be a nonnegative integer, got {refine!r}")
    s = os.fspath(name_or_path)
    path = Path(s)
    key = _ALIASES.get(s, s)
    if not path.suffix and os.sep not in s and "/" not in s:
        if key not in BUILTIN_MESHES:
            raise ValueError(f"name_or_path: {s!r} is neither a file nor a known mesh name; "
                             f"known meshes: {', '.join(available_meshes())}")
        stored = MESH_DIR / f"{key}.vtu"
        mesh = read_mesh_file(stored) if stored.exists() else builtin_mesh(key)
    else:
        mesh = read_mesh_file(path)
    return mesh.refined(int(refine)) if refine else mesh




@_mesh_doc
def save_mesh(mesh, path, point_data=None, cell_data=None) -> Path:
    """Write a simplicial mesh (points padded to 3D for VTK readers) with meshio.

    Parameters
    ----------
    %(mesh)s
    path : str or os.PathLike
        Output file; the format follows the suffix (meshio). Parent directories are created.
    point_data : dict or None, optional
        Arrays of nodal values by name.
    cell_data : dict or None, optional
        Arrays of per-cell values by name.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    %(not_simplicial)s

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import skfem
    >>> from femot.fem import load_mesh, save_mesh
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = save_mesh(skfem.MeshTri(), Path(tmp) / "square.vtu", point_data={"u": [0.0, 1.0, 1.0, 2.0]})
    ...     print(path.name, load_mesh(path).p.shape)
    square.vtu (2, 4)
    """
    import meshio

    d = mesh_dim(mesh)
    pts = np.zeros((mesh.p.shape[1], 3))
    pts[:, :d] = mesh.p.T
    cd = None if cell_data is None else {k: [np.asarray(v)] for k, v in cell_data.items()}
    out = meshio.Mesh(pts, [(_DIM_CELL[d], mesh.t.T.astype(np.int64))], point_data=point_data or {},
                      cell_data=cd or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.write(path)
    return path


def write_builtin_meshes(folder=None) -> list[Path]:
    """Write every mesh of :data:`BUILTIN_MESHES` as ``<folder>/<name>.vtu``.

    Parameters
    ----------
    folder : str or os.PathLike or None, optional
        Output directory; None (default) is the package's mesh directory.

    Returns
    -------
    list of pathlib.Path
        The written files.
    """
    folder = Path(folder) if folder is not None else MESH_DIR
    return [save_mesh(ctor(), folder / f"{name}.vtu") for name, (ctor, _) in BUILTIN_MESHES.items()]


# --------------------------------------------------------------------------- geometry


@_mesh_doc
def element_volumes(mesh) -> np.ndarray:
    """Lebesgue measure of every cell (length, area, volume).

    Parameters
    ----------
    %(mesh)s

    Returns
    -------
    numpy.ndarray, shape (nel,)
        ``|det J| / d!`` per cell.

    Examples
    --------
    >>> import skfem
    >>> from femot.fem import element_volumes
    >>> element_volumes(skfem.MeshTri()).tolist()  # the unit square cut into two triangles
    [0.5, 0.5]
    """
    d = mesh.p.shape[0]
    v = mesh.p[:, mesh.t]  # (d, d+1, nel)
    jac = v[:, 1:, :] - v[:, :1, :]  # (d, d, nel)
    det = np.linalg.det(np.moveaxis(jac, -1, 0))
    return np.abs(det) / float(np.prod(np.arange(1, d + 1)))


@_mesh_doc
def boundary_facets(mesh) -> np.ndarray:
    """Coordinates of the boundary facets, shape (nb, d, d): d vertices of dimension d.

    In 1D the facets are the boundary vertices (shape (nb, 1, 1)).

    Parameters
    ----------
    %(mesh)s

    Returns
    -------
    numpy.ndarray, shape (nb, d, d)
        The facets' vertex coordinates (cached on the mesh).

    Raises
    ------
    %(not_simplicial)s

    Examples
    --------
    >>> import skfem
    >>> from femot.fem import boundary_facets
    >>> boundary_facets(skfem.MeshTri()).shape  # the four sides of the unit square
    (4, 2, 2)
    """
    d = mesh_dim(mesh)
    cache = getattr(mesh, "_femot_bfacets", None)
    if cache is not None:
        return cache
    if d == 1:
        # Vertices belonging to exactly one cell.
        cnt = np.bincount(mesh.t.ravel(), minlength=mesh.p.shape[1])
        idx = np.flatnonzero(cnt == 1)
        out = mesh.p[:, idx].T[:, None, :]
    else:
        f = mesh.facets[:, mesh.boundary_facets()]  # (d, nb)
        out = np.moveaxis(mesh.p[:, f], 0, -1)  # (d vertices, nb, d coords)
        out = np.transpose(out, (1, 0, 2)).copy()
    try:
        object.__setattr__(mesh, "_femot_bfacets", out)
    except (AttributeError, TypeError):
        pass
    return out


def _point_segment_dist(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distances between points x (n, d) and segments [a_k, b_k] (m, d): (n, m)."""
    ab = b - a  # (m, d)
    ll = np.einsum("md,md->m", ab, ab)
    ll = np.where(ll > 0, ll, 1.0)
    ax = x[:, None, :] - a[None, :, :]  # (n, m, d)
    s = np.clip(np.einsum("nmd,md->nm", ax, ab) / ll, 0.0, 1.0)
    r = ax - s[..., None] * ab[None]
    return np.sqrt(np.einsum("nmd,nmd->nm", r, r))


def _point_triangle_dist(x: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Distances between points x (n, d) and triangles tri (m, 3, d), d in {2, 3}: (n, m)."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    e = np.minimum(np.minimum(_point_segment_dist(x, a, b), _point_segment_dist(x, b, c)),
                   _point_segment_dist(x, c, a))
    # Projection inside the triangle: the distance is the distance to its plane (0 in 2D).
    u, v = b - a, c - a
    uu, uv, vv = (np.einsum("md,md->m", u, u), np.einsum("md,md->m", u, v), np.einsum("md,md->m", v, v))
    den = uu * vv - uv**2
    ax = x[:, None, :] - a[None]
    pu, pv = np.einsum("nmd,md->nm", ax, u), np.einsum("nmd,md->nm", ax, v)
    s = (vv * pu - uv * pv) / den
    t = (uu * pv - uv * pu) / den
    inside = (s >= 0) & (t >= 0) & (s + t <= 1)
    r = ax - s[..., None] * u[None] - t[..., None] * v[None]
    plane = np.sqrt(np.einsum("nmd,nmd->nm", r, r))
    return np.where(inside, plane, e)


def _points_to_facets(x: np.ndarray, facets: np.ndarray, chunk: int = 2_000_000) -> np.ndarray:
    """min over facets of the distance from each point (chunked, exact)."""
    n, m = x.shape[0], facets.shape[0]
    out = np.empty(n)
    step = max(1, chunk // max(m, 1))
    k = facets.shape[1]
    for s in range(0, n, step):
        xs = x[s:s + step]
        if k == 1:
            diff = xs[:, None, :] - facets[None, :, 0, :]
            dd = np.sqrt(np.einsum("nmd,nmd->nm", diff, diff))
        elif k == 2:
            dd = _point_segment_dist(xs, facets[:, 0], facets[:, 1])
        else:
            dd = _point_triangle_dist(xs, facets)
        out[s:s + step] = dd.min(axis=1)
    return out


@_mesh_doc
def locate(mesh, points, tol: float = 1e-12):
    """Cell containing each point and its barycentric coordinates.

    Returns ``(cells, bary)``: ``cells[i] = -1`` for points outside the mesh (up to a
    relative tolerance ``tol``), ``bary`` (n, d+1) are the barycentric coordinates in
    that cell (clipped to [0, 1] and renormalized).

    Parameters
    ----------
    %(mesh_points)s
    tol : float, optional
        Relative tolerance for points on cell boundaries (default 1e-12).

    Raises
    ------
    %(bad_points)s

    Examples
    --------
    >>> import skfem
    >>> from femot.fem import locate
    >>> cells, bary = locate(skfem.MeshTri(), [[0.25, 0.5], [2.0, 2.0]])
    >>> cells.tolist(), bary[0].tolist()
    ([0, -1], [0.25, 0.25, 0.5])
    """
    d = mesh_dim(mesh)
    x = _as_points(points, d, "points")
    n = x.shape[0]
    cells = -np.ones(n, dtype=np.int64)
    bary = np.zeros((n, d + 1))
    if n == 0:
        return cells, bary
    if d == 1:
        return _locate_1d(mesh, x[:, 0], tol)
    verts = np.moveaxis(mesh.p[:, mesh.t], 0, -1)  # (d+1, nel, d)
    cent = verts.mean(axis=0)  # (nel, d)
    rad = np.sqrt(((verts - cent[None]) ** 2).sum(-1)).max()
    scale = np.abs(mesh.p).max() + 1.0
    pairs = cKDTree(cent).query_ball_point(x, r=rad * (1 + 1e-9) + tol * scale)
    cnt = np.fromiter((len(p) for p in pairs), dtype=np.int64, count=n)
    if cnt.sum() == 0:
        return cells, bary
    pi = np.repeat(np.arange(n), cnt)
    ei = np.fromiter((e for p in pairs for e in p), dtype=np.int64, count=int(cnt.sum()))
    v0 = verts[0, ei]  # (npair, d)
    jac = np.stack([verts[k + 1, ei] - v0 for k in range(d)], axis=-1)  # (npair, d, d)
    lam = np.linalg.solve(jac, (x[pi] - v0)[..., None])[..., 0]
    lam = np.concatenate([1 - lam.sum(axis=1, keepdims=True), lam], axis=1)
    ok = lam.min(axis=1) >= -tol * 10
    pi, ei, lam = pi[ok], ei[ok], lam[ok]
    # First hit wins (a point on a shared face belongs to either neighbour).
    first = np.unique(pi, return_index=True)[1]
    cells[pi[first]] = ei[first]
    lam = np.clip(lam[first], 0.0, None)
    bary[pi[first]] = lam / lam.sum(axis=1, keepdims=True)
    return cells, bary


def _locate_1d(mesh, x, tol):
    # Cells as sorted intervals [a_k, b_k]; binary search instead of a tree.
    cache = getattr(mesh, "_femot_loc1d", None)
    if cache is None:
        ends = np.sort(mesh.p[0, mesh.t], axis=0)
        order = np.argsort(ends[0])
        cache = (ends[0, order], ends[1, order], order)
        try:
            object.__setattr__(mesh, "_femot_loc1d", cache)
        except (AttributeError, TypeError):
            pass
    a, b, order = cache
    slack = tol * (np.abs(mesh.p).max() + 1.0)
    k = np.clip(np.searchsorted(a, x, side="right") - 1, 0, a.size - 1)
    # A point left of the found cell's start may still be in the previous cell's tolerance.
    ok = (x >= a[k] - slack) & (x <= b[k] + slack)
    cells = np.where(ok, order[k], -1)
    lam1 = np.where(ok, np.clip((x - a[k]) / (b[k] - a[k]), 0.0, 1.0), 0.0)
    # Barycentric coordinates in the cell's own vertex order.
    t = mesh.t[:, np.where(ok, order[k], 0)]
    first_is_left = mesh.p[0, t[0]] <= mesh.p[0, t[1]]
    bary = np.where(first_is_left[:, None], np.column_stack([1 - lam1, lam1]), np.column_stack([lam1, 1 - lam1]))
    bary[~ok] = 0.0
    return cells.astype(np.int64), bary


@_mesh_doc
def boundary_distance(mesh, points, signed: bool = True) -> np.ndarray:
    """Exact Euclidean distance from each point to the boundary of the meshed domain.

    Polygonal boundaries are used as they are (no curved geometry). With ``signed``,
    points outside the mesh get the negative distance.

    Parameters
    ----------
    %(mesh_points)s
    signed : bool, optional
        Negate the distance of points outside the mesh (default True).

    Returns
    -------
    numpy.ndarray, shape (n,)
        The distances.

    Raises
    ------
    %(bad_points)s

    Examples
    --------
    >>> import skfem
    >>> from femot.fem import boundary_distance
    >>> boundary_distance(skfem.MeshTri(), [[0.5, 0.5], [0.1, 0.5], [1.5, 0.5]]).tolist()
    [0.5, 0.1, -0.5]
    """
    d = mesh_dim(mesh)
    x = _as_points(points, d, "points")
    dist = _points_to_facets(x, boundary_facets(mesh))
    if signed:
        outside = locate(mesh, x)[0] < 0
        dist[outside] *= -1.0
    return dist


def admissible_vertices(mesh, rho: float) -> np.ndarray:
    """Indices of the mesh vertices at distance ``>= rho`` from the boundary.

    The admissible control set of (OCP) requires ``dist(supp mu1, boundary) >= rho``
    (Hillbrecht, Manns, Meyer, Part II, Sec. 3); a vertex measure satisfies it exactly
    when all its atoms sit on the vertices returned here. The comparison allows a
    rounding slack of ``1e-12`` times the size of the mesh's bounding box.

    Parameters
    ----------
    mesh : skfem.Mesh
        A 1D or 2D mesh.
    rho : float
        Required distance to the boundary, ``>= 0``; ``0`` admits every vertex.

    Returns
    -------
    numpy.ndarray
        Sorted vertex indices (int).

    Raises
    ------
    ValueError
        If ``rho`` is negative, the mesh is not 1D or 2D, or no vertex is admissible.

    Examples
    --------
    >>> import numpy as np, skfem
    >>> from femot.fem import admissible_vertices
    >>> admissible_vertices(skfem.MeshLine(np.linspace(0.0, 1.0, 5)), 0.3).tolist()  # only x = 0.5
    [2]
    """
    rho = check_nonnegative_scalar(rho, "rho")
    d = mesh_dim(mesh)
    if rho == 0:
        return np.arange(mesh.p.shape[1])
    if d not in (1, 2):
        raise ValueError(f"the admissible set (rho) is implemented for 1D and 2D meshes, got dim {d}")
    dist = boundary_distance(mesh, mesh.p.T, signed=False)
    scale = float(np.ptp(mesh.p, axis=1).max())
    idx = np.flatnonzero(dist >= rho - 1e-12 * scale)
    if idx.size == 0:
        raise ValueError(f"rho = {rho:g} leaves no admissible control vertex")
    return idx


@_mesh_doc
def simplex_set_boundary_distance(mesh, simplices) -> float:
    """Signed distance between a union of closed simplices and the boundary of ``mesh``.

    ``simplices`` has shape (m, k, d): m simplices with k vertices each (k = 1 for
    points, k = 2 for segments, k = 3 for triangles). Returns the minimum distance to
    the boundary, or minus the largest distance outside if some vertex lies outside the
    meshed domain. Exact in 1D and 2D: for disjoint convex polygons (a simplex and a
    boundary segment) the minimum distance is attained between a vertex of one and the
    other. In 3D only vertex-to-facet distances are used (edge-edge pairs are ignored, so
    the value can exceed the true distance for cells; it is exact for points).

    Parameters
    ----------
    %(mesh)s
    simplices : array_like, shape (m, k, d)
        Vertex coordinates of the simplices.

    Returns
    -------
    float
        The signed distance (``inf`` for an empty set).

    Raises
    ------
    ValueError
        If ``simplices`` does not have shape ``(m, k, d)`` for the mesh's dimension ``d``.
    """
    d = mesh_dim(mesh)
    S = np.asarray(simplices, dtype=float)
    if S.ndim != 3 or S.shape[2] != d:
        raise ValueError(f"simplices must have shape (m, k, {d}), got {S.shape}")
    if S.shape[0] == 0:
        return np.inf
    verts = np.unique(S.reshape(-1, d), axis=0)
    bf = boundary_facets(mesh)
    dist = _points_to_facets(verts, bf)
    outside = locate(mesh, verts)[0] < 0
    if np.any(outside):
        return -float(dist[outside].max())
    best = float(dist.min())
    if d == 2 and S.shape[1] >= 2 and best > 0:
        bverts = np.unique(bf.reshape(-1, d), axis=0)
        cent = S.mean(axis=1)
        rad = np.sqrt(((S - cent[:, None]) ** 2).sum(-1)).max()
        # Only simplices whose centroid is within reach of a boundary vertex can be closer.
        near = cKDTree(bverts).query(cent, distance_upper_bound=best + rad)[0] < np.inf
        if np.any(near):
            Sn = S[near]
            f = _point_segment_dist(bverts, Sn[:, 0], Sn[:, 1]) if S.shape[1] == 2 else \
                _point_triangle_dist(bverts, Sn)
            best = min(best, float(f.min()))
    return best


@_mesh_doc
def cell_simplices(mesh, cells=None) -> np.ndarray:
    """Vertex coordinates (m, d+1, d) of the given cells (all cells by default).

    Parameters
    ----------
    %(mesh)s
    cells : array_like of int or None, optional
        Cell indices; None (default) means all cells.

    Returns
    -------
    numpy.ndarray, shape (m, d + 1, d)
    """
    t = mesh.t if cells is None else mesh.t[:, np.asarray(cells, dtype=np.int64)]
    return np.moveaxis(mesh.p[:, t], 0, -1).transpose(1, 0, 2).copy()


def _as_points(points, d: int, name: str) -> np.ndarray:
    x = np.asarray(points, dtype=float)
    if d == 1 and x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] != d:
        raise ValueError(f"{name} must have shape (n, {d}), got {np.shape(points)}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite entries")
    return x


@cite("II")
@_mesh_doc
def enlarged_mesh(mesh, rho: float, h: float | None = None):
    """A mesh of a domain containing Omega + B(0, rho) (Part II, Lemma 2.4).

    Every point of Omega keeps distance >= rho from the boundary of the new domain,
    which is what Lemma 2.4 needs; in 1D it is exactly Omega^rho = [a - rho, b + rho]
    (the original vertices are kept), in 2D and 3D it is the box around Omega enlarged
    by rho, meshed uniformly with cell size about ``h`` (default: the mean cell size).
    Measures on Omega are extended by zero (mu^rho of the lemma).

    Parameters
    ----------
    %(mesh)s
    rho : float
        Enlargement, >= 0.
    h : float or None, optional
        Cell size of the new mesh in 2D/3D (and of the added cells in 1D); None (default)
        derives it from the mean cell volume.

    Returns
    -------
    skfem.Mesh
        A mesh of the same type and dimension.

    Raises
    ------
    ValueError
        If ``rho < 0``, ``h <= 0`` or the mesh is not simplicial.

    Examples
    --------
    >>> import numpy as np, skfem
    >>> from femot.fem import enlarged_mesh
    >>> big = enlarged_mesh(skfem.MeshLine(np.linspace(0.0, 1.0, 5)), 0.5)
    >>> float(big.p.min()), float(big.p.max())
    (-0.5, 1.5)
    """
    from skfem import MeshLine, MeshTet, MeshTri

    d = mesh_dim(mesh)
    rho = check_nonnegative_scalar(rho, "rho")
    vol = element_volumes(mesh)
    if h is None:
        h = float(np.mean(vol) ** (1.0 / d) * (1.0 if d == 1 else 1.5))
    h = check_positive_scalar(h, "h")
    lo, hi = mesh.p.min(axis=1), mesh.p.max(axis=1)
    if d == 1:
        x = np.unique(mesh.p[0])
        k = int(np.ceil(rho / h - 1e-9)) if rho > 0 else 0
        left = lo[0] - rho + np.arange(k) * (rho / k) if k else np.empty(0)
        right = hi[0] + rho - np.arange(k)[::-1] * (rho / k) if k else np.empty(0)
        # Interior gaps of a multi-interval mesh are filled by the sorted union.
        return MeshLine(np.unique(np.concatenate([left, x, right])))
    axes = []
    for i in range(d):
        a, b = lo[i] - rho, hi[i] + rho
        axes.append(np.linspace(a, b, max(2, int(np.ceil((b - a) / h)) + 1)))
    return MeshTri.init_tensor(*axes) if d == 2 else MeshTet.init_tensor(*axes)
