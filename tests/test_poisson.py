"""Tests of the Poisson operator G (Part II, eq. (3.10) and the state equation of (OCP))."""
import numpy as np
import pytest
import skfem

from femot.fem.poisson import PoissonOperator, product_mesh


def line(n, a=0.0, b=1.0):
    return skfem.MeshLine(np.linspace(a, b, n))


def square(k):
    return skfem.MeshTri.init_sqsymmetric().refined(k)


def green_1d(x, x0):
    """Solution of -y'' = delta_{x0} on (0, 1), y(0) = y(1) = 0."""
    return np.where(x < x0, x * (1 - x0), x0 * (1 - x))


def l2_error(op, y, u):
    """|y - u|_{L2} with u a callable, from 1/2|y-u|^2 = 1/2 y'My - b'y + c/2."""
    b, c = op.target(u)
    return np.sqrt(max(y @ (op.M @ y) - 2 * b @ y + c, 0.0))


def fitted_rate(hs, errs):
    return np.polyfit(np.log(hs), np.log(errs), 1)[0]


def operators(seed=0):
    """A small zoo: 1D P1, 2D P1, 2D P2, 1D x 1D quads, 1D x 2D tetrahedra."""
    return [
        PoissonOperator(line(13)),
        PoissonOperator(square(2)),
        PoissonOperator(square(1), order=2),
        PoissonOperator(product_mesh(line(5), line(4, 0, 2), kind="quad")),
        PoissonOperator(product_mesh(line(4), square(1))),
    ]


# --------------------------------------------------------------- Green's function

@pytest.mark.parametrize("order", [1, 2])
def test_green_function_1d_dirac_at_node_is_exact(order):
    op = PoissonOperator(line(11), order=order)
    x0 = 0.3  # a vertex
    y = op.solve(op.load_dirac([x0]))
    x = op.nodes[:, 0]
    assert np.max(np.abs(y - green_1d(x, x0))) <= 1e-12
    # the exact solution is piecewise linear on the mesh: exact everywhere
    xs = np.linspace(0, 1, 201)
    ys = op.probe_matrix(xs) @ y
    assert np.max(np.abs(ys - green_1d(xs, x0))) <= 1e-12


def test_green_function_1d_dirac_off_node_converges():
    x0 = 1 / np.sqrt(7)  # never a vertex of the uniform meshes below
    xs = np.linspace(0, 1, 2001)
    hs, errs = [], []
    for n in (11, 21, 41, 81, 161):
        op = PoissonOperator(line(n))
        y = op.solve(op.load_dirac([x0]))
        # in 1D, P1 Galerkin equals the interpolant of the exact solution at nodes
        assert np.max(np.abs(y - green_1d(op.nodes[:, 0], x0))) <= 1e-12
        errs.append(np.max(np.abs(op.probe_matrix(xs) @ y - green_1d(xs, x0))))
        hs.append(1 / (n - 1))
    # the kink lies inside one element: O(h) in the maximum norm
    assert fitted_rate(hs, errs) >= 0.9
    assert errs[-1] < errs[0] / 8


# --------------------------------------------------------------- manufactured solutions

def test_manufactured_2d_p1_second_order():
    u = lambda x: np.sin(np.pi * x[0]) * np.sin(np.pi * x[1])
    f = lambda x: 2 * np.pi ** 2 * u(x)
    hs, errs = [], []
    for k in range(2, 6):
        op = PoissonOperator(square(k))
        errs.append(l2_error(op, op.solve(op.load_density(f)), u))
        hs.append(2.0 ** -k)
    rate = fitted_rate(hs, errs)
    print(f"observed L2 rate P1 on the unit square: {rate:.3f}")
    assert rate >= 1.8


def test_manufactured_2d_p2_third_order():
    u = lambda x: np.sin(np.pi * x[0]) * np.sin(np.pi * x[1])
    f = lambda x: 2 * np.pi ** 2 * u(x)
    hs, errs = [], []
    for k in range(1, 5):
        op = PoissonOperator(square(k), order=2)
        errs.append(l2_error(op, op.solve(op.load_density(f)), u))
        hs.append(2.0 ** -k)
    rate = fitted_rate(hs, errs)
    print(f"observed L2 rate P2 on the unit square: {rate:.3f}")
    assert rate >= 2.8


@pytest.mark.parametrize("kind", ["tri", "quad"])
def test_manufactured_product_1d_x_1d(kind):
    # D = (0, 1) x (0, 2)
    u = lambda x: np.sin(np.pi * x[0]) * np.sin(0.5 * np.pi * x[1])
    f = lambda x: 1.25 * np.pi ** 2 * u(x)
    hs, errs = [], []
    for n in (5, 9, 17, 33):
        op = PoissonOperator(product_mesh(line(n), line(2 * n - 1, 0, 2), kind=kind))
        errs.append(l2_error(op, op.solve(op.load_density(f)), u))
        hs.append(1 / (n - 1))
    assert fitted_rate(hs, errs) >= 1.8


def test_manufactured_product_1d_x_2d_tetrahedra():
    u = lambda x: np.sin(np.pi * x[0]) * np.sin(np.pi * x[1]) * np.sin(np.pi * x[2])
    f = lambda x: 3 * np.pi ** 2 * u(x)
    hs, errs = [], []
    for k in (4, 8, 12):
        g = np.linspace(0, 1, k + 1)
        op = PoissonOperator(product_mesh(skfem.MeshLine(g), skfem.MeshTri.init_tensor(g, g)))
        errs.append(l2_error(op, op.solve(op.load_density(f)), u))
        hs.append(1 / k)
    assert fitted_rate(hs, errs) >= 1.8


# --------------------------------------------------------------- product meshes

def test_product_mesh_vertices_are_the_product_grid():
    m1, m2 = line(5), square(1)
    for a, b in ((line(4), line(6, 0, 2)), (m1, m2), (m2, m1)):
        P = product_mesh(a, b)
        n1, n2 = a.nvertices, b.nvertices
        grid = P.p.T.reshape(n1, n2, -1)
        d1 = a.p.shape[0]
        assert np.array_equal(grid[:, :, :d1], np.broadcast_to(a.p.T[:, None, :], (n1, n2, d1)))
        d2 = b.p.shape[0]
        assert np.array_equal(grid[:, :, d1:], np.broadcast_to(b.p.T[None, :, :], (n1, n2, d2)))


def test_product_mesh_tetrahedra_conforming():
    a, b = line(4), square(1)  # square(1): 8 triangles, 8 boundary edges
    # the same triangulation with the vertices of each triangle in random order
    rng = np.random.default_rng(1)
    t = np.array([rng.permutation(col) for col in b.t.T]).T
    b_shuffled = skfem.MeshTri(b.p, t, sort_t=False)
    for P in (product_mesh(a, b), product_mesh(b, a), product_mesh(a, b_shuffled),
              product_mesh(b_shuffled, a)):
        # volume of the cube and positive orientation
        e = P.p[:, P.t[1:]] - P.p[:, P.t[0]][:, None, :]
        det = np.einsum("ik,ik->k", e[:, 0], np.cross(e[:, 1], e[:, 2], axis=0))
        assert np.all(det > 0)
        assert abs(det.sum() / 6 - 1.0) < 1e-12
        # a non-matching split of a side face would show up as extra boundary facets
        ntri, nbedge, nlayer = b.t.shape[1], len(b.boundary_facets()), a.nvertices - 1
        assert len(P.boundary_facets()) == 2 * ntri + nlayer * 2 * nbedge


def test_product_mesh_plan_as_rhs():
    """A plan sampled on the product grid is a nodal vector of the product mesh."""
    rng = np.random.default_rng(3)
    a, b = line(6), line(7, 0, 2)
    op = PoissonOperator(product_mesh(a, b))
    pi = rng.random((a.nvertices, b.nvertices))
    load = op.load_nodal_masses(pi.ravel())
    # the same discrete measure through point evaluations at (x_i, y_j)
    pts = np.array([[x, y] for x in a.p[0] for y in b.p[0]])
    assert np.allclose(load, op.load_dirac(pts, pi.ravel()), atol=1e-13)


def test_product_mesh_rejects_dimension_above_three():
    with pytest.raises(ValueError, match="exceeds 3"):
        product_mesh(square(1), square(1))
    with pytest.raises(ValueError, match="kind"):
        product_mesh(line(3), line(3), kind="hex")


# --------------------------------------------------------------- loads and probes

@pytest.mark.parametrize("idx", range(5))
def test_probes_reproduce_affine_functions(idx):
    op = operators()[idx]
    rng = np.random.default_rng(idx)
    coef = rng.standard_normal(op.dim + 1)
    y = coef[0] + op.nodes @ coef[1:]
    lo, hi = op.mesh.p.min(axis=1), op.mesh.p.max(axis=1)
    pts = lo + (hi - lo) * rng.random((20, op.dim))
    P = op.probe_matrix(pts)
    assert P.shape == (20, op.ndofs)
    assert np.allclose(P @ y, coef[0] + pts @ coef[1:], atol=1e-12)


def test_probes_in_blocks_equal_one_call(monkeypatch):
    """probe_matrix works in blocks of points (bounded memory): the same matrix, the same errors."""
    import femot.fem.poisson as poisson

    op = PoissonOperator(skfem.MeshTri.init_sqsymmetric().refined(3))
    pts = np.random.default_rng(3).random((500, 2))
    whole = op.probe_matrix(pts)
    monkeypatch.setattr(poisson, "PROBE_BLOCK_ENTRIES", 64 * op.mesh.t.shape[1])  # blocks of 64 points
    parts = op.probe_matrix(pts)
    assert (abs(parts - whole)).max() == 0 and parts.shape == (500, op.ndofs)
    pts[300] = [1.5, 0.5]  # in the eighth block
    with pytest.raises(ValueError, match=r"points\[300\]"):
        op.probe_matrix(pts)
    # inside the bounding box but outside the domain (the L-shape's missing quadrant), in a later block
    L = PoissonOperator(skfem.MeshTri.init_lshaped().refined(2))
    q = np.random.default_rng(4).uniform(-1, 0, (500, 2))
    assert L.probe_matrix(q).shape == (500, L.ndofs)
    q[300] = [0.5, 0.5]
    with pytest.raises(ValueError, match="outside the mesh"):
        L.probe_matrix(q)


@pytest.mark.parametrize("idx", range(5))
def test_loads_agree(idx):
    op = operators()[idx]
    rng = np.random.default_rng(10 + idx)
    m = rng.random(op.nvertices)
    # a discrete measure on the vertices: nodal masses == Dirac evaluations there
    assert np.allclose(op.load_nodal_masses(m), op.load_dirac(op.vertices, m), atol=1e-13)
    # density: a callable affine function is integrated exactly, as is M @ nodal values
    coef = rng.standard_normal(op.dim + 1)
    f = lambda x: coef[0] + np.tensordot(coef[1:], x, axes=1)
    assert np.allclose(op.load_density(f), op.load_density(coef[0] + op.nodes @ coef[1:]),
                       atol=1e-12)


@pytest.mark.parametrize("idx", range(5))
def test_adjoint_identity(idx):
    """<G a, b>_M = <a, G* M b> for vertex masses a and nodal vectors b."""
    op = operators()[idx]
    rng = np.random.default_rng(20 + idx)
    a = rng.standard_normal(op.nvertices)
    b = rng.standard_normal(op.ndofs)
    lhs = op.state(a) @ (op.M @ b)
    rhs = a @ op.state_adjoint(op.M @ b)
    assert abs(lhs - rhs) <= 1e-12 * max(abs(lhs), 1.0)
    # same for the load-level operator and its adjoint solve
    la = rng.standard_normal(op.ndofs)
    assert abs(op.solve(la) @ b - la @ op.solve_adjoint(b)) <= 1e-12 * max(abs(op.solve(la) @ b), 1)
    # the state satisfies the discrete equation and the boundary condition
    y = op.solve(la)
    I = op.interior
    assert np.allclose((op.K @ y)[I], la[I], atol=1e-10)
    assert np.all(y[op.boundary] == 0)


def test_solve_many_right_hand_sides():
    op = PoissonOperator(square(2))
    rng = np.random.default_rng(4)
    B = rng.standard_normal((op.ndofs, 3))
    Y = op.solve(B)
    for k in range(3):
        assert np.allclose(Y[:, k], op.solve(B[:, k]), atol=1e-14)


# --------------------------------------------------------------- L2 tracking

def central_difference(f, x, d, h):
    return (f(x + h * d) - f(x - h * d)) / (2 * h)


@pytest.mark.parametrize("idx", range(5))
@pytest.mark.parametrize("target", ["nodal", "callable"])
def test_tracking_gradient_finite_differences(idx, target):
    op = operators()[idx]
    rng = np.random.default_rng(30 + idx)
    if target == "nodal":
        y_d = rng.standard_normal(op.ndofs)
    else:
        y_d = lambda x: np.cos(2.0 * x[0]) * (1 + x[-1])
    f = lambda m: op.tracking_value_and_gradient(m, y_d)[0]
    for _ in range(3):
        m = rng.random(op.nvertices)
        d = rng.standard_normal(op.nvertices)
        _, g = op.tracking_value_and_gradient(m, y_d)
        fd = central_difference(f, m, d, 1e-4)  # f is quadratic: exact up to rounding
        assert abs(fd - g @ d) <= 1e-6 * max(abs(g @ d), 1e-12)
        # the gradient vanishes on the boundary (masses there do not act)
        bv = np.isin(op.vertex_dofs, op.boundary)
        assert np.all(g[bv] == 0)


def test_tracking_value_is_the_l2_distance():
    op = PoissonOperator(square(3))
    rng = np.random.default_rng(5)
    m_true = rng.random(op.nvertices)
    y_true = op.state(m_true)
    # zero at the generating control, with zero gradient
    val, g = op.tracking_value_and_gradient(m_true, y_true)
    assert abs(val) <= 1e-14 and np.max(np.abs(g)) <= 1e-12
    # a callable target: compare with an independent quadrature of (y - y_d)^2
    y_d = lambda x: np.sin(3 * x[0]) * x[1]
    m = rng.random(op.nvertices)
    val, _ = op.tracking_value_and_gradient(m, y_d)
    basis = skfem.Basis(op.mesh, skfem.ElementTriP1(), intorder=8)
    yq = np.asarray(basis.interpolate(op.state(m)))
    xq = np.asarray(basis.global_coordinates())
    ref = 0.5 * np.sum((yq - y_d(xq)) ** 2 * basis.dx)
    assert abs(val - ref) <= 1e-9 * ref


# --------------------------------------------------------------- W^{-1,p'} tracking

@pytest.mark.parametrize("idx", range(5))
@pytest.mark.parametrize("p_prime", [2.0, 1.5])
def test_gradient_norm_finite_differences(idx, p_prime):
    op = operators()[idx]
    rng = np.random.default_rng(40 + idx)
    sub = lambda x: x[0] < 0.7
    f = lambda b: op.gradient_norm_value_and_gradient(b, p_prime, sub)[0]
    for _ in range(3):
        b = rng.standard_normal(op.ndofs)
        d = rng.standard_normal(op.ndofs)
        _, g, _ = op.gradient_norm_value_and_gradient(b, p_prime, sub)
        fd = central_difference(f, b, d, 1e-5)
        assert abs(fd - g @ d) <= 1e-6 * abs(g @ d)


def test_gradient_norm_p2_is_the_energy():
    """For p' = 2 on all of D: int |grad y|^2 = y^T K y = b^T G b."""
    op = PoissonOperator(square(3))
    rng = np.random.default_rng(6)
    b = rng.standard_normal(op.ndofs)
    val, g, y = op.gradient_norm_value_and_gradient(b, 2.0)
    assert abs(val - y @ (op.K @ y)) <= 1e-12 * val
    assert abs(val - b @ y) <= 1e-10 * val
    assert np.allclose(g, 2 * y, atol=1e-12 * np.max(np.abs(y)))


def test_gradient_norm_subdomain_mask_and_function_agree():
    op = PoissonOperator(square(2))
    rng = np.random.default_rng(7)
    b = rng.standard_normal(op.ndofs)
    chi = lambda x: (x[0] > 0.25) & (x[1] < 0.5)
    mask = chi(op.mesh.p[:, op.mesh.t].mean(axis=1))
    v1, g1, _ = op.gradient_norm_value_and_gradient(b, 1.5, chi)
    v2, g2, _ = op.gradient_norm_value_and_gradient(b, 1.5, mask)
    assert v1 == v2 and np.array_equal(g1, g2)
    # additivity over a partition of the elements
    v3, _, _ = op.gradient_norm_value_and_gradient(b, 1.5, ~mask)
    v, _, _ = op.gradient_norm_value_and_gradient(b, 1.5)
    assert abs(v1 + v3 - v) <= 1e-12 * v


def test_gradient_norm_zero_gradient_is_safe():
    op = PoissonOperator(line(9))
    val, g, _ = op.gradient_norm_value_and_gradient(np.zeros(op.ndofs), 1.5)
    assert val == 0 and np.all(g == 0)


# --------------------------------------------------------------- bad input

def test_bad_input_raises_value_error_naming_argument():
    op = PoissonOperator(square(1))
    with pytest.raises(ValueError, match="load"):
        op.solve(np.ones(op.ndofs + 1))
    with pytest.raises(ValueError, match="load"):
        op.solve(np.full(op.ndofs, np.nan))
    with pytest.raises(ValueError, match="points"):
        op.probe_matrix(np.array([[0.5, 1.2]]))
    with pytest.raises(ValueError, match="points"):
        op.load_dirac(np.array([[-0.1, 0.5]]))
    with pytest.raises(ValueError, match="points"):
        op.load_dirac(np.array([0.5, 0.5, 0.5]))  # wrong shape
    with pytest.raises(ValueError, match="masses"):
        op.load_dirac(np.array([[0.5, 0.5]]), [1.0, 2.0])
    with pytest.raises(ValueError, match="masses"):
        op.tracking_value_and_gradient(np.ones(3), np.zeros(op.ndofs))
    with pytest.raises(ValueError, match="y_d"):
        op.tracking_value_and_gradient(np.ones(op.nvertices), np.zeros(2))
    with pytest.raises(ValueError, match="f"):
        op.load_density(np.ones(2))
    with pytest.raises(ValueError, match="subdomain"):
        op.gradient_norm_value_and_gradient(np.ones(op.ndofs), 1.5,
                                            np.zeros(op.mesh.nelements, dtype=bool))
    with pytest.raises(ValueError, match="subdomain"):
        op.gradient_norm_value_and_gradient(np.ones(op.ndofs), 1.5, lambda x: x[0] > 5)
    with pytest.raises(ValueError, match="subdomain"):
        op.gradient_norm_value_and_gradient(np.ones(op.ndofs), 1.5, np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="p_prime"):
        op.gradient_norm_value_and_gradient(np.ones(op.ndofs), 1.0)
    with pytest.raises(ValueError, match="mesh"):
        PoissonOperator(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="order"):
        PoissonOperator(square(1), order=3)
    op1 = PoissonOperator(line(5))
    with pytest.raises(ValueError, match="points"):
        op1.load_dirac([1.0001])
