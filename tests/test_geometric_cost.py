"""GeometricCost: |x - y|^p computed inside the passes gives the dense solver's plan and derivatives."""
from __future__ import annotations

import numpy as np
import pytest

from femot import GeometricCost, solve_qrot
from femot.core.cost import DenseCost


def _disk(rng, n):
    r = np.sqrt(rng.random(n))
    t = 2 * np.pi * rng.random(n)
    return np.c_[0.5 + 0.5 * r * np.cos(t), 0.5 + 0.5 * r * np.sin(t)]


def _cdist_p(X, Y, p):
    X = X.reshape(len(X), -1)
    Y = Y.reshape(len(Y), -1)
    s = ((X[:, None, :] - Y[None, :, :]) ** 2).sum(-1)
    return s if p == 2 else s ** (0.5 * p)


def _case(kind, n1, n2, seed=0):
    """Points and densities for the three geometries of the tests."""
    rng = np.random.default_rng(seed)
    if kind == "1d":
        X, Y = np.sort(rng.random(n1)), np.sort(rng.random(n2) * 0.8 + 0.3)
    elif kind == "2d":
        X, Y = rng.random((n1, 2)), _disk(rng, n2)
    elif kind == "1dx2d":  # a segment in the plane against a planar set
        X = np.c_[np.sort(rng.random(n1)), np.full(n1, 0.5)]
        Y = _disk(rng, n2)
    else:
        raise ValueError(kind)
    w1 = np.full(n1, 1.0 / n1) * (1 + 0.2 * rng.random(n1))
    w2 = np.full(n2, 1.0 / n2) * (1 + 0.2 * rng.random(n2))
    m1 = 1.0 + 0.5 * rng.random(n1)
    m2 = 1.0 + 0.5 * rng.random(n2)
    m1 /= w1 @ m1
    m2 /= w2 @ m2
    return X, Y, w1, w2, m1, m2


def _rel(A, B):
    return abs(A - B).max() / abs(B).max()


@pytest.mark.parametrize("kind", ["1d", "2d", "1dx2d"])
@pytest.mark.parametrize("p", [2.0, 1.0, 3.0])
def test_entries_match_the_matrix(kind, p):
    X, Y, *_ = _case(kind, 70, 90)
    G = GeometricCost(X, Y, p=p)
    C = _cdist_p(X, Y, p)
    assert G.shape == C.shape
    assert np.allclose(G.dense(), C, rtol=1e-14, atol=0)
    rows, cols = np.array([0, 5, 69]), np.array([3, 89, 0])
    assert np.allclose(G.entries(rows, cols), C[rows, cols], rtol=1e-14, atol=0)
    assert G.max_abs == pytest.approx(C.max(), rel=1e-14)
    r, c = G.weighted_sums(np.arange(70.0), np.ones(90))
    assert np.allclose(r, C @ np.ones(90), rtol=1e-12) and np.allclose(c, np.arange(70.0) @ C, rtol=1e-12)


def test_max_abs_uses_hull_and_matches_in_3d():
    rng = np.random.default_rng(4)
    X, Y = rng.normal(size=(500, 3)), rng.random((400, 3))
    assert GeometricCost(X, Y, p=1.5).max_abs == pytest.approx(_cdist_p(X, Y, 1.5).max(), rel=1e-14)


@pytest.mark.parametrize("kind", ["1d", "2d", "1dx2d"])
@pytest.mark.parametrize("eps", [0.0, 1e-2])
def test_same_plan_as_dense(kind, eps):
    X, Y, w1, w2, m1, m2 = _case(kind, 120, 150, seed=1)
    C = _cdist_p(X, Y, 2)
    gamma = 1e-3
    rd = solve_qrot(C, m1, m2, gamma, eps, w1, w2, tol=1e-12)
    rg = solve_qrot(GeometricCost(X, Y), m1, m2, gamma, eps, w1, w2, tol=1e-12)
    assert rd.success and rg.success
    assert _rel(rg.plan, rd.plan) <= 1e-10
    # the plan solves the problem: marginals
    assert np.abs((rg.plan @ w2 + eps * rg.alpha) - m1).max() <= 1e-9
    assert np.abs((rg.plan.T @ w1 + eps * rg.beta) - m2).max() <= 1e-9
    if kind == "1d":
        assert rg.init.startswith("monge")  # sorted 1D points are recognized as Monge


def test_same_plan_as_dense_large_mean_start():
    """Beyond the exact-LP start size the solver starts from the closed form (matrix-free sums)."""
    X, Y, w1, w2, m1, m2 = _case("2d", 260, 240, seed=2)
    C = _cdist_p(X, Y, 2)
    rd = solve_qrot(C, m1, m2, 3e-3, 0.0, w1, w2, tol=1e-12)
    rg = solve_qrot(GeometricCost(X, Y), m1, m2, 3e-3, 0.0, w1, w2, tol=1e-12)
    assert rd.success and rg.success and rg.init == "mean"
    assert _rel(rg.plan, rd.plan) <= 1e-10


@pytest.mark.parametrize("kind", ["1d", "2d", "1dx2d"])
def test_jvp_vjp_match_dense_and_finite_differences(kind):
    X, Y, w1, w2, m1, m2 = _case(kind, 40, 50, seed=3)
    gamma, eps = 1e-2, 1e-2
    G = GeometricCost(X, Y)
    rg = solve_qrot(G, m1, m2, gamma, eps, w1, w2, tol=1e-13)
    rd = solve_qrot(_cdist_p(X, Y, 2), m1, m2, gamma, eps, w1, w2, tol=1e-13)
    assert rg.success and rd.success
    rng = np.random.default_rng(7)
    h1, h2 = rng.normal(size=40), rng.normal(size=50)
    Jg = rg.jvp(h1, h2)
    assert _rel(Jg, rd.jvp(h1, h2)) <= 1e-8
    # central differences of the plan along (h1, h2)
    s = 1e-6
    rp = solve_qrot(G, m1 + s * h1, m2 + s * h2, gamma, eps, w1, w2, tol=1e-14, x0=(rg.alpha, rg.beta))
    rm = solve_qrot(G, m1 - s * h1, m2 - s * h2, gamma, eps, w1, w2, tol=1e-14, x0=(rg.alpha, rg.beta))
    fd = (rp.plan - rm.plan) / (2 * s)
    assert _rel(fd, Jg) <= 1e-5
    # vjp is the adjoint of jvp: <G, J h> = <vjp(G), h>
    Gm = rng.normal(size=(40, 50))
    p1, p2 = rg.vjp(Gm)
    q1, q2 = rd.vjp(Gm)
    assert np.allclose(p1, q1, rtol=1e-8, atol=1e-10) and np.allclose(p2, q2, rtol=1e-8, atol=1e-10)
    lhs = float(np.sum(Gm * Jg.toarray()))
    assert lhs == pytest.approx(float(p1 @ h1 + p2 @ h2), rel=1e-8)


def test_biactive_and_transport_cost_match_dense():
    X, Y, w1, w2, m1, m2 = _case("1d", 60, 60, seed=5)
    C = _cdist_p(X, Y, 2)
    rg = solve_qrot(GeometricCost(X, Y), m1, m2, 1e-3, 0.0, w1, w2, tol=1e-12)
    rd = solve_qrot(C, m1, m2, 1e-3, 0.0, w1, w2, tol=1e-12)
    # a band holding the six entries nearest to z = 0 (halfway to the seventh)
    az = np.sort(np.abs(rd.alpha[:, None] + rd.beta[None, :] - C).ravel())
    tol = 0.5 * (az[5] + az[6])
    bg, bd = rg.biactive(tol), rd.biactive(tol)
    assert bg[0].size == 6
    assert np.array_equal(bg[0], bd[0]) and np.array_equal(bg[1], bd[1])
    assert rg.transport_cost() == pytest.approx(rd.transport_cost(), rel=1e-10)


def test_memory_is_linear_in_the_points():
    rng = np.random.default_rng(0)
    G = GeometricCost(rng.random((3000, 2)), rng.random((3000, 2)))
    stored = sum(v.nbytes for v in vars(G).values() if isinstance(v, np.ndarray))
    assert stored <= 2 * 8 * 2 * 3000 + 1024


def test_bad_input():
    X = np.zeros((4, 2))
    with pytest.raises(ValueError, match="same dimension"):
        GeometricCost(X, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="p must"):
        GeometricCost(X, X, p=0.5)
    with pytest.raises(ValueError, match="x2"):
        GeometricCost(X, np.array([[np.nan, 0.0]]))
    with pytest.raises(ValueError, match="x1"):
        GeometricCost(np.zeros((0, 2)), X)
    with pytest.raises(ValueError, match="mu1"):
        solve_qrot(GeometricCost(X, X), np.ones(3), np.ones(4), 1.0)


def test_dense_cost_unchanged():
    C = np.random.default_rng(0).random((5, 6))
    D = DenseCost(C)
    assert D.dense() is D.matrix and D.kernel_operand is D.matrix


def test_lower_level_and_tracking_opt_in():
    """``matrix_free=True`` in the FE callers gives the dense path's plan, cost and gradient."""
    import skfem

    from femot.fem import Density, quadrature
    from femot.fem.lower_level import solve_lower_level
    from femot.fem.quadrature import product_cost
    from femot.problems.tracking import TrackingProblem

    mesh = skfem.MeshTri().refined(3)
    q = quadrature(mesh)
    G = product_cost(q, q, 2.0, matrix_free=True)
    assert isinstance(G, GeometricCost) and np.allclose(G.dense(), product_cost(q, q, 2.0), rtol=1e-14, atol=1e-15)
    with pytest.raises(ValueError, match="beta"):
        product_cost(q, q, 0.5, matrix_free=True)
    mu1 = Density(lambda x: 1.0 + x[:, 0], mesh)
    mu2 = Density(lambda x: 1.0 + x[:, 1] ** 2, mesh)
    mu1 = mu1.scaled(1.0 / mu1.mass())
    mu2 = mu2.scaled(1.0 / mu2.mass())
    rd = solve_lower_level(mu1, mu2, q, q, 1e-2, 0.1, check_support=False)
    rg = solve_lower_level(mu1, mu2, q, q, 1e-2, 0.1, check_support=False, matrix_free=True)
    assert rd.success and rg.success and isinstance(rg.cost, GeometricCost)
    assert _rel(rg.plan, rd.plan) <= 1e-10
    assert rg.transport_cost == pytest.approx(rd.transport_cost, rel=1e-10)

    line = skfem.MeshLine(np.linspace(0.0, 1.0, 25))
    x = line.p[0]
    mu2 = np.where((x >= 0.15 - 1e-12) & (x <= 0.85 + 1e-12), np.exp(-((x - 0.5) / 0.2) ** 2), 0.0)
    mu2 /= mu2.sum()
    pi_d = np.outer(np.ones(25), np.ones(25))
    kw = dict(rho=0.15)
    Pd = TrackingProblem(line, line, mu2, pi_d, 1e-3, 1e-3, 0.1, **kw)
    Pg = TrackingProblem(line, line, mu2, pi_d, 1e-3, 1e-3, 0.1, matrix_free=True, **kw)
    xc = np.full(Pd.n, 1.0 / Pd.n)
    fd, gd = Pd(xc)
    fg, gg = Pg(xc)
    assert fg == pytest.approx(fd, rel=1e-10)
    # The control lives on {x >= 0, sum x = mass}: only the gradient's action on mass-preserving
    # directions (sum d = 0) is defined.  Two exact solvers may differ by a constant (the
    # potentials' free constant, fixed differently by rounding), so compare projected gradients.
    assert Pd.weights is None  # unit weights: the projection removes the mean
    assert np.allclose(gg - gg.mean(), gd - gd.mean(), rtol=1e-8, atol=1e-12 * np.abs(gd).max())


def test_coarse_start_matches_dense_and_certificate_rejects_truncation():
    from femot.core import certify_working_set
    from femot.core.coarsening import coarse_start

    X, Y, w1, w2, m1, m2 = _case("2d", 400, 360, seed=11)
    C = _cdist_p(X, Y, 2)
    rd = solve_qrot(C, m1, m2, 1e-3, 0.0, w1, w2, tol=1e-12)
    # the coarse-to-fine start of init='coarse', here with small coarse levels
    start = coarse_start(X, Y, m1, m2, 1e-3, w1, w2, coarsest=100, factor=3.0, solver=solve_qrot)
    assert start is not None and len(start[2]) >= 1 and start[2][0]["n1"] < 400
    G = GeometricCost(X, Y)
    rm = solve_qrot(G, m1, m2, 1e-3, 0.0, w1, w2, x0=start[:2], tol=1e-12)
    assert rd.success and rm.success
    assert _rel(rm.plan, rd.plan) <= 1e-10
    P = rm.plan
    assert certify_working_set(G, rm.alpha, rm.beta, P.indptr, P.indices).size == 0
    # drop one active pair from the working set of row 7: the certificate must name that row
    i = 7
    keep = np.ones(P.nnz, bool)
    keep[P.indptr[i]] = False
    ind = P.indices[keep]
    ptr = P.indptr.copy()
    ptr[i + 1:] -= 1
    assert list(certify_working_set(G, rm.alpha, rm.beta, ptr, ind)) == [i]
    # the same with one full streaming pass as the counter
    assert list(certify_working_set(G, rm.alpha, rm.beta, ptr, ind, full=True)) == [i]
    assert certify_working_set(G, rm.alpha, rm.beta, P.indptr, P.indices, full=True).size == 0
    # a looser threshold asks for more than the support holds
    assert certify_working_set(G, rm.alpha, rm.beta, P.indptr, P.indices, threshold=-1e-2).size > 0


def test_coarse_init_without_coarser_level_is_the_automatic_start():
    X, Y, w1, w2, m1, m2 = _case("2d", 300, 280, seed=3)
    G = GeometricCost(X, Y)
    ra = solve_qrot(G, m1, m2, 1e-3, 0.0, w1, w2)
    rc = solve_qrot(G, m1, m2, 1e-3, 0.0, w1, w2, init="coarse")
    assert rc.init == ra.init and rc.nit == ra.nit and np.array_equal(rc.alpha, ra.alpha)
    assert [(lv["n1"], lv["n2"], lv["nit"], lv["init"]) for lv in rc.levels] == [(300, 280, ra.nit, ra.init)]


def _potentials(rng, n1, n2, spread):
    return rng.random(n1) * spread, rng.random(n2) * spread


@pytest.mark.parametrize("kind,p", [("1d", 2.0), ("2d", 2.0), ("1dx2d", 2.0), ("2d", 1.0), ("3d", 1.5), ("3d", 2.0)])
def test_tree_search_returns_the_full_pass_sets(kind, p):
    """Every pass by the k-d tree search gives the same pairs as the full streaming pass."""
    rng = np.random.default_rng(21)
    if kind == "3d":
        X, Y = rng.random((300, 3)), rng.random((280, 3)) * 0.7 + 0.2
        w1, w2 = np.full(300, 1 / 300), np.full(280, 1 / 280)
    else:
        X, Y, w1, w2, _, _ = _case(kind, 300, 280, seed=21)
    G, F = GeometricCost(X, Y, p), GeometricCost(X, Y, p, search="full")
    assert G.tree.leaves > 4  # a real tree, not one leaf
    al, be = _potentials(rng, 300, 280, 0.3)
    for thr in (0.0, -0.05, 0.02):
        assert np.array_equal(G.count_above(al, be, thr), F.count_above(al, be, thr))
        for a, b in zip(G.active(al, be, threshold=thr), F.active(al, be, threshold=thr)):
            assert np.array_equal(a, b)
        for a, b in zip(G.candidates(al, be, thr), F.candidates(al, be, thr)):
            assert np.array_equal(a, b)
    assert G.count_above(al, be).sum() > 100  # the test is not vacuous
    da, db = rng.normal(size=300) * 0.02, rng.normal(size=280) * 0.02
    eg, ef = G.evaluate(al, be, w1, w2, da, db, 0.6), F.evaluate(al, be, w1, w2, da, db, 0.6)
    assert np.array_equal(eg[2], ef[2])  # the same active pairs
    for a, b in zip(eg[:2], ef[:2]):  # sums equal up to the summation order
        assert np.allclose(a, b, rtol=1e-13, atol=1e-15)
    assert eg[3] == pytest.approx(ef[3], rel=1e-12)
    lg = G.line_candidates(al, be, da, db, 1.0, w1, w2)
    lf = F.line_candidates(al, be, da, db, 1.0, w1, w2)
    assert lg[0].size == lf[0].size > 0
    og, of = np.lexsort((lg[1], lg[0])), np.lexsort((lf[1], lf[0]))
    for a, b in zip(lg, lf):
        assert np.array_equal(a[og], b[of])


@pytest.mark.parametrize("kind", ["1d", "2d", "1dx2d"])
def test_tree_search_finds_every_active_pair_of_the_dense_plan(kind):
    """The search at the dense solver's potentials returns exactly the support of its plan."""
    X, Y, w1, w2, m1, m2 = _case(kind, 500, 450, seed=8)
    rd = solve_qrot(_cdist_p(X, Y, 2), m1, m2, 1e-3, 0.0, w1, w2, tol=1e-12)
    assert rd.success
    G = GeometricCost(X, Y)
    ip, ind, z = G.active(rd.alpha, rd.beta)
    P = rd.plan
    assert np.array_equal(ip, P.indptr) and np.array_equal(ind, P.indices)
    assert np.allclose(z / rd.gamma, P.data, rtol=1e-12, atol=0)
    # and the band the certificate of a perturbed point would need
    tau = 1e-3
    cnt = G.count_above(rd.alpha, rd.beta, -tau)
    Z = rd.alpha[:, None] + rd.beta[None, :] - _cdist_p(X, Y, 2)
    assert np.array_equal(cnt, (Z > -tau).sum(1))


def test_tree_solver_matches_full_search_solver_2d():
    """solve_qrot with the tree search and with full passes: the same plan, jvp and vjp."""
    X, Y, w1, w2, m1, m2 = _case("2d", 300, 260, seed=12)
    rt = solve_qrot(GeometricCost(X, Y), m1, m2, 1e-3, 0.0, w1, w2, tol=1e-12)
    rf = solve_qrot(GeometricCost(X, Y, search="full"), m1, m2, 1e-3, 0.0, w1, w2, tol=1e-12)
    assert rt.success and rf.success
    assert _rel(rt.plan, rf.plan) <= 1e-10
    assert np.array_equal(rt.plan.indices, rf.plan.indices)


def test_cost_protocol():
    from femot.core.cost import Cost, as_cost

    rng = np.random.default_rng(0)
    X = rng.random((20, 2))
    assert isinstance(GeometricCost(X, X), Cost)
    assert isinstance(DenseCost(np.ones((3, 4))), Cost)
    assert not isinstance(np.ones((3, 4)), Cost)

    class Wrapped:
        """A user cost: delegates to a DenseCost (the protocol is all the solver needs)."""

        def __init__(self, c):
            self._d = DenseCost(c)
            self.shape, self.max_abs = self._d.shape, self._d.max_abs

        def __getattr__(self, name):
            return getattr(self._d, name)

        evaluate = property(lambda self: self._d.evaluate)
        active = property(lambda self: self._d.active)
        count_above = property(lambda self: self._d.count_above)
        candidates = property(lambda self: self._d.candidates)
        line_candidates = property(lambda self: self._d.line_candidates)
        entries = property(lambda self: self._d.entries)
        weighted_sums = property(lambda self: self._d.weighted_sums)

    C = _cdist_p(X, X[::-1] * 0.9, 2)
    W = Wrapped(C)
    assert isinstance(W, Cost) and as_cost(W) is W
    n = 20
    r1 = solve_qrot(W, np.ones(n), np.ones(n), 1e-2, 0.0, np.full(n, 1 / n), np.full(n, 1 / n), tol=1e-12)
    r2 = solve_qrot(C, np.ones(n), np.ones(n), 1e-2, 0.0, np.full(n, 1 / n), np.full(n, 1 / n), tol=1e-12)
    assert r1.success and _rel(r1.plan, r2.plan) <= 1e-12


def test_affine_reference_closed_form():
    """W_2^2 of the affine study against the closed form from the moments of mu1."""
    from femot.studies.affine_study import DEFAULT_A, DEFAULT_B, affine_w2_squared

    # moments of f = 1 + sin(2 pi x1) cos(pi x2) / 2 on the unit square
    mean = np.array([0.5, 0.5])
    S = np.array([[1 / 3, 0.25 + 1 / (2 * np.pi ** 3)], [0.25 + 1 / (2 * np.pi ** 3), 1 / 3]])
    B = np.eye(2) - DEFAULT_A
    exact = np.trace(B.T @ B @ S) - 2 * DEFAULT_B @ B @ mean + DEFAULT_B @ DEFAULT_B
    assert affine_w2_squared() == pytest.approx(exact, rel=1e-13)
    with pytest.raises(ValueError, match="positive definite"):
        affine_w2_squared(np.array([[1.0, 0.0], [0.0, -1.0]]))


def test_transport_2d_levels_demo(tmp_path):
    import json

    from femot.cli import main
    from femot.studies.affine_study import affine_w2_squared

    out, plots = tmp_path / "lv.json", tmp_path / "plots"
    assert main(["demo", "transport-2d", "--levels", "2", "--m-last", "21", "--quiet", "--json", str(out),
                 "--plot", str(plots)]) == 0
    data = json.loads(out.read_text())
    rows = data["levels"]
    assert data["success"] and [lv["m"] for lv in rows] == [11, 21]
    assert all(r["success"] and r["certified"] and r["marginal_error"] <= 1e-8 for r in rows)
    assert rows[1]["cost_error"] < 0.5 * rows[0]["cost_error"]  # the error falls with h, gamma, delta
    assert rows[1]["map_error_l2"] < rows[0]["map_error_l2"]
    assert data["W2_squared"] == pytest.approx(affine_w2_squared(), rel=1e-15)
    assert np.isfinite(data["rate_cost"]) and data["rate_cost"] > 0
    assert (plots / "transport_2d_levels.png").exists()
