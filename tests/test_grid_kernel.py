"""T^delta on grid meshes by FFT convolution: the same operator as the sparse kernel, chosen when it pays."""
import numpy as np
import pytest
import skfem

import femot.fem.smoothing as smoothing
from femot.fem import Smoother, quadrature
from femot.fem.grid_kernel import GridKernel, common_lattice


def _square(refine):
    return quadrature(skfem.MeshTri.init_sqsymmetric().refined(refine))


def _pair(q, delta, rho, **kw):
    S = Smoother(q, delta, check_support=False)
    z = q.nodes[q.admissible(rho)]
    return S.operator(z, kernel="fft", **kw), S.operator(z, kernel="sparse", **kw), z


@pytest.mark.parametrize("mesh", ["square", "rectangle", "line"])
def test_fft_kernel_equals_the_sparse_matrix(mesh):
    """Products, transposes, adjoint and the unit column mass agree with the stored matrix to rounding."""
    if mesh == "square":
        q, delta, rho = _square(5), 0.2, 0.2
    elif mesh == "rectangle":  # unequal spacings per axis, nodes of a tensor mesh
        q, delta, rho = quadrature(skfem.MeshTri.init_tensor(np.linspace(0, 2, 41), np.linspace(0, 1, 17))), 0.3, 0.3
    else:
        q, delta, rho = quadrature(skfem.MeshLine(np.linspace(-1.0, 1.0, 201))), 0.1, 0.1
    fft, sparse, z = _pair(q, delta, rho, mass=2.0)
    assert isinstance(fft.K, GridKernel) and fft.K.pairs == sparse.K.nnz
    rng = np.random.default_rng(0)
    a, g = rng.random(z.shape[0]), rng.standard_normal(q.n)
    for f in ("apply", "transpose", "adjoint"):
        x = a if f == "apply" else g
        ref = getattr(sparse, f)(x)
        assert np.allclose(getattr(fft, f)(x), ref, rtol=0, atol=1e-12 * np.abs(ref).max()), f
    assert np.allclose(fft.K.column_mass * (q.weights @ sparse.K.toarray()), fft.K.column_mass, rtol=1e-13)
    # the defining identities hold for the FFT operator itself
    assert g @ fft.apply(a) == pytest.approx(a @ fft.transpose(g), rel=1e-12)
    a /= a.sum() / 2.0
    assert q.weights @ fft.apply(a) == pytest.approx(2.0 + delta, rel=1e-12)  # mass |mu| + delta


def test_lattice_detection():
    q = _square(3)
    lat = common_lattice(q.nodes, q.nodes[:5])
    assert lat is not None and np.allclose(lat[1], 1 / 16) and lat[4] == (17, 17)
    assert np.allclose(lat[0] + lat[2] * lat[1], q.nodes)
    # nodes off the lattice (a jittered or unstructured mesh) or a sparse bounding box: no FFT
    rng = np.random.default_rng(1)
    assert common_lattice(q.nodes + 1e-4 * rng.standard_normal(q.nodes.shape), q.nodes[:5]) is None
    assert common_lattice(quadrature(skfem.MeshTri.init_circle(3)).nodes, np.zeros((1, 2))) is None
    assert common_lattice(q.nodes, q.nodes[:5] + 1e-3) is None  # atoms between the nodes
    far = np.vstack([q.nodes, [[10.0, 10.0]]])  # the box would hold 160^2 lattice points for 290 nodes
    assert common_lattice(far, q.nodes[:5]) is None


def test_auto_choice_and_errors(monkeypatch):
    q = _square(4)
    S = Smoother(q, 0.25, check_support=False)
    z = q.nodes[q.admissible(0.25)]
    assert not isinstance(S.operator(z).K, GridKernel)  # 81 atoms x 197 nodes per ball: below the threshold
    monkeypatch.setattr(smoothing, "FFT_MIN_PAIRS", 0)
    op = S.operator(z)
    assert isinstance(op.K, GridKernel)
    with pytest.raises(TypeError, match="kernel='sparse'"):
        op.adjoint_matrix()
    with pytest.raises(ValueError, match="kernel must be"):
        S.operator(z, kernel="dense")
    qc = quadrature(skfem.MeshTri.init_circle(3))
    Sc = Smoother(qc, 0.3, check_support=False)
    assert not isinstance(Sc.operator(qc.nodes[:3]).K, GridKernel)  # auto falls back to the matrix
    with pytest.raises(ValueError, match="uniform grid"):
        Sc.operator(qc.nodes[:3], kernel="fft")


def test_control_problem_same_with_either_kernel(monkeypatch):
    """The value formulation's objective, gradient and Hessian products do not depend on the kernel's storage."""
    from femot.fem import PoissonOperator
    from femot.problems import ControlProblem

    mesh = skfem.MeshTri.init_sqsymmetric().refined(4)
    op = PoissonOperator(mesh)
    X = op.vertices
    y_d = np.sin(np.pi * X[:, 0]) * np.sin(np.pi * X[:, 1])
    inner = np.minimum(X, 1 - X).min(axis=1) >= 0.25  # the prior's support keeps delta from the boundary
    mu2 = np.exp(-((X - 0.5) ** 2).sum(axis=1) / 0.02) * inner
    out = []
    for threshold in (np.inf, 0):
        monkeypatch.setattr(smoothing, "FFT_MIN_PAIRS", threshold)
        P = ControlProblem(op, y_d, mu2 / mu2.sum(), 0.05, 1e-3, 0.25, rho=0.25, transport="value",
                           check_resolution=False)
        x = P.uniform() * (1 + 0.5 * np.cos(7 * np.arange(P.n)))
        x *= P.mass / x.sum()
        e = P.evaluate(x)
        v = np.sin(3 * np.arange(P.n))
        out.append((isinstance(P.T.K, GridKernel), e["fun"], e["grad"], P.hessp(x, v)))
    (k0, f0, g0, h0), (k1, f1, g1, h1) = out
    assert not k0 and k1
    assert f1 == pytest.approx(f0, rel=1e-10)
    assert np.allclose(g1, g0, rtol=1e-8, atol=1e-10 * np.abs(g0).max())
    assert np.allclose(h1, h0, rtol=1e-6, atol=1e-8 * np.abs(h0).max())
