"""The exact 2D (OCP) with a Lebesgue reference measure (femot.problems.control_exact) and its demo."""
import json

import numpy as np
import pytest
import skfem
from _instances import square_control_data

from femot.cli import main
from femot.core.semidiscrete import semidiscrete_ot
from femot.fem import PoissonOperator, nodal_density
from femot.fem.semidiscrete import mesh_domain
from femot.problems.control_exact import exact_control_objective, solve_control_exact

NU = 5e-4


def peer_instance(r):
    m = skfem.MeshTri().refined(r)
    op = PoissonOperator(skfem.MeshTri(2 * m.p - 1, m.t))
    X = op.vertices
    y_d = 0.5 * np.cos(np.pi * X[:, 0] / 2) * np.cos(np.pi * X[:, 1] / 2) * np.exp(X[:, 1])
    return op, y_d


def test_exact_objective_gradient_by_finite_differences():
    """f(u) = 1/2|y - y_d|^2 + nu W(u) has the gradient G^T(M y - b) + nu psi(u) along mass-preserving h."""
    op, y_d = peer_instance(2)
    rng = np.random.default_rng(2)
    n = op.nvertices
    u = rng.uniform(0.5, 1.5, n)
    u *= 4 / u.sum()
    nu = 0.3  # a large weight: the transport part of the gradient matters
    dom = mesh_domain(op.mesh)
    psi = semidiscrete_ot(dom, op.vertices, u, tol=1e-13).psi
    _, g_track = op.tracking_value_and_gradient(u, y_d)
    grad = g_track + nu * psi
    for _ in range(3):
        h = rng.standard_normal(n)
        h -= h.mean()
        eps = 1e-5
        fp = exact_control_objective(op, u + eps * h, y_d, nu).fun
        fm = exact_control_objective(op, u - eps * h, y_d, nu).fun
        assert (fp - fm) / (2 * eps) == pytest.approx(grad @ h, rel=1e-6)


def test_solver_certificate_and_optimality_against_perturbations():
    op, y_d = peer_instance(3)
    res = solve_control_exact(op, y_d, NU, tol=1e-12)
    assert res.success and res.status == 0
    assert res.gap <= 1e-12 * res.fun
    assert res.x.sum() == pytest.approx(4.0, rel=1e-12) and res.x.min() >= 0
    # fun is the exact objective of the returned control (independent evaluation)
    chk = exact_control_objective(op, res.x, y_d, NU)
    assert chk.fun == pytest.approx(res.fun, rel=1e-9)
    # no feasible control nearby does better (convexity: then none does)
    rng = np.random.default_rng(0)
    for _ in range(4):
        s = rng.dirichlet(np.ones(op.nvertices)) * 4
        v = res.x + 0.05 * (s - res.x)
        assert exact_control_objective(op, v, y_d, NU).fun >= res.fun - 1e-12 * res.fun
    # KKT in the weights: psi = -G^T(M y - b) / nu
    _, g = op.tracking_value_and_gradient(res.x, y_d)
    np.testing.assert_allclose(res.psi, -g / NU, atol=1e-8)


def test_femot_representation_callable_target_p2_and_admissible_controls():
    m = skfem.MeshTri().refined(3)
    op = PoissonOperator(skfem.MeshTri(2 * m.p - 1, m.t), order=2)
    y_d = lambda x: 0.5 * np.cos(np.pi * x[0] / 2) * np.cos(np.pi * x[1] / 2) * np.exp(x[1])
    res = solve_control_exact(op, y_d, NU, rho=0.2, tol=1e-12)
    assert res.success, res.message
    assert res.gap <= 1e-12 * res.fun
    off = np.setdiff1d(np.arange(op.nvertices), res.control_vertices)
    assert off.size > 0 and np.all(res.x[off] == 0)
    X = op.vertices[res.control_vertices]
    assert np.all(np.abs(X).max(axis=1) <= 0.8 + 1e-12)


def test_zero_and_nested_starts_reach_the_same_minimum():
    op, y_d = peer_instance(3)
    a = solve_control_exact(op, y_d, NU)
    rng = np.random.default_rng(1)
    b = solve_control_exact(op, y_d, NU, psi0=a.psi + 0.01 * rng.standard_normal(a.psi.size))
    assert b.success and b.fun == pytest.approx(a.fun, rel=1e-12)
    assert b.nit <= a.nit


def test_bad_input():
    op, y_d = peer_instance(2)
    with pytest.raises(ValueError, match="nu"):
        solve_control_exact(op, y_d, -1.0)
    with pytest.raises(ValueError, match="control_vertices"):
        solve_control_exact(op, y_d, NU, control_vertices=[10**6])
    with pytest.raises(ValueError, match="2D"):
        solve_control_exact(skfem.MeshLine().refined(3), np.zeros(9), NU)


def test_demo_levels_json(tmp_path):
    out = tmp_path / "exact.json"
    code = main(["demo", "ocp-2d-exact", "--quick", "--quiet", "--json", str(out), "--plot", str(tmp_path)])
    assert code == 0
    data = json.loads(out.read_text())
    levels = data["levels"]
    assert [row["r"] for row in levels] == [2, 3, 4]
    for row in levels:
        assert set("r nodes J W tracking newton_steps residual time_s success".split()) <= set(row)
        assert row["success"] and row["nodes"] == (2 ** row["r"] + 1) ** 2
        assert row["J"] == pytest.approx(row["tracking"] + NU * row["W"], rel=1e-12)
    J = [row["J"] for row in levels]
    assert abs(J[2] - J[1]) < abs(J[1] - J[0])  # converging under refinement
    assert (tmp_path / "ocp_2d_exact.png").exists()


def test_regularized_results_report_the_exact_objective():
    """A regularized control's result carries its exact (OCP) objective, which the exact minimum bounds."""
    from femot.problems.control import ControlProblem

    rho = 0.25
    mesh, op, y_d, mu2 = square_control_data(rho)
    nu = 0.1
    # delta = 3.2 h: below the resolution check's 4 h, which is about smoothing accuracy, not this test's point
    P = ControlProblem(op, y_d, mu2, nu, 1e-2, 0.2, rho=rho, transport="value", check_resolution=False)
    r = P.solve()
    assert r.exact_method == "semi-discrete"
    ref = solve_control_exact(op, y_d, nu, density=nodal_density(mesh, mu2), control_vertices=P.control_vertices,
                              tol=1e-12)
    assert ref.success
    assert r.exact_fun >= ref.fun - 1e-12
    # the exact objective is the tracking plus nu times W_2^2 to the P1 density of mu2
    chk = exact_control_objective(op, r.masses, y_d, nu, density=nodal_density(mesh, mu2))
    assert r.exact_fun == pytest.approx(chk.fun, rel=1e-9)
    assert r.exact_fun == pytest.approx(r.tracking + nu * r.exact_transport, rel=1e-12)


def test_nodal_density_reproduces_the_lumped_masses():
    mesh = skfem.MeshTri().refined(2)
    rng = np.random.default_rng(0)
    m = rng.uniform(0, 1, mesh.nvertices)
    dom = mesh_domain(mesh, nodal_density(mesh, m))
    assert dom.mass == pytest.approx(m.sum(), rel=1e-13)  # P1 integrals are exact lumped sums


def tiny_study():
    return {
        "study": {"name": "exact-tiny", "problem": "control-exact", "seeds": [0]},
        "schedule": {"gammas": [1e-2, 1e-3], "deltas": [0.3, 0.25]},
        "mesh": {"name": "unit_square", "resolution_ratio": 2.0},
        "control-exact": {"nu": 0.05, "rho": 0.3, "transport": "value",
                          "y_d": {"type": "state", "points": [[0.45, 0.47], [0.56, 0.53]], "weights": [0.5, 0.5]},
                          "mu2": {"type": "uniform", "box": [[0.35, 0.65], [0.35, 0.65]]}},
    }


def test_exact_control_study_rejects_a_discrete_prior():
    from femot.studies import parse_config

    raw = tiny_study()
    with pytest.raises(ValueError, match="control-exact.mu2"):
        parse_config(dict(raw, **{"control-exact": dict(raw["control-exact"], mu2={"type": "diracs"})}))
    with pytest.raises(ValueError, match="control-exact.mu2.box"):
        box = {"type": "uniform", "box": [[0.05, 0.5], [0.4, 0.6]]}  # closer than delta to the boundary
        parse_config(dict(raw, **{"control-exact": dict(raw["control-exact"], mu2=box)}))


@pytest.mark.slow
def test_exact_control_study_runs_and_reports_the_gap(tmp_path):
    """On a small fixed mesh: the regularized controls against the exact (OCP) on the same mesh."""
    from femot.studies import parse_config, run_study

    out = run_study(parse_config(tiny_study()), tmp_path / "study", quiet=True, plots=False)
    assert len(out.rows) == 2
    for row in out.rows:
        assert row["objective_gap"] >= -1e-10  # the exact control minimizes the exact objective
        assert np.isfinite(row["fun_bias"]) and row["control_w2"] >= 0
    assert "fun_bias" in (tmp_path / "study" / "report.md").read_text()


def test_exact_objective_rejects_a_control_of_the_wrong_mass():
    op, y_d = peer_instance(2)
    with pytest.raises(ValueError, match="masses"):
        exact_control_objective(op, np.full(op.nvertices, 1.0), y_d, NU)  # mass 25, the reference has 4


def test_exact_fields_are_computed_on_first_access_and_equal_the_lp_value():
    """exact_fun etc. are computed when first read (LP path: the prior off the vertices) and survive copies."""
    import copy

    from femot.problems.control import ControlProblem

    mesh, op, y_d, mu2 = square_control_data(0.25)
    P = ControlProblem(op, y_d, mu2, 0.1, 1e-2, 0.25, rho=0.25, transport="value", check_resolution=False,
                       target_points=0.5 + 0.98 * (op.vertices - 0.5))
    r = P.solve()
    assert r.success and "exact_fun" not in r  # not computed by the solve
    J, _, J_w = P.exact_objective(r.x)
    assert r.exact_method == "exact" and "exact_fun" in r
    assert r.exact_fun == J and r.exact_transport == J_w
    r2 = P.solve()  # (warm-started lower level: a slightly different control)
    clone = copy.copy(r2)  # a copy carries the values (computed by the copy), not the problem
    assert "exact_fun" in r2 and clone["exact_fun"] == r2.exact_fun == P.exact_objective(r2.x)[0]
