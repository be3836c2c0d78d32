"""The shared shape of the upper-level problems: protocol, marginal-to-plan map, result convention."""
import pickle

import numpy as np
import pytest
import skfem

from femot.core import solve_qrot
from femot.fem import PoissonOperator
from femot.optim import minimize_simplex, theta_R
from femot.problems import (
    ControlProblem,
    MarginalToPlan,
    SecondOrderProblem,
    SimplexProblem,
    TrackingProblem,
    UpperLevelResult,
    identification_instance,
    problem_from_instance,
    solve_on_simplex,
)
from femot.problems.plan_maps import WARM_FLOOR
from femot.problems.protocol import RESULT_KEYS, upper_level_result


# --------------------------------------------------------------------------
# small instances of every problem
# --------------------------------------------------------------------------
def _bump(x, inside, parts):
    m = np.where(inside, sum(a * np.exp(-((x - c) / s) ** 2) for c, s, a in parts), 0.0)
    return m / m.sum()


def identification():
    return problem_from_instance(identification_instance(8, 3), gamma=1e-3)


def control(transport="plan"):
    op = PoissonOperator(skfem.MeshLine(np.linspace(0.0, 1.0, 17)))
    x = op.vertices[:, 0]
    inside = (x >= 0.2 - 1e-12) & (x <= 0.8 + 1e-12)
    m_true = _bump(x, inside, [(0.4, 0.08, 1.0)])
    mu2 = _bump(x, inside, [(0.6, 0.1, 1.0)])
    return ControlProblem(op, op.state(m_true), mu2, 0.05, 1e-2, 0.15, rho=0.2, transport=transport,
                          check_resolution=False)


def tracking():
    mesh = skfem.MeshLine(np.linspace(0.0, 1.0, 13))
    x = mesh.p[0]
    inside = (x >= 0.2 - 1e-12) & (x <= 0.8 + 1e-12)
    m_true = _bump(x, inside, [(0.35, 0.08, 1.0)])
    mu2 = _bump(x, inside, [(0.55, 0.12, 1.0)])
    gen = TrackingProblem(mesh, mesh, mu2, np.zeros((13, 13)), 0.0, 1e-2, 0.15, rho=0.2)
    pi_d = gen.lower.solve(m_true[gen.control_vertices]).plan.toarray()
    return TrackingProblem(mesh, mesh, mu2, pi_d, 1e-4, 1e-2, 0.15, rho=0.2)


MAKERS = {"identification": identification, "control-plan": control, "control-value": lambda: control("value"),
          "tracking": tracking}


@pytest.fixture(params=sorted(MAKERS), scope="module")
def problem(request):
    return MAKERS[request.param]()


def _on_simplex(P, x, tol=1e-10):
    w = np.ones(P.n) if P.weights is None else P.weights
    return x.shape == (P.n,) and x.min() >= -tol and abs(w @ x - P.mass) <= tol * max(1.0, P.mass)


# --------------------------------------------------------------------------
# the protocol
# --------------------------------------------------------------------------
def test_every_problem_satisfies_the_protocol(problem):
    assert isinstance(problem, SimplexProblem)
    assert isinstance(problem, SecondOrderProblem)  # all have hessp (tracking: p' = 2)
    assert isinstance(problem.lower, MarginalToPlan)
    u = problem.uniform()
    assert _on_simplex(problem, u) and np.ptp(u) == 0
    full = problem.full(u)
    assert full.ndim == 1 and full.size >= problem.n and abs(full.sum() - problem.mass) <= 1e-12
    f, g = problem(u)
    assert np.isfinite(f) and g.shape == (problem.n,) and np.all(np.isfinite(g))
    # the oracle caches its last point: the same values without a new lower-level request
    requests = problem.lower.requests
    f2, g2 = problem(u)
    assert f2 == f and np.array_equal(g2, g) and problem.lower.requests == requests
    hv = problem.hessp(u, g - g.mean())
    assert hv.shape == (problem.n,) and np.all(np.isfinite(hv))


def test_an_object_without_the_members_is_not_a_problem():
    class NotAProblem:
        n, mass = 3, 1.0

        def __call__(self, x):
            return 0.0, np.zeros(3)

    assert not isinstance(NotAProblem(), SimplexProblem)


def test_minimize_simplex_runs_on_every_problem_through_the_protocol(problem):
    """Only protocol members are used; the trust region decreases f and stays on the simplex."""
    x0 = problem.uniform()
    f0, g0 = problem(x0)
    tr = minimize_simplex(problem, x0, hessp=problem.hessp, weights=problem.weights, mass=problem.mass,
                          n=problem.n, options={"max_iter": 4})
    assert _on_simplex(problem, tr.x)
    f1, g1 = problem(tr.x)
    assert np.isfinite(f1) and f1 <= f0 + 1e-14 * abs(f0)  # accepted steps only decrease f
    assert tr.fun == pytest.approx(f1, rel=1e-12, abs=1e-300)
    # the generic driver: the same through solve_on_simplex; with rtol, theta0 = theta_R(x0)
    tr2 = solve_on_simplex(problem, options={"max_iter": 2}, rtol=1e-3)
    assert tr2["theta0"] == pytest.approx(float(theta_R(x0, g0, mass=problem.mass)), rel=1e-12)
    assert _on_simplex(problem, tr2.x)


# --------------------------------------------------------------------------
# the result convention
# --------------------------------------------------------------------------
def test_every_result_follows_the_convention(problem):
    res = problem.solve(options={"max_iter": 3})
    assert isinstance(res, UpperLevelResult)
    missing = [k for k in RESULT_KEYS if k not in res]
    assert not missing
    assert not [k for k in res if k.startswith("_")]
    assert "_cost" not in repr(res.lower) and "_ztol" not in repr(res.lower)
    assert _on_simplex(problem, res.x)
    assert res.fun == pytest.approx(problem(res.x)[0], rel=1e-10)  # fun is f at x
    assert isinstance(res.success, bool) and isinstance(res.status, int) and isinstance(res.message, str)
    assert res.nit == res.tr.nit or "levels" in res  # identification adds continuation levels
    assert res.lower_solves >= 1 and res.newton_iterations >= 0 and res.time_s > 0
    assert res.success == bool(res.tr.success and res.lower.success)
    assert "theta" in res.table()


def test_identification_keeps_its_names():
    P = identification()
    res = P.solve(options={"max_iter": 3})
    assert res.mu1 is res.x
    assert res.J == pytest.approx(P.objective(res.plan, res.x), rel=1e-12)
    assert np.array_equal(res.alpha, res.lower.alpha) and np.array_equal(res.beta, res.lower.beta)
    assert res.lower_requests <= res.lower_solves


def test_control_keeps_its_extras():
    res = control("value").solve(options={"max_iter": 3})
    assert res.formulation == "value" and res.fw_gap is not None and res.fw_gap >= -1e-14
    assert np.isfinite(res.relative_stationarity)


def test_upper_level_result_refuses_private_entries_and_missing_counters():
    tr = minimize_simplex(lambda x: (float(x @ x), 2 * x), np.array([0.5, 0.5]), options={"max_iter": 2})
    counters = {"lower_solves": 0, "newton_iterations": 0}
    r = upper_level_result(UpperLevelResult, tr, x=tr.x, fun=tr.fun, lower_ok=False, lower_message="broken",
                           counters=counters, time_s=0.1)
    assert not r.success and r.message.endswith("Lower level at the solution: broken")
    with pytest.raises(ValueError, match="public"):
        upper_level_result(UpperLevelResult, tr, x=tr.x, fun=tr.fun, lower_ok=True, lower_message="",
                           counters=counters, time_s=0.1, _secret=1)
    with pytest.raises(ValueError, match="missing"):
        upper_level_result(UpperLevelResult, tr, x=tr.x, fun=tr.fun, lower_ok=True, lower_message="",
                           counters={}, time_s=0.1)


def test_qrot_result_keeps_private_state_out_of_its_entries():
    rng = np.random.default_rng(0)
    c = rng.random((6, 7))
    r = solve_qrot(c, np.full(6, 1 / 6), np.full(7, 1 / 7), 1e-3)
    assert r.success and not [k for k in r if k.startswith("_")]
    assert "_cost" not in repr(r) and "_ztol" not in repr(r)
    assert r._ztol > 0  # still an attribute
    s = pickle.loads(pickle.dumps(r))
    assert s._ztol == r._ztol and set(s) == set(r)
    rows, cols = s.biactive()
    assert np.all(np.abs(s.alpha[rows] + s.beta[cols] - c[rows, cols]) <= s._ztol)
    h = np.eye(6)[0] - np.eye(6)[1]  # mass-preserving direction (eps = 0)
    assert np.allclose(s.jvp(h, np.zeros(7)).toarray(), r.jvp(h, np.zeros(7)).toarray(), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------
# the marginal-to-plan map: warm start, cold start, cache
# --------------------------------------------------------------------------
def _qrot_data(n=12, seed=0):
    rng = np.random.default_rng(seed)
    x, y = rng.random((n, 2)), rng.random((n, 2))  # 2D points: not a Monge cost (no exact initializer)
    c = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    mu1 = rng.random(n) + 0.2
    mu2 = rng.random(n) + 0.2
    return c, mu1 / mu1.sum(), mu2 / mu2.sum(), rng


def _spy(calls, restrict=None):
    """solve_qrot, recording (gamma, warm?, max_iter); ``restrict(gamma, x0)`` may cap max_iter."""
    def solver(c, m1, m2, gamma, eps, w1, w2, *, x0=None, max_iter=200, **kw):
        if restrict is not None:
            max_iter = restrict(gamma, x0, max_iter)
        calls.append((gamma, x0 is not None, max_iter))
        return solve_qrot(c, m1, m2, gamma, eps, w1, w2, x0=x0, max_iter=max_iter, **kw)
    return solver


def _kkt(res, c, mu1, mu2):
    """Marginal residual and complementarity of the plan pi = max(alpha + beta - c, 0) / gamma."""
    P = res.plan.toarray()
    marg = max(np.abs(P.sum(1) - mu1).max(), np.abs(P.sum(0) - mu2).max())
    comp = np.abs(P - np.maximum(res.alpha[:, None] + res.beta[None, :] - c, 0.0) / res.gamma).max()
    return marg, comp


def test_warm_start_is_used_when_available():
    c, mu1, mu2, rng = _qrot_data()
    calls = []
    L = MarginalToPlan(c, mu2, 1e-3, solver=_spy(calls))
    r1 = L.solve(mu1)
    assert r1.success and calls == [(1e-3, False, 200)] and L.warm is not None
    assert np.array_equal(L.warm[0], r1.alpha)
    n1 = L.newton_iterations
    r2 = L.solve(mu1)  # no cache: solved again, from its own solution -> no Newton step
    # after a converged cold start the warm start's budget is capped relative to it
    assert calls[-1] == (1e-3, True, max(WARM_FLOOR, r1.nit // 2)) and L.newton_iterations == n1
    assert np.allclose(r2.plan.toarray(), r1.plan.toarray(), atol=1e-12)
    assert (L.solves, L.requests, L.failures) == (2, 2, 0)


def test_a_stalling_warm_start_is_cut_relative_to_the_cold_start():
    """A warm start gets at most max(WARM_FLOOR, cold iterations // 2) Newton steps, then the cold start runs."""
    c, mu1, mu2, rng = _qrot_data()
    calls = []
    L = MarginalToPlan(c, mu2, 1e-3, solver=_spy(calls))
    assert L._warm_cap() == 200  # no cold start seen yet: warm_max_iter
    r1 = L.solve(mu1)
    L.warm = (r1.alpha + rng.standard_normal(r1.alpha.size), r1.beta)  # a poor start
    res = L.solve(mu1)
    cap = max(WARM_FLOOR, r1.nit // 2)
    assert calls[1][1:] == (True, cap)
    assert res.success
    marg, comp = _kkt(res, c, mu1, mu2)
    assert marg <= 1e-9 and comp <= 1e-9


def test_cold_start_after_a_failed_warm_start():
    c, mu1, mu2, rng = _qrot_data()
    calls = []
    L = MarginalToPlan(c, mu2, 1e-3, warm_max_iter=0, solver=_spy(calls))
    L.solve(mu1)
    other = mu1 + 0.3 * rng.random(mu1.size) / mu1.size
    other /= other.sum()
    res = L.solve(other)  # the warm start gets 0 Newton steps at a new point: it fails
    assert calls[1:] == [(1e-3, True, 0), (1e-3, False, 200)]
    assert res.success and L.failures == 0 and L.solves == 3
    marg, comp = _kkt(res, c, other, mu2)
    assert marg <= 1e-9 and comp <= 1e-9


def test_small_gamma_needs_one_cold_start_the_cores_own_continuation():
    """At small gamma the core's cold start continues in gamma itself: one core call per request."""
    c, mu1, mu2, rng = _qrot_data()
    calls = []
    L = MarginalToPlan(c, mu2, 1e-5, solver=_spy(calls))
    res = L.solve(mu1)
    assert calls == [(1e-5, False, 200)] and res.success and res.gamma == 1e-5
    assert (L.requests, L.solves, L.failures) == (1, 1, 0)
    marg, comp = _kkt(res, c, mu1, mu2)
    assert marg <= 1e-9 and comp <= 1e-9


def test_a_failure_is_counted_and_not_used_as_warm_start():
    c, mu1, mu2, rng = _qrot_data()
    L = MarginalToPlan(c, mu2, 1e-4, qrot_options={"max_iter": 0})
    res = L.solve(mu1)
    assert not res.success and L.failures == 1 and L.warm is None
    assert L.counters()["lower_failures"] == 1


def test_cache_keyed_by_the_marginal_and_fresh_state_on_new_regularization():
    c, mu1, mu2, rng = _qrot_data()
    L = MarginalToPlan(c, mu2, 1e-3, cache_size=1)
    r = L.solve(mu1)
    assert L.solve(mu1.copy()) is r and (L.requests, L.solves) == (1, 1)
    L.solve(mu1[::-1] / mu1.sum())
    assert L.solve(mu1) is not r  # evicted (cache of one)
    M = L.with_regularization(1e-2)
    assert (M.gamma, M.eps, M.warm, M.solves, M.requests) == (1e-2, 0.0, None, 0, 0)
    assert L.solves == 3 and L.gamma == 1e-3
    with pytest.raises(ValueError, match="qrot_options"):
        MarginalToPlan(c, mu2, 1e-3, qrot_options=[("tol", 1e-9)])


def test_studies_set_the_public_warm_start():
    """The identification study's warm start goes through ``lower.warm`` (no private state)."""
    P = identification()
    r = P.lower_level(P.uniform())
    Q = identification()
    Q.lower.warm = (r.alpha, r.beta)
    calls = []
    Q.lower.solver = _spy(calls)
    Q.lower_level(P.uniform())
    assert calls[0][1] is True and Q.lower.newton_iterations == 0


def test_one_registry_of_study_problems():
    from femot.studies.config import ConfigError, parse_config
    from femot.studies.registry import _REGISTRY, get_problem, problem_names

    assert problem_names() == tuple(_REGISTRY) and len(problem_names()) == 5  # with control-exact
    for name in problem_names():
        assert get_problem(name).name == name
    with pytest.raises(ConfigError, match="choose one of " + ", ".join(problem_names())):
        parse_config({"study": {"problem": "nope"}})


def test_qrot_options_are_checked_when_the_problem_is_built():
    """Unknown or invalid core options fail at construction, naming qrot_options and the valid keys."""
    from femot.problems import MarginalToPlan, identification_instance, problem_from_instance

    d = identification_instance(10, 0, experiment=1)
    with pytest.raises(ValueError, match=r"qrot_options: unknown QROT option\(s\) \['bogus'\]; valid: tol, max_iter"):
        problem_from_instance(d, gamma=1e-2, eps=1e-2, qrot_options={"bogus": 1})
    c = np.abs(np.subtract.outer(np.arange(4.0), np.arange(4.0))) ** 2
    with pytest.raises(ValueError, match="qrot_options: tol must be a positive finite number"):
        MarginalToPlan(c, np.ones(4), 1e-2, qrot_options={"tol": -1.0})
    assert MarginalToPlan(c, np.ones(4), 1e-2, qrot_options={"init": "mean"}).qrot_options["init"] == "mean"
