"""Meshes: stored files, loading errors, geometry (boundary distance, location, enlargement)."""
import numpy as np
import pytest

from femot.fem import available_meshes, boundary_distance, enlarged_mesh, load_mesh, locate, save_mesh
from femot.fem.meshes import BUILTIN_MESHES, MESH_DIR, builtin_mesh, element_volumes, simplex_set_boundary_distance


@pytest.mark.parametrize("name", sorted(BUILTIN_MESHES))
def test_stored_meshes_match_generator(name):
    assert (MESH_DIR / f"{name}.vtu").exists(), "run meshes/generate.py"
    m, ref = load_mesh(name), builtin_mesh(name)
    assert m.p.shape == ref.p.shape and m.t.shape == ref.t.shape
    # Same vertex set and the same total measure.
    assert np.allclose(np.sort(m.p, axis=1), np.sort(ref.p, axis=1))
    assert np.isclose(element_volumes(m).sum(), element_volumes(ref).sum(), rtol=1e-13)


def test_refine_and_aliases():
    m = load_mesh("unit_square", refine=1)
    assert m.t.shape[1] == 4 * load_mesh("unit_square").t.shape[1]
    assert load_mesh("unit_interval").p.shape[1] == 65
    assert set(BUILTIN_MESHES) <= set(available_meshes())


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.vtu"):
        load_mesh(tmp_path / "nope.vtu")
    bad = tmp_path / "garbage.vtu"
    bad.write_text("this is not a mesh")
    with pytest.raises(ValueError, match="garbage.vtu"):
        load_mesh(bad)
    with pytest.raises(ValueError, match="known mesh"):
        load_mesh("no_such_mesh")
    with pytest.raises(ValueError, match="refine"):
        load_mesh("unit_square", refine=-1)
    import meshio

    hexa = tmp_path / "hexa.vtu"
    cube = np.array([[i, j, k] for k in (0, 1) for j in (0, 1) for i in (0, 1)], dtype=float)
    meshio.Mesh(cube, [("hexahedron", np.array([[0, 1, 3, 2, 4, 5, 7, 6]]))]).write(hexa)
    with pytest.raises(ValueError, match="hexa.vtu: no supported cells.*hexahedron"):
        load_mesh(hexa)
    curve = tmp_path / "curve.vtu"
    meshio.Mesh(np.array([[0, 0, 0], [1, 1, 0.0]]), [("line", np.array([[0, 1]]))]).write(curve)
    with pytest.raises(ValueError, match="embedded"):
        load_mesh(curve)


def _write(tmp_path, name, points, cells):
    import meshio

    pts = np.zeros((len(points), 3))
    pts[:, :np.shape(points)[1]] = points
    path = tmp_path / name
    meshio.Mesh(pts, [(t, np.asarray(c)) for t, c in cells]).write(path)
    return path


SQUARE = [[0, 0], [1, 0], [1, 1], [0, 1]]


@pytest.mark.parametrize("points, cells, problem", [
    (SQUARE[:3] + [[np.nan, 1.0]], [("triangle", [[0, 1, 2], [0, 2, 3]])], "non-finite coordinates"),
    (SQUARE, [("triangle", [[0, 1, 2], [0, 2, 7]])], "triangle cell 1 refers to vertex 7"),
    (SQUARE, [("triangle", [[0, 1, 2], [0, 2, -1]])], "refers to vertex -1"),
    (SQUARE, [("triangle", [[0, 1, 2], [0, 2, 2]])], "triangle cell 1 repeats a vertex"),
    (SQUARE + [[2, 2]], [("triangle", [[0, 1, 2], [0, 2, 3], [0, 2, 4]])], "degenerate triangle cell.*area"),
    ([[0.0], [0.5], [0.5], [1.0]], [("line", [[0, 1], [1, 2], [2, 3]])], "degenerate line cell.*length"),
    ([[0.0], [0.5], [1.0]], [("line", [[0, 1], [1, 1], [1, 2]])], "line cell 1 repeats a vertex"),
])
def test_defective_mesh_files_are_refused_naming_file_and_problem(tmp_path, points, cells, problem):
    path = _write(tmp_path, "defect.vtu", points, cells)
    with pytest.raises(ValueError, match=f"defect.vtu: .*{problem}"):
        load_mesh(path)


def test_quads_are_split_into_triangles_not_dropped(tmp_path):
    # [0, 2] x [0, 1]: the left square as two triangles, the right one as a quad
    pts = [[0, 0], [1, 0], [1, 1], [0, 1], [2, 0], [2, 1]]
    m = load_mesh(_write(tmp_path, "mixed.vtu", pts, [("triangle", [[0, 1, 2], [0, 2, 3]]),
                                                        ("quad", [[1, 4, 5, 2]])]))
    assert m.t.shape[1] == 4 and element_volumes(m).sum() == pytest.approx(2.0, rel=1e-14)
    assert np.all(element_volumes(m) > 0)
    # A non-convex quad (reflex vertex c, area 1 by the shoelace formula): only the cut
    # through c keeps both triangles inside, whichever vertex the cell lists first.
    a, b, c, d = [0, 0], [2, 0], [0.5, 0.5], [0, 2]
    for order in ([0, 1, 2, 3], [1, 2, 3, 0]):
        m = load_mesh(_write(tmp_path, "dart.vtu", [a, b, c, d], [("quad", [order])]))
        assert element_volumes(m).sum() == pytest.approx(1.0, rel=1e-14), order
    # Boundary lines of a 2D file are still ignored (not an error).
    m = load_mesh(_write(tmp_path, "bnd.vtu", SQUARE, [("line", [[0, 1]]), ("triangle", [[0, 1, 2], [0, 2, 3]])]))
    assert element_volumes(m).sum() == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["unit_interval_16", "lshaped"])
def test_save_load_roundtrip(tmp_path, name):
    m = builtin_mesh(name)
    path = save_mesh(m, tmp_path / f"{name}.vtu")
    m2 = load_mesh(path)
    assert np.isclose(element_volumes(m2).sum(), element_volumes(m).sum(), rtol=1e-14)
    assert m2.p.shape == m.p.shape


def _dist_to_polyline(x, verts):
    """Independent reference: distance to a closed polyline sampled very finely."""
    s = np.linspace(0, 1, 20001)
    pts = np.concatenate([a + s[:, None] * (b - a) for a, b in zip(verts, np.roll(verts, -1, axis=0))])
    from scipy.spatial import cKDTree

    return cKDTree(pts).query(x)[0]


def test_boundary_distance_square_and_lshape():
    rng = np.random.default_rng(1)
    sq = load_mesh("unit_square")
    x = rng.random((500, 2))
    exact = np.minimum.reduce([x[:, 0], 1 - x[:, 0], x[:, 1], 1 - x[:, 1]])
    assert np.allclose(boundary_distance(sq, x), exact, atol=1e-14)
    L = load_mesh("lshaped")
    y = rng.uniform(-1, 1, (800, 2))
    y = y[~((y[:, 0] > 0) & (y[:, 1] > 0))]
    verts = np.array([[-1, -1], [1, -1], [1, 0], [0, 0], [0, 1], [-1, 1.0]])
    ref = _dist_to_polyline(y, verts)
    got = boundary_distance(L, y)
    assert np.all(got >= 0) and np.allclose(got, ref, atol=1e-4)
    # Outside points are reported with a negative sign.
    out = np.array([[0.5, 0.5], [1.5, 0.0]])
    assert np.all(boundary_distance(L, out) < 0)
    assert np.allclose(-boundary_distance(L, out), [0.5, 0.5])


def test_boundary_distance_1d():
    m = load_mesh("unit_interval_16")
    x = np.array([0.0, 0.1, 0.5, 0.97])
    assert np.allclose(boundary_distance(m, x), [0, 0.1, 0.5, 0.03])
    assert boundary_distance(m, [1.2])[0] == pytest.approx(-0.2)


def test_simplex_set_distance_reentrant_corner():
    """A cell near the reentrant corner: the nearest boundary point is the corner vertex,
    which lies closer to the cell's edge than any of the cell's vertices is to the boundary."""
    from skfem import MeshTri

    L = MeshTri.init_lshaped()  # the 6 coarse cells of [-1, 1]^2 minus (0, 1]^2
    tri = np.array([[[-0.05, -0.2], [-0.2, -0.05], [-0.5, -0.5]]])  # edge x + y = -0.25 faces (0, 0)
    ref = 0.25 / np.sqrt(2)  # distance from the reentrant corner to that edge
    vert_only = boundary_distance(L, tri[0]).min()
    assert ref < vert_only
    assert simplex_set_boundary_distance(L, tri) == pytest.approx(ref, rel=1e-12)


def test_locate_barycentric():
    rng = np.random.default_rng(2)
    m = load_mesh("disk")
    r, th = np.sqrt(rng.random(300)) * 0.95, rng.random(300) * 2 * np.pi
    x = np.column_stack([r * np.cos(th), r * np.sin(th)])
    cells, lam = locate(m, x)
    assert np.all(cells >= 0)
    rec = np.einsum("nk,knd->nd", lam, np.moveaxis(m.p[:, m.t[:, cells]], 0, -1))
    assert np.allclose(rec, x, atol=1e-12)
    assert np.all(locate(m, np.array([[2.0, 0.0], [0.0, -1.01]]))[0] == -1)


@pytest.mark.parametrize("name,rho", [("unit_interval_64", 0.1), ("lshaped", 0.2)])
def test_enlarged_mesh_keeps_distance(name, rho):
    m = load_mesh(name)
    big = enlarged_mesh(m, rho)
    d = boundary_distance(big, m.p.T)
    assert d.min() >= rho - 1e-12
    if m.p.shape[0] == 1:
        assert np.isclose(big.p.min(), -rho) and np.isclose(big.p.max(), 1 + rho)
        assert np.all(np.isin(m.p[0], big.p[0]))
    with pytest.raises(ValueError, match="rho"):
        enlarged_mesh(m, -1.0)


def test_plain_gmsh_file_loads_without_meshio_notes(tmp_path, capfd):
    import meshio
    import skfem

    from femot.fem import load_mesh

    m = skfem.MeshTri().refined(2)
    path = tmp_path / "plain.msh"
    meshio.write(path, meshio.Mesh(m.p.T, [("triangle", m.t.T)]), file_format="gmsh", binary=False)
    capfd.readouterr()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing else may be turned into a warning either
        mesh = load_mesh(path)
    cap = capfd.readouterr()
    assert cap.err == "" and cap.out == ""  # meshio writes its notes (here a blank line) to the terminal
    assert mesh.p.shape == (2, 25)
