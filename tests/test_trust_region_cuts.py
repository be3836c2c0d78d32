"""The bundle method (method="bundle"): quadratic cuts with a constant Hessian and the convex-combination certificate.

Test function on the simplex: f(x) = 1/2 (x - a)' A (x - a) + max_k <c_k, x>, a quadratic with
constant Hessian A plus a piecewise-linear convex term.  Its minimizer sits on a kink (several
pieces active), where no single gradient has a small theta_R; the minimizer is computed
independently as the QP min 1/2 (x-a)'A(x-a) + t s.t. t >= <c_k, x>, x in the simplex.
"""
import clarabel
import numpy as np
import pytest
import scipy.sparse as sp

from femot.optim import BundleOptions, TrustRegionOptions, minimize_simplex, theta_R
from femot.optim.bundle import cut_arrays, cut_certificate, cut_qp

N, K = 8, 5


def _data(seed=3):
    rng = np.random.default_rng(seed)
    Q = rng.standard_normal((N, N))
    A = Q @ Q.T / N + 0.05 * np.eye(N)
    a = rng.dirichlet(np.ones(N)) + 0.3 * rng.standard_normal(N)
    C = 0.8 * rng.standard_normal((K, N))
    return A, a, C


def _fun(A, a, C):
    def fun(x):
        r = x - a
        vals = C @ x
        j = int(np.argmax(vals))
        return 0.5 * r @ A @ r + vals[j], A @ r + C[j]
    return fun


def _exact_minimizer(A, a, C):
    """min 1/2 (x-a)'A(x-a) + t, t >= <c_k, x>, x >= 0, sum x = 1 (Clarabel, tight tolerances)."""
    P = sp.block_diag([sp.csc_matrix(A), sp.csc_matrix((1, 1))]).tocsc()
    q = np.append(-A @ a, 1.0)
    Aeq = sp.csr_matrix(np.append(np.ones(N), 0.0)[None, :])
    Acut = sp.csr_matrix(np.hstack([C, -np.ones((K, 1))]))
    Apos = -sp.eye(N, N + 1, format="csr")
    M = sp.vstack([Aeq, Acut, Apos]).tocsc()
    b = np.concatenate([[1.0], np.zeros(K), np.zeros(N)])
    st = clarabel.DefaultSettings()
    st.verbose = False
    st.tol_gap_abs = st.tol_gap_rel = st.tol_feas = 1e-12
    sol = clarabel.DefaultSolver(sp.triu(P).tocsc(), q, M, b,
                                 [clarabel.ZeroConeT(1), clarabel.NonnegativeConeT(K + N)], st).solve()
    x = np.maximum(np.array(sol.x)[:N], 0.0)
    return x / x.sum()


def _piece_cuts(A, a, C, x, pieces):
    """Cuts at x of the given pieces: gradient A(x - a) + c_k and value of the piece's quadratic."""
    r = x - a
    F = np.array([0.5 * r @ A @ r + C[k] @ x for k in pieces])
    G = np.array([A @ r + C[k] for k in pieces])
    return np.repeat(x[None, :], len(pieces), axis=0), F, G


def test_minimizer_is_on_a_kink():
    A, a, C = _data()
    xs = _exact_minimizer(A, a, C)
    vals = C @ xs
    active = np.nonzero(vals >= vals.max() - 1e-7)[0]
    assert active.size >= 2  # the certificate below is about kinks
    f, g = _fun(A, a, C)(xs)
    # one (Clarke) gradient alone does not certify the minimizer
    assert theta_R(xs, g) > 1e-3


def test_certificate_small_at_minimizer_large_elsewhere():
    A, a, C = _data()
    xs = _exact_minimizer(A, a, C)
    fun = _fun(A, a, C)
    f = fun(xs)[0]
    vals = C @ xs
    active = np.nonzero(vals >= vals.max() - 1e-7)[0]
    Y, F, G = _piece_cuts(A, a, C, xs, active)
    B, e, _ = cut_arrays(xs, f, Y, F, G, A)
    psi, lam = cut_certificate(xs, B, np.abs(e), np.ones(N), 1.0)
    assert psi <= 1e-7
    assert abs(lam.sum() - 1.0) < 1e-12 and np.all(lam >= 0)
    # elsewhere: every piece's gradient there, still no small combination
    rng = np.random.default_rng(0)
    for _ in range(3):
        z = np.abs(xs + 0.1 * rng.standard_normal(N))
        z /= z.sum()
        fz = fun(z)[0]
        Yz, Fz, Gz = _piece_cuts(A, a, C, z, range(K))
        Bz, ez, _ = cut_arrays(z, fz, Yz, Fz, Gz, A)
        psi_z, _ = cut_certificate(z, Bz, np.abs(ez), np.ones(N), 1.0)
        # f convex: f(z) - min f <= psi_z, and psi_z is far from 0 off the minimizer
        assert psi_z >= fz - fun(xs)[0] - 1e-12
        assert psi_z > 1e-3


def test_cut_qp_single_cut_is_the_projected_newton_step():
    """With one cut (e = 0) and no active box, the QP is min <g, d> + 1/2 d'Hd on {<1, d> = 0}."""
    rng = np.random.default_rng(1)
    Q = rng.standard_normal((N, N))
    H = Q @ Q.T + np.eye(N)
    g = 0.01 * rng.standard_normal(N)
    x = np.full(N, 1.0 / N)
    d, lam, status = cut_qp(H, g[None, :], np.zeros(1), x, np.ones(N), 10.0)
    # KKT of the equality-constrained problem: H d + g = tau 1, sum d = 0
    KKT = np.block([[H, -np.ones((N, 1))], [np.ones((1, N)), np.zeros((1, 1))]])
    sol = np.linalg.solve(KKT, np.append(-g, 0.0))
    assert np.all(x + sol[:N] > 0)  # the reference step stays interior
    np.testing.assert_allclose(d, sol[:N], atol=1e-9 * np.abs(sol[:N]).max() + 1e-14)
    assert abs(lam.sum() - 1.0) < 1e-6


@pytest.mark.parametrize("seed", [3, 7])
def test_bundle_solver_reaches_kink_minimizer(seed):
    A, a, C = _data(seed)
    xs = _exact_minimizer(A, a, C)
    fun = _fun(A, a, C)
    res = minimize_simplex(fun, n=N, hessp=lambda x, v: A @ v, method="bundle", options={"tol": 1e-10})
    assert res.success, res.message
    assert res.stationarity_measure == "psi"
    assert res.stationarity <= 1e-10
    assert res.fun - fun(xs)[0] <= 1e-9  # f convex: psi bounds f - min f
    assert np.abs(res.x - xs).max() < 1e-4
    assert res.nit < 100


def test_bundle_option_validation():
    A, a, C = _data()
    fun = _fun(A, a, C)
    with pytest.raises(ValueError, match="method"):
        minimize_simplex(fun, n=N, hessp=lambda x, v: A @ v, method="cuts")
    with pytest.raises(ValueError, match="hessp"):
        minimize_simplex(fun, n=N, method="bundle")
    with pytest.raises(ValueError, match="metric"):
        minimize_simplex(fun, n=N, hessp=lambda x, v: A @ v, method="bundle", options={"metric": 3})
    with pytest.raises(ValueError, match="valid: .*'max_cuts'"):
        minimize_simplex(fun, n=N, hessp=lambda x, v: A @ v, method="bundle", options={"newton_minor": 3})


def test_bundle_falls_back_to_algorithm_4_1_above_max_n():
    """With more than max_n variables the bundle method runs Algorithm 4.1 with the shared options."""
    A, a, C = _data()
    fun = _fun(A, a, C)
    r = minimize_simplex(fun, n=N, hessp=lambda x, v: A @ v, method="bundle",
                         options=BundleOptions(tol=1e-9, max_iter=300, max_n=N - 1))
    ref = minimize_simplex(fun, n=N, hessp=lambda x, v: A @ v, options={"tol": 1e-9, "max_iter": 300})
    assert isinstance(r.options, TrustRegionOptions) and np.array_equal(r.x, ref.x) and r.nfev == ref.nfev


@pytest.mark.slow
def test_plan_formulation_certified_by_cuts():
    """(OCP^delta_gamma), plan formulation on a coarse 1D mesh: the bundle of quadratic cuts reaches
    psi <= 1e-5 theta_R(uniform), and psi bounds theta_R of a convex combination of cut gradients."""
    from skfem import MeshLine

    from femot.demos.ocp_1d import problem_data
    from femot.fem import PoissonOperator
    from femot.problems.control import ControlProblem

    op = PoissonOperator(MeshLine(np.linspace(0.0, 1.0, 65)))
    _, y_d, mu2 = problem_data(op, 0.2)
    P = ControlProblem(op, y_d, mu2, 0.02, 0.16 ** 3, 0.16, rho=0.2, transport="plan", check_resolution=False)
    r = P.solve(rtol=1e-5)
    assert r.success, r.message
    assert isinstance(r.tr.options, BundleOptions) and r.tr.stationarity_measure == "psi"
    assert r.relative_stationarity <= 1e-5
    assert r.nit <= 200
    # the certified point is not worse than the uniform start and a single gradient there is not
    # what certified it (a kink: theta_R of the oracle's gradient is much larger than psi)
    assert r.fun < P(P.uniform())[0]
    assert r.tr.theta > 10 * r.tr.stationarity


def test_bundle_nonfinite_and_callback_stops():
    A, a, C = _data()
    fun = _fun(A, a, C)
    calls = [0]

    def bad(x):
        calls[0] += 1
        return (np.nan, np.zeros(N)) if calls[0] > 3 else fun(x)

    r = minimize_simplex(bad, n=N, hessp=lambda x, v: A @ v, method="bundle", options={"tol": 1e-12})
    assert r.status == 3 and not r.success and np.isfinite(r.fun)
    r = minimize_simplex(fun, n=N, hessp=lambda x, v: A @ v, method="bundle", options={"tol": 1e-12},
                         callback=lambda ir: ir.nit >= 2)
    assert r.status == 4 and r.nit == 2
    r = minimize_simplex(fun, n=N, hessp=lambda x, v: np.full(N, np.nan), method="bundle")
    assert r.status == 3 and "hessp" in r.message
    r = minimize_simplex(fun, n=N, hessp=lambda x, v: A @ v, method="bundle", options={"tol": 1e-12,
                                                                     "metric": lambda x, v: np.nan * v})
    assert r.status == 3 and "metric" in r.message
