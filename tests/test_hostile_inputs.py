"""Hostile inputs: each is refused with a ValueError naming the problem, or reported truthfully."""
from __future__ import annotations

import numpy as np
import pytest

from femot import solve_qrot
from femot.cli import main


def _cdist(X, Y):
    return np.sqrt(((X[:, None, :] - Y[None, :, :]) ** 2).sum(-1))


# -- the rounding floor -----------------------------------------------------------

def test_acceptance_at_the_floor_has_its_own_status_and_says_so():
    """At tiny gamma the residual cannot reach tol: accepted at the floor, status 5, numbers in the message."""
    rng = np.random.default_rng(3)
    X, Y = rng.random((26, 2)), rng.random((25, 2))
    m1, m2 = np.full(26, 1 / 26), np.full(25, 1 / 25)
    r = solve_qrot(_cdist(X, Y), m1, m2, 1e-9, 0.0, tol=1e-12)
    assert r.residual > 1e-12  # the instance really is at the floor
    assert r.status == 5 and r.success
    assert r.residual <= r.residual_floor
    assert r.message.startswith("accepted at the double-precision floor: residual ")
    assert f"{r.residual:.3g}" in r.message and "tol 1e-12" in r.message
    assert f"floor {r.residual_floor:.3g}" in r.message
    # a solve that reaches tol keeps status 0, and status 0 means residual <= tol
    ok = solve_qrot(_cdist(X, Y), m1, m2, 1e-2, 0.0, tol=1e-10)
    assert ok.status == 0 and ok.success and ok.residual <= 1e-10
    assert "floor" not in ok.message


# -- marginals and gamma ----------------------------------------------------------

def test_complex_and_misshaped_marginals_are_refused():
    rng = np.random.default_rng(0)
    C = rng.random((5, 5))
    m = np.full(5, 0.2)
    with pytest.raises(ValueError, match="mu1 must be real"):
        solve_qrot(C, m + 0j, m, 1e-2)
    with pytest.raises(ValueError, match="mu2 must be real"):
        solve_qrot(C, m, m + 1e-3j, 1e-2)
    with pytest.raises(ValueError, match=r"mu1 must be a 1D vector, got shape \(5, 1\)"):
        solve_qrot(C, m[:, None], m, 1e-2)
    with pytest.raises(ValueError, match="c must be real"):
        solve_qrot(C + 0j, m, m, 1e-2)


@pytest.mark.parametrize("eps", [0.0, 1e30])
def test_gamma_so_large_that_the_cost_vanishes_is_refused(eps):
    """gamma * max(mu) beyond max|c| / u: the cost is lost in the rounding of the potentials."""
    rng = np.random.default_rng(1)
    C = rng.random((25, 25))
    m = np.full(25, 1 / 25)
    with pytest.raises(ValueError, match=r"gamma = 1e\+30 is too large .* use gamma <= "):
        solve_qrot(C, m, m, 1e30, eps)
    # the largest admissible gamma the message names is accepted
    gmax = float(C.max()) * 25 / (np.finfo(float).eps * (1 / 25))
    r = solve_qrot(C, m, m, 0.5 * gmax, eps)
    assert r.status in (0, 1, 2, 4, 5)  # refused no more: a regular (possibly failed) solve


def test_identify_refuses_huge_gamma_cleanly(capsys):
    with _no_warnings():
        rc = main(["identify", "--random", "25", "--gamma", "1e30", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "gamma = 1e+30 is too large" in err
    assert "Traceback" not in err


def test_identify_refuses_sizes_that_cannot_fit_before_allocating(capsys):
    rc = main(["identify", "--random", "200000", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "--random 200000 needs at least" in err[0] and "iB of memory" in err[0] and "use a smaller N" in err[0]


def test_dense_memory_check_names_need_and_remedy():
    from femot._validation import check_dense_memory

    check_dense_memory(100, 100, 2, "x", "y", available=160_000)  # exactly fits
    with pytest.raises(ValueError, match=r"n = 101 needs at least 159 KiB .* 156 KiB are available; use less"):
        check_dense_memory(101, 101, 2, "n = 101", "use less", available=160_000)


class _no_warnings:
    """Context manager failing the test on any warning (overflow, ComplexWarning, ...)."""

    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("error")
        return self

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


# -- meshes -----------------------------------------------------------------------

def _write(tmp_path, name, points, cells, kind="triangle"):
    import meshio

    pts = np.zeros((len(points), 3))
    pts[:, : np.shape(points)[1]] = points
    path = tmp_path / name
    meshio.Mesh(pts, [(kind, np.asarray(cells, dtype=np.int64))]).write(path)
    return path


def _square(n=4):
    import skfem

    m = skfem.MeshTri.init_tensor(np.linspace(0, 1, n + 1), np.linspace(0, 1, n + 1))
    return m.p.T.copy(), m.t.T.copy()


def test_valid_meshes_still_load(tmp_path):
    from femot.fem.meshes import element_volumes, load_mesh

    p, t = _square()
    m = load_mesh(_write(tmp_path, "ok.vtu", p, t))
    assert element_volumes(m).sum() == pytest.approx(1.0, rel=1e-14)
    # mixed orientation is not a fold
    t2 = t.copy()
    t2[::2] = t2[::2, [1, 0, 2]]
    assert element_volumes(load_mesh(_write(tmp_path, "mixed.vtu", p, t2))).sum() == pytest.approx(1.0, rel=1e-14)
    for name in ("unit_square", "lshape", "disk", "interval"):
        try:
            load_mesh(name)
        except ValueError as exc:  # a name this build does not ship is fine; a refusal of a shipped mesh is not
            assert "known mesh" in str(exc)


def test_folded_mesh_is_refused(tmp_path):
    """The issue's probe: one interior node of the unit square moved to (0.9, 0.9) folds cells."""
    from femot.fem.meshes import load_mesh

    p, t = _square()
    k = int(np.argmin(np.abs(p - [0.25, 0.25]).sum(1)))
    p[k] = [0.9, 0.9]
    path = _write(tmp_path, "folded.vtu", p, t)
    with pytest.raises(ValueError, match=r"folded\.vtu: .*cell") as e:
        load_mesh(path)
    assert "folded" in str(e.value) or "overlap" in str(e.value) or "shared by" in str(e.value)


def test_overlapping_pieces_are_refused(tmp_path):
    """Two separate, consistently oriented triangles that overlap: their boundaries cross."""
    from femot.fem.meshes import load_mesh

    p = np.array([[0, 0], [1, 0], [0, 1], [0.2, 0.2], [1.2, 0.2], [0.2, 1.2]], float)
    path = _write(tmp_path, "two.vtu", p, [[0, 1, 2], [3, 4, 5]])
    with pytest.raises(ValueError, match=r"two\.vtu: boundary edges .* cross"):
        load_mesh(path)


def test_duplicated_cells_and_nodes_are_refused(tmp_path):
    from femot.fem.meshes import load_mesh

    p, t = _square()
    path = _write(tmp_path, "dupcell.vtu", p, np.vstack([t, t[3][[2, 0, 1]]]))
    with pytest.raises(ValueError, match=rf"dupcell\.vtu: cells 3 and {len(t)} are duplicates"):
        load_mesh(path)
    # a crack: the cells right of x = 0.5 use copies of the nodes on that line
    on = np.flatnonzero(np.isclose(p[:, 0], 0.5))
    copy = {int(i): len(p) + k for k, i in enumerate(on)}
    right = p[t].mean(1)[:, 0] > 0.5
    t2 = t.copy()
    for i, j in copy.items():
        t2[right] = np.where(t2[right] == i, j, t2[right])
    p2 = np.vstack([p, p[on]])
    path = _write(tmp_path, "crack.vtu", p2, t2)
    with pytest.raises(ValueError, match=r"crack\.vtu: duplicated nodes: points \d+ and \d+ .*cell \d+"):
        load_mesh(path)


def test_edge_shared_by_three_cells_is_refused(tmp_path):
    from femot.fem.meshes import load_mesh

    p = np.array([[0, 0], [1, 0], [0.5, 1], [0.5, -1], [0.5, 2]], float)
    path = _write(tmp_path, "fan.vtu", p, [[0, 1, 2], [0, 3, 1], [0, 1, 4]])
    with pytest.raises(ValueError, match=r"fan\.vtu: .*(shared by 3 cells|folded)"):
        load_mesh(path)


def test_overlapping_intervals_and_folded_tetrahedra_are_refused(tmp_path):
    import skfem

    from femot.fem.meshes import load_mesh

    path = _write(tmp_path, "seg.vtu", np.array([[0.0], [1.0], [2.0], [0.5], [3.0]]), [[0, 1], [1, 2], [3, 4]],
                  kind="line")
    with pytest.raises(ValueError, match=r"seg\.vtu: cell 2 \(interval \[0\.5, 3\]\) overlaps"):
        load_mesh(path)
    m = skfem.MeshTet().refined(1)
    p, t = m.p.T.copy(), m.t.T.copy()
    inner = np.flatnonzero(np.all((p > 0) & (p < 1), axis=1))
    if inner.size:  # move an interior node outside its star: some tetrahedron turns inside out
        p[inner[0]] = [0.95, 0.95, 0.95]
    else:
        p[int(np.argmax(p.sum(1)))] = [0.05, 0.05, 0.05]
    with pytest.raises(ValueError, match=r"tet\.vtu: .*(folded|shared by)"):
        load_mesh(_write(tmp_path, "tet.vtu", p, t, kind="tetra"))


def test_study_check_refuses_a_folded_mesh(tmp_path, capsys):
    """``femot study --check`` loads the meshes of the config: a bad file is named there, before any run."""
    x = np.linspace(0.0, 1.0, 41)
    pts = np.r_[x, 0.31, 0.89][:, None]
    cells = np.c_[np.arange(40), np.arange(1, 41)]
    cells = np.vstack([cells, [[41, 42]]])  # an extra interval lying over [0.31, 0.89]
    _write(tmp_path, "bad.vtu", pts, cells, kind="line")
    cfg = tmp_path / "s.toml"
    cfg.write_text('[study]\nname = "m"\nproblem = "transport"\nseeds = [0]\n'
                   '[schedule]\nn_levels = 2\ngamma0 = 1e-2\nfactor = 0.05\ns = 1.0\nC = 1.0\n'
                   '[mesh]\nname = "bad.vtu"\n'
                   '[transport]\nmu1 = { type = "random_diracs", n = 3, interval = [0.2, 0.8] }\n'
                   'mu2 = { type = "diracs", points = [0.35, 0.65] }\n')
    rc = main(["study", str(cfg), "--check"])
    err = capsys.readouterr().err
    assert rc == 2 and "bad.vtu: cell 40 (interval [0.31, 0.89]) overlaps another cell" in err, err
