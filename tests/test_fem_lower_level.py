"""The continuous lower level: S_gamma(T^delta mu1, T^delta mu2) on the product quadrature."""
import numpy as np
import pytest
from skfem import MeshLine, MeshTri

from femot.core import solve_qrot
from femot.fem import (
    Density,
    DiracSum,
    Empirical,
    barycentric_map,
    export_plan,
    plan_image,
    quadrature,
    smooth,
    solve_lower_level,
)


@pytest.fixture(scope="module")
def core():
    return solve_qrot


def _bump(a, b):
    return lambda x: np.maximum(0.0, (x[:, 0] - a) * (b - x[:, 0])) ** 2


def _mu_pair():
    m = MeshLine(np.linspace(0, 1, 41))
    dens = Density(_bump(0.4, 0.8), m)
    mu1 = DiracSum([0.25, 0.5], [0.3, 0.2]) + dens.scaled(0.5 / dens.mass())
    mu2 = Density(_bump(0.2, 0.7), m)
    return mu1, mu2.scaled(1.0 / mu2.mass())


def test_plan_marginals_1d(core):
    mu1, mu2 = _mu_pair()
    q = quadrature(MeshLine(np.linspace(0, 1, 161)))
    gamma, delta = 1e-3, 0.1
    r = solve_lower_level(mu1, mu2, q, q, gamma, delta)
    assert r.success, r.message
    # Marginals are the smoothed measures (to solver tolerance) and carry |mu| + delta.
    assert np.allclose(r.m1, smooth(mu1, q, delta)) and np.allclose(r.m2, smooth(mu2, q, delta))
    p1, p2 = r.marginals()
    assert np.abs(p1 - r.m1).max() <= 1e-8 and np.abs(p2 - r.m2).max() <= 1e-8
    assert r.marginal_error <= 1e-8
    assert q.weights @ r.m1 == pytest.approx(1 + delta, rel=1e-12)
    # Structure of the solution: pi = (alpha (+) beta - c)_+ / gamma (docs/core.md).
    P = r.plan.toarray()
    ref = np.maximum(r.alpha[:, None] + r.beta[None, :] - r.cost, 0) / gamma
    assert np.all(P >= 0) and np.allclose(P, ref, atol=1e-9 * ref.max())
    tc = q.weights @ (r.cost * P) @ q.weights
    assert r.transport_cost == pytest.approx(tc, rel=1e-12)
    assert r.objective == pytest.approx(tc + gamma / 2 * q.weights @ (P * P) @ q.weights, rel=1e-12)


def test_unequal_masses_need_eps(core):
    mu1, mu2 = _mu_pair()
    q = quadrature(MeshLine(np.linspace(0, 1, 81)))
    with pytest.raises(ValueError, match="eps"):
        solve_lower_level(mu1, 2.0 * mu2, q, q, 1e-2, 0.1)
    r = solve_lower_level(mu1, 2.0 * mu2, q, q, 1e-2, 0.1, eps=1.0)
    assert r.success
    # Optimality with eps > 0: sum_j v_j pi_ij + eps alpha_i = m1_i (Part III (3.1), weighted).
    p1, p2 = r.marginals()
    assert np.abs(p1 + r.eps * r.alpha - r.m1).max() <= 1e-8
    assert np.abs(p2 + r.eps * r.beta - r.m2).max() <= 1e-8


def test_enlarged_domain_option(core):
    m = MeshLine(np.linspace(0, 1, 81))
    full = Density(lambda x: 1.0 + x[:, 0], m, mass=1.5)  # support = [0, 1]
    q = quadrature(m)
    with pytest.raises(ValueError, match="Lemma 2.4"):
        solve_lower_level(full, DiracSum([0.5], [1.5]), q, q, 1e-2, 0.05)
    r = solve_lower_level(full, DiracSum([0.5], [1.5]), q, q, 1e-2, 0.05, enlarge=True)
    assert r.success and r.marginal_error <= 1e-8
    assert r.q1.measure == pytest.approx(1.1) and r.q1.nodes.min() == pytest.approx(-0.05)
    assert r.q1.weights @ r.m1 == pytest.approx(1.55, rel=1e-12)


def test_plan_image_and_export(core, tmp_path):
    import meshio

    mu1, mu2 = _mu_pair()
    q1 = quadrature(MeshLine(np.linspace(0, 1, 61)))
    q2 = quadrature(MeshLine(np.linspace(0, 1, 41)))
    r = solve_lower_level(mu1, mu2, q1, q2, 1e-2, 0.1)
    img, x, y = plan_image(r)
    assert img.shape == (q2.n, q1.n) and np.all(np.diff(x) > 0)
    # Row sums of the image with the weights of Omega_1 give the second marginal.
    assert np.allclose(img @ q1.weights, r.m2, atol=1e-8)
    path = export_plan(r, tmp_path / "plan.vtu")[0]
    back = meshio.read(path)
    # Points are nodes (x_i, y_j) carrying pi there; every positive entry is exported.
    i = np.searchsorted(x, back.points[:, 0])
    j = np.searchsorted(y, back.points[:, 1])
    assert np.allclose(x[i], back.points[:, 0]) and np.allclose(y[j], back.points[:, 1])
    assert np.allclose(back.point_data["pi"], img[j, i])
    assert np.count_nonzero(back.point_data["pi"]) == np.count_nonzero(img)
    assert back.points.shape[0] < q1.n * q2.n  # only the support's cells are written


def test_two_dimensional_plan_and_export(core, tmp_path):
    import meshio

    mesh = MeshTri.init_sqsymmetric().refined(3)
    q = quadrature(mesh)
    rng = np.random.default_rng(3)
    mu1 = Empirical(0.3 + 0.15 * rng.random((30, 2)))
    mu2 = DiracSum([[0.7, 0.7], [0.65, 0.3]], [0.5, 0.5])
    r = solve_lower_level(mu1, mu2, q, q, 1e-2, 0.2)
    assert r.success and r.marginal_error <= 1e-8
    T = barycentric_map(r)
    assert np.all(np.isfinite(T))  # every node sends mass (the shift makes m1 > 0)
    paths = export_plan(r, tmp_path / "plan2d.vtu")
    assert len(paths) == 2
    a = meshio.read(paths[0])
    assert np.allclose(a.point_data["m1"], r.m1) and a.point_data["displacement"].shape == (q.n, 3)
    assert np.allclose(meshio.read(paths[1]).point_data["plan_marginal"], r.marginals()[1])


def test_input_errors():
    mu1, mu2 = _mu_pair()
    q = quadrature(MeshLine(np.linspace(0, 1, 21)))
    with pytest.raises(ValueError, match="gamma"):
        solve_lower_level(mu1, mu2, q, q, 0.0, 0.1)
    with pytest.raises(ValueError, match="delta"):
        solve_lower_level(mu1, mu2, q, q, 1e-2, -0.1)
    with pytest.raises(ValueError, match="q2"):
        solve_lower_level(mu1, mu2, q, "mesh", 1e-2, 0.1)
    with pytest.raises(ValueError, match="cost has shape"):
        solve_lower_level(mu1, mu2, q, q, 1e-2, 0.1, cost=np.zeros((3, 3)))


def test_qrot_options_are_checked_and_not_spelled_twice():
    """qrot_options go to the core after its checks; tol, max_iter, verbose have one spelling (keywords)."""
    mu1, mu2 = _mu_pair()
    q = quadrature(MeshLine(np.linspace(0, 1, 41)))
    with pytest.raises(ValueError, match=r"qrot_options: \['tol'\] are keywords of solve_lower_level"):
        solve_lower_level(mu1, mu2, q, q, 1e-2, 0.1, qrot_options={"tol": 1e-9})
    with pytest.raises(ValueError, match=r"unknown QROT option\(s\) \['bogus'\]"):
        solve_lower_level(mu1, mu2, q, q, 1e-2, 0.1, qrot_options={"bogus": 1})
    a = solve_lower_level(mu1, mu2, q, q, 1e-2, 0.1, qrot_options={"linear_solver": "cg"})
    b = solve_lower_level(mu1, mu2, q, q, 1e-2, 0.1)
    assert a.success and b.success and abs(a.objective - b.objective) <= 1e-8 * abs(b.objective)
