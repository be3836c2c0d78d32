"""Exact semi-discrete W_2^2 in 2D (femot.core.semidiscrete): closed forms, duality, the LP, derivatives."""
import numpy as np
import pytest
import skfem
from numpy.polynomial.legendre import leggauss

from femot.core import exact_ot
from femot.core.semidiscrete import SemiDiscreteDomain, laguerre_cells, semidiscrete_dual, semidiscrete_ot
from femot.fem.semidiscrete import mesh_domain

SQUARE = [[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]


def lshape_mesh(refine=3):
    """The L-shape [0,2]^2 minus [1,2]^2 (three unit squares), triangulated."""
    p = np.array([[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 1], [0, 2], [1, 2]], dtype=float).T
    t = np.array([[0, 1, 4], [0, 4, 3], [1, 2, 5], [1, 5, 4], [3, 4, 7], [3, 7, 6]]).T
    return skfem.MeshTri(p, t).refined(refine)


def square_moment(x0, y0, a):
    """int over [x0, x0+1] x [y0, y0+1] of |x - a|^2 (closed form)."""
    cube = lambda lo, c: ((lo + 1 - c) ** 3 - (lo - c) ** 3) / 3
    return cube(x0, a[0]) + cube(y0, a[1])


def tensor_integral(f, lo, hi, n=6):
    """Gauss-Legendre tensor rule on a box (exact for polynomials of degree <= 2n-1 in each variable)."""
    t, w = leggauss(n)
    x = lo[0] + (hi[0] - lo[0]) * (t + 1) / 2
    y = lo[1] + (hi[1] - lo[1]) * (t + 1) / 2
    X, Y = np.meshgrid(x, y, indexing="ij")
    W = np.outer(w, w) * (hi[0] - lo[0]) * (hi[1] - lo[1]) / 4
    return float(np.sum(W * f(X, Y)))


def grid_midpoints(lo, hi, n):
    h = (np.asarray(hi) - np.asarray(lo)) / n
    xs = [lo[k] + h[k] * (np.arange(n) + 0.5) for k in range(2)]
    X, Y = np.meshgrid(*xs, indexing="ij")
    return np.column_stack([X.ravel(), Y.ravel()]), float(np.prod(h))


# ------------------------------------------------------------------ closed forms

def test_single_dirac_is_the_second_moment_on_the_square():
    a = np.array([[0.3, -0.2]])
    dom = SemiDiscreteDomain.polygon(SQUARE)
    res = semidiscrete_ot(dom, a, [4.0])
    assert res.success
    assert res.fun == pytest.approx(8 / 3 + 4 * (a**2).sum(), rel=1e-13)


def test_single_dirac_on_the_lshape_and_outside_point():
    mesh = lshape_mesh(2)
    dom = mesh_domain(mesh)
    assert dom.mass == pytest.approx(3.0, rel=1e-14)
    for a in ([0.4, 1.3], [1.7, 1.6]):  # the second point lies in the missing square
        exact = sum(square_moment(x0, y0, a) for x0, y0 in [(0, 0), (1, 0), (0, 1)])
        res = semidiscrete_ot(dom, [a], [3.0])
        assert res.success and res.fun == pytest.approx(exact, rel=1e-12)


def test_p1_density_single_dirac_against_gauss_quadrature():
    mesh = skfem.MeshTri().refined(3)
    f = lambda x, y: 1 + x + 2 * y
    dom = mesh_domain(mesh, f(*mesh.p))
    a = np.array([0.35, 0.6])
    mass = tensor_integral(f, (0, 0), (1, 1))
    assert dom.mass == pytest.approx(mass, rel=1e-13)
    moment = tensor_integral(lambda x, y: f(x, y) * ((x - a[0]) ** 2 + (y - a[1]) ** 2), (0, 0), (1, 1))
    cells = laguerre_cells(dom, [a], [0.0])
    assert cells.moments[0] == pytest.approx(moment, rel=1e-12)
    # P0 density: the same function's triangle averages carry the same mass
    tri_mean = f(*mesh.p[:, mesh.t].mean(axis=1))
    assert mesh_domain(mesh, tri_mean, kind="P0").mass == pytest.approx(mass, rel=1e-12)


@pytest.mark.parametrize("m", [4, 8, 16])
def test_uniform_diracs_at_grid_cell_centres(m):
    """Diracs of mass h^2 at the centres of an m x m grid: the cells are the squares, W = h^2/6 = O(h^2)."""
    centres, area = grid_midpoints((0, 0), (1, 1), m)
    dom = SemiDiscreteDomain.polygon([[0, 0], [1, 0], [1, 1], [0, 1]])
    rng = np.random.default_rng(m)
    psi0 = 1e-3 * area * rng.standard_normal(m * m)  # a perturbed start: Newton has work to do
    res = semidiscrete_ot(dom, centres, np.full(m * m, area), psi0=psi0, tol=1e-12)
    assert res.success, res.message
    h = 1.0 / m
    assert res.fun == pytest.approx(h**2 / 6, rel=1e-10)
    assert np.ptp(res.psi) <= 1e-9 * h**2  # the optimal weights are constant
    assert res.dual == pytest.approx(res.fun, rel=1e-10)


# -------------------------------------------------------- against the LP (femot.exact_ot)

def lp_bound_check(lo, hi, n_grid, sites, masses, w2_exact, inside=None):
    """The LP on grid midpoints (rho_h) against the exact value, within the triangle inequality.

    ``|W_2^2(rho, u) - W_2^2(rho_h, u)| <= W_2(rho, rho_h) (W_2(rho, u) + W_2(rho_h, u))`` and, for square
    cells of side s, ``W_2^2(rho, rho_h) = |rho| s^2 / 6``.
    """
    X, area = grid_midpoints(lo, hi, n_grid)
    if inside is not None:
        X = X[inside(X)]
    c = ((X[:, None, :] - sites[None, :, :]) ** 2).sum(axis=2)
    lp = exact_ot(c, np.full(X.shape[0], area), masses)
    assert lp.success
    dist = np.sqrt(area / 6 * X.shape[0] * area)  # square cells: side^2 = area
    err = abs(lp.cost - w2_exact)
    assert err <= dist * (np.sqrt(w2_exact) + np.sqrt(lp.cost)) * (1 + 1e-9)
    return err


def test_against_the_lp_on_fine_grids():
    rng = np.random.default_rng(7)
    sites = rng.uniform(0, 1, (6, 2))
    masses = rng.uniform(0.5, 1.5, 6)
    masses /= masses.sum()
    dom = SemiDiscreteDomain.polygon([[0, 0], [1, 0], [1, 1], [0, 1]])
    res = semidiscrete_ot(dom, sites, masses)
    assert res.success
    errs = [lp_bound_check((0, 0), (1, 1), n, sites, masses, res.fun) for n in (16, 48)]
    assert errs[1] < errs[0]  # the discretized LP converges to the semi-discrete value


def test_lshape_against_the_lp_and_cells_inside():
    mesh = lshape_mesh(3)
    dom = mesh_domain(mesh)
    assert dom.pieces.shape[0] == mesh.t.shape[1]  # non-convex: the triangles are the pieces
    rng = np.random.default_rng(3)
    inside = lambda X: ~((X[:, 0] > 1) & (X[:, 1] > 1))
    sites = rng.uniform(0, 2, (40, 2))
    sites = sites[inside(sites)][:12]
    masses = np.full(sites.shape[0], 3.0 / sites.shape[0])
    res = semidiscrete_ot(dom, sites, masses, tol=1e-12)
    assert res.success, res.message
    assert np.abs(res.cell_masses - masses).max() <= 1e-12 * 3
    assert res.dual == pytest.approx(res.fun, rel=1e-9)
    cells = laguerre_cells(dom, sites, res.psi, polygons=True)
    V = np.vstack(cells.polygons)
    assert not np.any((V[:, 0] > 1 + 1e-12) & (V[:, 1] > 1 + 1e-12))  # nothing in the missing square
    lp_bound_check((0, 0), (2, 2), 40, sites, masses, res.fun, inside=inside)


# ------------------------------------------------------------- derivatives in psi

@pytest.mark.parametrize("density", ["lebesgue", "p1"])
def test_gradient_and_hessian_by_finite_differences(density):
    mesh = skfem.MeshTri().refined(3)
    f = None if density == "lebesgue" else 0.5 + mesh.p[0] ** 2 + mesh.p[1]
    dom = mesh_domain(mesh, f)
    rng = np.random.default_rng(11)
    n = 15
    sites = rng.uniform(0, 1, (n, 2))
    u = rng.uniform(0.5, 1.5, n)
    u *= dom.mass / u.sum()
    psi = 0.01 * rng.standard_normal(n)
    val, grad, hess = semidiscrete_dual(dom, sites, u, psi)
    for _ in range(3):
        d = rng.standard_normal(n)
        eps = 1e-6
        vp, gp, _ = semidiscrete_dual(dom, sites, u, psi + eps * d)
        vm, gm, _ = semidiscrete_dual(dom, sites, u, psi - eps * d)
        assert (vp - vm) / (2 * eps) == pytest.approx(grad @ d, rel=1e-6, abs=1e-9)
        np.testing.assert_allclose((gp - gm) / (2 * eps), hess @ d, rtol=1e-5, atol=1e-8)
    H = hess.toarray()
    np.testing.assert_allclose(H, H.T, atol=1e-14)
    assert np.linalg.eigvalsh(H).max() <= 1e-12  # concave
    np.testing.assert_allclose(H.sum(axis=1), 0, atol=1e-12)


def test_weak_duality_and_masses_partition():
    dom = SemiDiscreteDomain.polygon(SQUARE)
    rng = np.random.default_rng(5)
    sites = rng.uniform(-1, 1, (30, 2))
    u = np.full(30, 4 / 30)
    res = semidiscrete_ot(dom, sites, u)
    for _ in range(5):
        psi = rng.standard_normal(30)
        val, _, _ = semidiscrete_dual(dom, sites, u, psi)
        assert val <= res.fun + 1e-12
        assert laguerre_cells(dom, sites, psi, hessian=False).masses.sum() == pytest.approx(4.0, rel=1e-13)


def test_zero_masses_and_failures():
    dom = SemiDiscreteDomain.polygon(SQUARE)
    sites = np.array([[0.0, 0.0], [0.5, 0.5], [-0.5, 0.2]])
    res = semidiscrete_ot(dom, sites, [2.0, 0.0, 2.0])
    assert res.success and np.isnan(res.psi[1]) and res.cell_masses[1] == 0
    # a site far outside with positive mass has an empty starting cell: reported, not hidden
    res = semidiscrete_ot(dom, np.array([[0.0, 0.0], [9.0, 9.0]]), [2.0, 2.0])
    assert not res.success and res.status == 2
    with pytest.raises(ValueError, match="masses"):
        semidiscrete_ot(dom, sites, [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="sites"):
        semidiscrete_ot(dom, sites[:, :1], [4.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="sites"):
        laguerre_cells(dom, np.zeros((0, 2)), [])
    with pytest.raises(ValueError, match="vertices"):
        SemiDiscreteDomain.polygon([[0, 0], [1, 0], [0.2, 0.2], [0, 1]])
    with pytest.raises(ValueError, match="density"):
        SemiDiscreteDomain.triangles([[0, 0], [1, 0], [0, 1]], [[0, 1, 2]], [1.0, -1.0, 1.0])


def test_density_vanishing_on_part_of_the_domain():
    """Sites where the density vanishes: the uniform start has empty cells; continuation through blends."""
    mesh = skfem.MeshTri().refined(4)
    f = np.maximum(mesh.p[0] - 0.5, 0.0)  # P1 density, zero on the left half
    dom = mesh_domain(mesh, f)
    rng = np.random.default_rng(4)
    sites = rng.uniform(0, 1, (20, 2))
    assert np.any(sites[:, 0] < 0.4)
    u = rng.uniform(0.5, 1.5, 20)
    u *= dom.mass / u.sum()
    assert laguerre_cells(dom, sites, np.zeros(20), hessian=False).masses.min() == 0
    res = semidiscrete_ot(dom, sites, u, tol=1e-12)
    assert res.success, res.message
    np.testing.assert_allclose(res.cell_masses, u, rtol=0, atol=1e-12 * dom.mass)
    assert res.dual == pytest.approx(res.fun, rel=1e-9)


def test_rounding_level_targets_get_empty_cells_within_the_tolerance():
    """Masses like 1e-17 (an upper-level solver's rounding) are left with empty cells, inside tol."""
    dom = SemiDiscreteDomain.polygon([[0, 0], [1, 0], [1, 1], [0, 1]])
    rng = np.random.default_rng(9)
    sites = rng.uniform(0, 1, (12, 2))
    u = rng.uniform(0.5, 1.5, 12)
    u[[2, 7]] = 1e-17
    u /= u.sum()
    res = semidiscrete_ot(dom, sites, u, tol=1e-10)
    assert res.success, res.message
    assert res.cell_masses[2] == 0 and res.cell_masses[7] == 0
    assert np.abs(res.cell_masses - u).max() <= 1e-10  # certified against the targets as given
