"""Quadrature rules and the product cost."""
import numpy as np
import pytest

from femot.fem import load_mesh, product_cost, product_quadrature, quadrature
from femot.fem.meshes import boundary_facets


def _polygon_area(mesh):
    """Shoelace area of the boundary polygon (independent of the triangulation)."""
    bf = boundary_facets(mesh)  # unordered boundary segments
    a, b = bf[:, 0], bf[:, 1]
    # Sum over oriented segments; orient by the cell on the inside via the divergence theorem:
    # area = 1/2 sum (x_a y_b - x_b y_a) with the outward-consistent orientation.
    mid = 0.5 * (a + b)
    tang = b - a
    normal = np.column_stack([tang[:, 1], -tang[:, 0]])
    # Flip normals that point into the domain (probe a small step inside).
    from femot.fem import locate

    step = 1e-6 * normal / np.linalg.norm(normal, axis=1, keepdims=True)
    inward = locate(mesh, mid + step)[0] >= 0
    normal[inward] *= -1
    # Divergence theorem with F = x / 2: area = 1/2 sum mid . n * |e| (n unnormalized = |e| n).
    return 0.5 * np.sum(np.einsum("kd,kd->k", mid, normal))


@pytest.mark.parametrize("name", ["unit_interval_64", "unit_square", "lshaped", "disk"])
@pytest.mark.parametrize("rule", ["lumped", "gauss"])
def test_weights_sum_to_domain_measure(name, rule):
    m = load_mesh(name)
    q = quadrature(m, rule, order=2)
    assert np.all(q.weights > 0)
    ref = 1.0 if m.p.shape[0] == 1 else _polygon_area(m)
    assert q.measure == pytest.approx(ref, rel=1e-12)


def test_lumped_exact_for_affine_gauss_for_polynomials():
    q = quadrature(load_mesh("unit_square"), "lumped")
    x, y = q.nodes.T
    assert q.integrate(2 * x - y + 3) == pytest.approx(1.0 - 0.5 + 3.0, rel=1e-13)
    c = quadrature(load_mesh("lshaped"), "gauss", order=1)  # centroid rule
    assert c.n == load_mesh("lshaped").t.shape[1]
    assert c.integrate(2 * c.nodes[:, 0] - c.nodes[:, 1] + 3) == pytest.approx(-1.0 + 0.5 + 9.0, rel=1e-13)
    for order in (2, 3, 4):
        g = quadrature(load_mesh("unit_square"), "gauss", order=order)
        x, y = g.nodes.T
        # x^a y^b with a + b = order: int = 1 / ((a + 1)(b + 1))
        a, b = order - 1, 1
        assert g.integrate(x**a * y**b) == pytest.approx(1 / ((a + 1) * (b + 1)), rel=1e-12)
    g = quadrature(load_mesh("unit_interval_16"), "gauss", order=5)
    assert g.integrate(g.nodes[:, 0] ** 5) == pytest.approx(1 / 6, rel=1e-13)


def test_quadrature_errors():
    m = load_mesh("unit_square")
    with pytest.raises(ValueError, match="rule"):
        quadrature(m, "simpson")
    with pytest.raises(ValueError, match="order"):
        quadrature(m, "gauss", order=0)
    from skfem import MeshQuad

    with pytest.raises(ValueError, match="simplicial"):
        quadrature(MeshQuad(), "lumped")


def test_product_cost_matches_definition():
    rng = np.random.default_rng(3)
    q1 = quadrature(load_mesh("lshaped"), "gauss", 1)
    q2 = quadrature(load_mesh("unit_square"))
    i, j = rng.integers(0, q1.n, 50), rng.integers(0, q2.n, 50)
    for beta in (1.0, 2.0, 1.5, 3.0):
        c = product_cost(q1, q2, beta, chunk_rows=100)  # several row blocks
        ref = np.linalg.norm(q1.nodes[i] - q2.nodes[j], axis=1) ** beta
        assert np.allclose(c[i, j], ref, rtol=1e-12, atol=1e-15)
    f = lambda x, y: np.abs(x[:, None, 0] - y[None, :, 0]) + (x[:, None, 1] * y[None, :, 1])
    c = product_cost(q1, q2, f, chunk_rows=333)
    ref = np.abs(q1.nodes[i, 0] - q2.nodes[j, 0]) + q1.nodes[i, 1] * q2.nodes[j, 1]
    assert np.allclose(c[i, j], ref)


def test_product_cost_errors():
    q1 = quadrature(load_mesh("unit_interval_16"))
    q2 = quadrature(load_mesh("unit_square"))
    with pytest.raises(ValueError, match="same R\\^d"):
        product_cost(q1, q2)
    with pytest.raises(ValueError, match="beta"):
        product_cost(q1, q1, -1.0)
    with pytest.raises(ValueError, match="max_bytes"):
        product_cost(q2, q2, max_bytes=1e3)
    with pytest.raises(ValueError, match="shape"):
        product_cost(q1, q1, lambda x, y: np.zeros(3))
    # A user cost between domains of different dimension is fine.
    c = product_cost(q1, q2, lambda x, y: (x[:, None, 0] - y[None, :, 0]) ** 2 + y[None, :, 1] ** 2)
    assert c.shape == (q1.n, q2.n)


def test_product_quadrature_integrates_separable():
    q1 = quadrature(load_mesh("unit_interval_64"))
    q2 = quadrature(load_mesh("unit_square"))
    P = product_quadrature(q1, q2)
    F = np.outer(q1.nodes[:, 0], q2.nodes[:, 0] + q2.nodes[:, 1])  # x * (y1 + y2)
    assert P.integrate(F) == pytest.approx(0.5 * 1.0, rel=1e-12)
    import scipy.sparse as sp

    assert P.integrate(sp.csr_matrix(F)) == pytest.approx(0.5, rel=1e-12)
    assert P.dim == 3 and P.shape == (q1.n, q2.n)
