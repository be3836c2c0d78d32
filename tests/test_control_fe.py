"""ControlProblem on FE data: matrix-free cost, enlarged domain, delta resolution, consistent results."""
import re

import numpy as np
import pytest
import skfem

import femot.problems.control as control_module
from femot.core.cost import GeometricCost
from femot.fem import PoissonOperator, quadrature
from femot.fem.smoothing import mesh_size, mesh_spacing
from femot.problems.control import ControlProblem


def square(k, a=0.0, b=1.0):
    """[a, b]^2 cut into 2^k x 2^k squares of two triangles (spacing (b - a) / 2^k)."""
    m = skfem.MeshTri().refined(k)
    return skfem.MeshTri(a + (b - a) * m.p, m.t)


def bump_problem(k=4, delta=0.25, rho=0.25, **kw):
    """Unit square, known control (bump) generating y_d, prior bump; seeded random start."""
    op = PoissonOperator(square(k))
    X = op.vertices
    dist = np.minimum.reduce([X[:, 0], 1 - X[:, 0], X[:, 1], 1 - X[:, 1]])
    inside = dist >= rho - 1e-12
    m_true = np.where(inside, np.exp(-((X - [0.4, 0.45]) ** 2).sum(1) / 0.02), 0.0)
    m_true /= m_true.sum()
    mu2 = np.where(inside, np.exp(-((X - [0.6, 0.55]) ** 2).sum(1) / 0.03), 0.0)
    mu2 /= mu2.sum()
    return ControlProblem(op, op.state(m_true), mu2, 0.05, 5e-3, delta, rho=rho, **kw)


def random_control(P, seed):
    x = np.random.default_rng(seed).random(P.n) + 0.1
    return P.mass * x / x.sum()


def test_mesh_spacing_is_the_grid_spacing_on_structured_meshes():
    for k in (2, 3, 4):
        m = square(k)
        assert mesh_spacing(m) == pytest.approx(2.0**-k)
        assert mesh_size(m) == pytest.approx(np.sqrt(2) * 2.0**-k)  # the diagonal
    line = skfem.MeshLine(np.array([0.0, 0.1, 0.5, 1.0]))
    assert mesh_spacing(line) == pytest.approx(mesh_size(line)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="mesh"):
        mesh_spacing(np.zeros(3))


@pytest.mark.parametrize("transport", ["value", "plan"])
def test_matrix_free_cost_gives_the_dense_result(transport):
    """GeometricCost and the dense matrix define the same lower level: same f, gradient, Hessian products."""
    D = bump_problem(transport=transport, matrix_free=False, qrot_options={"tol": 1e-12})
    G = bump_problem(transport=transport, matrix_free=True, qrot_options={"tol": 1e-12})
    assert isinstance(G.c, GeometricCost) and isinstance(D.c, np.ndarray)
    x = random_control(D, 1)
    fd, gd = D(x)
    fg, gg = G(x)
    assert fg == pytest.approx(fd, rel=1e-9)
    # eps = 0: the gradient is defined up to a constant on the simplex (alpha + t, beta - t)
    t = gg - gd
    assert np.abs(t - t.mean()).max() <= 1e-7 * np.abs(gd).max()
    v = np.random.default_rng(2).standard_normal(D.n)
    hd, hg = D.hessp(x, v), G.hessp(x, v)
    assert np.abs(hg - hd).max() <= 1e-7 * np.abs(hd).max()


def test_matrix_free_switch_is_automatic_above_the_pair_count(monkeypatch):
    small = bump_problem()
    assert not small.matrix_free and isinstance(small.c, np.ndarray)
    monkeypatch.setattr(control_module, "MATRIX_FREE_PAIRS", 0.5 * small.q.n ** 2)
    big = bump_problem()
    assert big.matrix_free and isinstance(big.c, GeometricCost)
    # and the solution is the one of the dense problem (convex value formulation: unique f*)
    rd = bump_problem(transport="value", matrix_free=False).solve()
    rg = bump_problem(transport="value").solve()
    assert rd.success and rg.success
    assert rg.fun == pytest.approx(rd.fun, rel=1e-7)
    assert np.abs(rg.x - rd.x).sum() <= 1e-3 * rd.x.sum()


def test_resolution_is_checked_at_construction_with_h_delta_and_the_fix():
    # 16 x 16 squares: h = 1/16; delta = 0.2 needs h <= 0.05
    with pytest.raises(ValueError) as exc:
        bump_problem(k=4, delta=0.2, rho=0.25)
    msg = str(exc.value)
    for part in ("h = 0.0625", "delta = 0.2", "transport_mesh", "spacing <= 0.05", "delta >= 0.25",
                 "check_resolution=False"):
        assert part in msg, (part, msg)
    assert bump_problem(k=4, delta=0.2, rho=0.25, check_resolution=False).delta == 0.2
    # a finer transport mesh resolves it (the state mesh stays coarse)
    P = bump_problem(k=4, delta=0.2, rho=0.25, transport_mesh=square(5))
    assert P.h_transport == pytest.approx(1 / 32)


def lebesgue_problem(delta, enlarge=True, k=4, **kw):
    """The peer's data (Borchard & Wachsmuth) on [-1, 1]^2: mu2 = Lebesgue measure (mass 4) up to the boundary."""
    m = square(k, -1.0, 1.0)
    q = quadrature(square(k + 1, -1.0, 1.0))
    X = m.p
    yd = 0.5 * np.cos(np.pi * X[0] / 2) * np.cos(np.pi * X[1] / 2) * np.exp(X[1])
    return ControlProblem(PoissonOperator(m), yd, q.weights, 5e-4, 1e-3, delta, transport="value",
                          target_points=q.nodes, enlarge=enlarge, **kw)


def test_enlarge_smooths_on_the_enlarged_box_for_targets_touching_the_boundary():
    delta = 0.5
    with pytest.raises(ValueError, match="boundary|distance"):
        lebesgue_problem(delta, enlarge=False)
    P = lebesgue_problem(delta)
    # the transport lives on [-1 - delta, 1 + delta]^2 with the transport mesh's spacing
    assert P.q.nodes.min() == pytest.approx(-1 - delta) and P.q.nodes.max() == pytest.approx(1 + delta)
    assert mesh_spacing(P.q.mesh) == pytest.approx(P.h_transport)
    # both smoothed marginals carry the mass |mu2| + delta (Part II (2.6)) and are positive
    w = P.q.weights
    assert w @ P.mu2_density == pytest.approx(4 + delta, rel=1e-12)
    x = P.uniform()
    assert w @ P.lower.density(x) == pytest.approx(4 + delta, rel=1e-12)
    assert P.mu2_density.min() > 0
    # controls on every vertex (rho = 0: Lemma 2.4 needs no distance to the boundary), also on the boundary
    assert P.n == P.n_vertices
    r = P.solve()
    assert r.success, r.message
    assert r.fw_gap <= 1e-8 * abs(r.fun)


def test_enlarge_keeps_all_vertices_admissible_as_delta_decreases():
    counts = [lebesgue_problem(d, k=3, check_resolution=False).n for d in (0.5, 0.25, 0.125)]
    # (the enlarged grid has spacing h / ceil(h / delta): it keeps the vertices of Omega as nodes)
    assert counts == [81, 81, 81]
    # without enlarge the admissible set is dist >= rho = delta: it grows only as delta -> 0
    op = PoissonOperator(square(3, -1.0, 1.0))
    center = (np.abs(op.vertices).sum(1) < 1e-12).astype(float)  # mu2 = Dirac at the origin
    inner = [ControlProblem(op, np.zeros(op.nvertices), center, 0.1, 1e-2, d, check_resolution=False).n
             for d in (0.5, 0.25)]
    assert inner[0] < inner[1] < 81


def test_result_fw_gap_is_the_one_of_the_message():
    P = bump_problem(transport="value")
    r = P.solve()
    assert r.success
    quoted = float(re.search(r"fw_gap = ([0-9.e+-]+)", r.message).group(1))
    assert r.fw_gap == r.tr.fw_gap
    assert f"{r.fw_gap:.3e}" == f"{quoted:.3e}"
    assert r.fun == r.tr.fun


@pytest.mark.parametrize("formulation", ["value", "plan"])
def test_results_pickle_and_copy_although_solved_with_callable_options(formulation):
    # the value formulation's CG preconditioner and the plan formulation's bundle metric are bound
    # to the problem (which holds factorizations); the result keeps its options without them
    import copy
    import pickle

    m = skfem.MeshTri().refined(3)
    q = quadrature(m)
    yd = np.sin(np.pi * m.p[0]) * np.sin(np.pi * m.p[1])
    P = ControlProblem(PoissonOperator(m), yd, q.weights, 1e-2, 1e-2, 0.25, transport=formulation,
                       check_resolution=False, enlarge=True)
    r = P.solve(options={"max_iter": 5})
    for other in (pickle.loads(pickle.dumps(r)), copy.deepcopy(r)):
        np.testing.assert_array_equal(other.x, r.x)
        assert other.fun == r.fun and other.nit == r.nit
