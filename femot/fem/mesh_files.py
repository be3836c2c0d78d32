"""Reading mesh files with meshio and refusing the unusable ones before they reach a solver.

:func:`read_mesh_file` accepts any simplicial mesh meshio reads (quadrilaterals are split
into triangles) and checks coordinates, cell indices, degenerate or duplicated cells and
nodes, and folded or overlapping cells, naming the file in every error.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["read_mesh_file"]

_CELL_DIM = {"line": 1, "triangle": 2, "tetra": 3}
_DIM_CELL = {v: k for k, v in _CELL_DIM.items()}


def _from_points_cells(points: np.ndarray, cells: np.ndarray, dim: int, source: str):
    from skfem import MeshLine, MeshTet, MeshTri

    points = np.asarray(points, dtype=float)
    if points.ndim == 1:
        points = points[:, None]
    extra = points[:, dim:]
    if extra.size and np.max(np.abs(extra)) > 1e-12 * max(1.0, np.max(np.abs(points))):
        raise ValueError(f"{source}: {_DIM_CELL[dim]} cells embedded in {points.shape[1]}D "
                         f"(nonzero coordinate beyond dimension {dim}) are not supported")
    if points.shape[1] < dim:
        raise ValueError(f"{source}: {_DIM_CELL[dim]} cells need {dim} coordinates, points have {points.shape[1]}")
    # Keep only the vertices used by the cells (gmsh files may carry geometry points).
    used, inv = np.unique(cells, return_inverse=True)
    p = points[used, :dim].T.copy()
    t = inv.reshape(cells.shape).T.copy()
    cls = {1: MeshLine, 2: MeshTri, 3: MeshTet}[dim]
    if dim == 1:
        return MeshLine(p[0][np.argsort(p[0])]) if _is_plain_interval(p, t) else cls(p, t)
    return cls(p, t)


_VOLUME_WORD = {1: "length", 2: "area", 3: "volume"}


def _check_points(points: np.ndarray, source: str) -> None:
    bad = ~np.all(np.isfinite(points), axis=1)
    if np.any(bad):
        i = np.flatnonzero(bad)
        more = f" (and {i.size - 1} more)" if i.size > 1 else ""
        raise ValueError(f"{source}: non-finite coordinates (NaN or inf) at point {i[0]}: {points[i[0]].tolist()}"
                         f"{more}")


def _check_cells(points: np.ndarray, cells: np.ndarray, kind: str, dim: int, source: str) -> None:
    """Indices in range, no vertex twice in a cell, no cell of zero measure."""
    n = points.shape[0]
    if not np.issubdtype(cells.dtype, np.integer):
        raise ValueError(f"{source}: {kind} cells have non-integer vertex indices ({cells.dtype})")
    out = (cells < 0) | (cells >= n)
    if np.any(out):
        k, j = np.argwhere(out)[0]
        raise ValueError(f"{source}: {kind} cell {k} refers to vertex {cells[k, j]}, but the file has {n} points "
                         f"(indices 0..{n - 1})")
    srt = np.sort(cells, axis=1)
    rep = np.any(srt[:, 1:] == srt[:, :-1], axis=1)
    if np.any(rep):
        k = int(np.flatnonzero(rep)[0])
        raise ValueError(f"{source}: {kind} cell {k} repeats a vertex: {cells[k].tolist()} "
                         f"({int(rep.sum())} such cell(s))")
    if kind not in ("line", "triangle", "tetra"):
        return
    v = points[cells][:, :, :dim] if points.shape[1] >= dim else None
    if v is None:
        return
    jac = v[:, 1:, :] - v[:, :1, :]  # (ncells, dim, dim)
    # A cell is degenerate when its measure vanishes against its own size (edge length^dim).
    edges = np.linalg.norm(v[:, :, None, :] - v[:, None, :, :], axis=-1).max(axis=(1, 2))
    if dim == 1:
        vol = np.abs(jac[:, 0, 0])
        tiny = vol <= 1e-14 * max(1.0, float(np.abs(points[:, :1]).max()))
    else:
        vol = np.abs(np.linalg.det(jac))
        tiny = vol <= 1e-12 * edges ** dim
    if np.any(tiny):
        k = int(np.flatnonzero(tiny)[0])
        raise ValueError(f"{source}: {int(tiny.sum())} degenerate {kind} cell(s) of zero {_VOLUME_WORD[dim]} "
                         f"(first: cell {k}, vertices {cells[k].tolist()})")


def _check_topology(points: np.ndarray, cells: np.ndarray, dim: int, source: str) -> None:
    """A mesh, not a soup: no duplicated cells or nodes, no folded or overlapping cells.

    * duplicated cells: two cells with the same vertex set;
    * duplicated nodes: two vertices used by cells at the same position (a crack:
      the cells on either side are not connected);
    * orientation and edge-manifold test (dim 2, 3): with every cell oriented
      positively, each facet (edge of a triangle, face of a tetrahedron) belongs to
      at most two cells, and to two only with opposite orientations, i.e. the two
      cells lie on opposite sides of it.  A folded cell lies on the same side as its
      neighbour.  With this, the total area equals the area enclosed by the
      boundary loops (Green's formula over the cells' edges, interior edges
      cancelling), so in 2D what can still overlap are whole pieces whose boundary
      loops cross: the boundary edges must not intersect each other;
    * dim 1: the intervals must not overlap.
    """
    srt = np.sort(cells, axis=1)
    _, first, counts = np.unique(srt, axis=0, return_index=True, return_counts=True)
    if np.any(counts > 1):
        k = int(first[np.flatnonzero(counts > 1)[0]])
        other = int(np.flatnonzero(np.all(srt == srt[k], axis=1))[1])
        raise ValueError(f"{source}: cells {k} and {other} are duplicates "
                         f"(both have vertices {sorted(cells[k].tolist())})")
    used = np.unique(cells)
    x = points[used, :dim]
    span = float(np.ptp(x, axis=0).max()) if used.size > 1 else 0.0
    pairs = cKDTree(x).query_pairs(r=1e-12 * max(span, 1e-300), output_type="ndarray")
    if len(pairs):
        i, j = (int(used[v]) for v in pairs[0])
        k = int(np.flatnonzero(np.any(cells == i, axis=1))[0])
        raise ValueError(f"{source}: duplicated nodes: points {i} and {j} are at the same position "
                         f"{points[i, :dim].tolist()} (cell {k} uses {i}); the mesh has a crack there")
    v = points[cells][:, :, :dim]
    if dim == 1:
        lo = np.minimum(v[:, 0, 0], v[:, 1, 0])
        hi = np.maximum(v[:, 0, 0], v[:, 1, 0])
        order = np.argsort(lo, kind="stable")
        reach = np.maximum.accumulate(hi[order])
        bad = np.flatnonzero(lo[order][1:] < reach[:-1] - 1e-12 * max(span, 1e-300))
        if bad.size:
            k = int(order[bad[0] + 1])
            raise ValueError(f"{source}: cell {k} (interval [{lo[k]:.6g}, {hi[k]:.6g}]) overlaps another cell")
        return
    jac = v[:, 1:, :] - v[:, :1, :]
    cells = cells.copy()
    neg = np.linalg.det(jac) < 0
    cells[neg, :2] = cells[neg, 1::-1]  # swap two vertices: positive orientation
    if dim == 2:
        facets = np.concatenate([cells[:, [0, 1]], cells[:, [1, 2]], cells[:, [2, 0]]])
    else:  # outward faces of a positively oriented tetrahedron
        facets = np.concatenate([cells[:, [1, 2, 3]], cells[:, [0, 3, 2]], cells[:, [0, 1, 3]], cells[:, [0, 2, 1]]])
    owner = np.tile(np.arange(cells.shape[0]), dim + 1)
    key = np.sort(facets, axis=1)
    # orientation of a facet against its sorted vertex order: parity of the sorting permutation
    perm = np.argsort(facets, axis=1)
    parity = np.zeros(len(facets), bool)
    m = perm.shape[1]
    for a in range(m):
        for b in range(a + 1, m):
            parity ^= perm[:, a] > perm[:, b]
    uniq, inv, cnt = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    what = "edge" if dim == 2 else "face"
    if np.any(cnt > 2):
        f = int(np.flatnonzero(cnt > 2)[0])
        own = owner[inv == f].tolist()
        raise ValueError(f"{source}: {what} {uniq[f].tolist()} is shared by {cnt[f]} cells {own} (cell {own[0]}): "
                         f"at most two cells may meet at a {what} (overlapping cells)")
    odd = np.zeros(len(uniq), np.int64)
    np.add.at(odd, inv, np.where(parity, 1, -1))
    same = np.flatnonzero((cnt == 2) & (odd != 0))
    if same.size:
        f = int(same[0])
        a, b = owner[inv == f].tolist()
        raise ValueError(f"{source}: cells {a} and {b} are folded over each other: both lie on the same side of "
                         f"their common {what} {uniq[f].tolist()} (overlapping or inverted cell {b})")
    if dim == 2:
        bnd = facets[cnt[inv] == 1]
        _check_boundary_crossings(points[:, :2], bnd, source)


def _check_boundary_crossings(x: np.ndarray, edges: np.ndarray, source: str, chunk: int = 2_000_000) -> None:
    """Boundary edges of a 2D mesh must meet only at shared end points."""
    m = len(edges)
    if m < 4:
        return
    a, b = x[edges[:, 0]], x[edges[:, 1]]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    tol = 1e-12 * float(np.ptp(x[edges.reshape(-1)], axis=0).max())

    def orient(p, q, r):
        return (q[..., 0] - p[..., 0]) * (r[..., 1] - p[..., 1]) - (q[..., 1] - p[..., 1]) * (r[..., 0] - p[..., 0])

    rows = max(1, chunk // m)
    for i0 in range(0, m, rows):
        i = np.arange(i0, min(m, i0 + rows))[:, None]
        j = np.arange(m)[None, :]
        cand = (j > i) & np.all(lo[i] <= hi[j] + tol, axis=-1) & np.all(lo[j] <= hi[i] + tol, axis=-1)
        shared = ((edges[i, 0] == edges[j, 0]) | (edges[i, 0] == edges[j, 1]) | (edges[i, 1] == edges[j, 0])
                  | (edges[i, 1] == edges[j, 1]))
        ii, jj = np.nonzero(cand & ~shared)
        if ii.size == 0:
            continue
        ii = ii + i0
        d1 = orient(a[ii], b[ii], a[jj])
        d2 = orient(a[ii], b[ii], b[jj])
        d3 = orient(a[jj], b[jj], a[ii])
        d4 = orient(a[jj], b[jj], b[ii])
        hit = np.flatnonzero((d1 * d2 <= 0) & (d3 * d4 <= 0))
        if hit.size:
            e, f = int(ii[hit[0]]), int(jj[hit[0]])
            raise ValueError(f"{source}: boundary edges {edges[e].tolist()} and {edges[f].tolist()} cross: "
                             f"cells overlap (the total area exceeds the area enclosed by the boundary)")


def _split_quads(points: np.ndarray, quads: np.ndarray) -> np.ndarray:
    """Two triangles per quadrilateral (a b c d in cyclic order), cut along the diagonal
    that keeps both triangles on the same side (the only valid cut of a non-convex quad)."""
    x = points[:, :2]

    def area(i, j, k):
        a, b, c = x[quads[:, i]], x[quads[:, j]], x[quads[:, k]]
        return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])

    ac = (area(0, 1, 2) * area(0, 2, 3)) > 0
    t_ac = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    t_bd = np.concatenate([quads[:, [0, 1, 3]], quads[:, [1, 2, 3]]])
    keep = np.concatenate([ac, ac])
    return np.where(keep[:, None], t_ac, t_bd)


def _is_plain_interval(p, t) -> bool:
    # A 1D mesh whose cells join consecutive sorted vertices: rebuild it sorted.
    x = p[0]
    order = np.argsort(x)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    r = np.sort(rank[t], axis=0)
    return bool(np.all(r[1] - r[0] == 1) and r.shape[1] == x.size - 1)


#: meshio's notes on every plain gmsh file (tags femot does not use): not shown to users.
_MESHIO_NOISE = ("missing physical tag data", "missing geometrical tag data")


def _quiet_read(meshio, path):
    """``meshio.read`` without its console notes on missing gmsh tags; other notes become warnings."""
    import contextlib
    import io
    import re
    import warnings

    buf = io.StringIO()
    with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(buf):
        mesh = meshio.read(path)
    for line in buf.getvalue().splitlines():
        text = re.sub(r"\x1b\[[0-9;]*m", "", line).strip()
        if text and not any(n in text for n in _MESHIO_NOISE):
            warnings.warn(f"{path}: meshio: {text}", stacklevel=3)
    return mesh

def read_mesh_file(path):
    """Read one simplicial mesh from ``path`` with meshio (see :func:`load_mesh`).

    The cells of the highest topological dimension in the file define the mesh; lower
    dimensional cells (boundary lines of a gmsh file) are ignored. Quadrilaterals are
    split into two triangles each; other cell types of the top dimension (hexahedra,
    second-order cells, polygons, ...) are refused rather than dropped. Raises
    ``ValueError`` naming the file for non-finite coordinates, vertex indices out of
    range or repeated within a cell, degenerate cells (zero length, area or volume),
    duplicated cells or nodes, and folded or overlapping cells (``_check_topology``).

    Parameters
    ----------
    path : str or os.PathLike
        A file in a format meshio reads (``.vtu``, ``.msh``, ...).

    Returns
    -------
    skfem.Mesh
        ``MeshLine``, ``MeshTri`` or ``MeshTet``.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file cannot be read or holds no usable simplicial cells (see above).
    """
    import meshio

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"mesh file not found: {path}")
    try:
        m = _quiet_read(meshio, path)
    except BaseException as exc:  # meshio raises SystemExit / ReadError / KeyError depending on format
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise ValueError(f"{path}: cannot be read as a mesh by meshio ({type(exc).__name__}: {exc})") from None
    src = str(path)
    try:
        from meshio._mesh import topological_dimension as topo
    except ImportError:  # pragma: no cover - older meshio
        topo = {}
    topo = dict(topo, vertex=0, line=1, triangle=2, quad=2, tetra=3)
    blocks = [(c.type, np.asarray(c.data)) for c in m.cells if len(c.data)]
    if not blocks:
        raise ValueError(f"{path}: no cells")
    unknown = sorted({t for t, _ in blocks if t not in topo})
    if unknown:
        raise ValueError(f"{path}: unknown cell type(s) {', '.join(unknown)}")
    dim = max(topo[t] for t, _ in blocks)
    top = [(t, d) for t, d in blocks if topo[t] == dim]
    unsupported = sorted({t for t, _ in top if t not in ("line", "triangle", "quad", "tetra")})
    if dim == 0 or unsupported:
        types = ", ".join(unsupported) or "vertex"
        raise ValueError(f"{path}: no supported cells: femot needs line, triangle (or quad, split into triangles) "
                         f"or tetra cells; the file's {dim}D cells are of type {types}")
    points = np.asarray(m.points, dtype=float)
    if points.ndim == 1:
        points = points[:, None]
    _check_points(points, src)
    parts = []
    for kind, data in top:
        _check_cells(points, data, kind, dim, src)
        if kind == "quad":
            data = _split_quads(points, data)
            _check_cells(points, data, "triangle", dim, src + " (quads split into triangles)")
        parts.append(data)
    cells = np.concatenate(parts).astype(np.int64)
    _check_topology(points, cells, dim, src)
    return _from_points_cells(points, cells, dim, src)
