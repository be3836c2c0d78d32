"""Property-based tests of the transport core.

Random small problems (1-8 nodes a side, random positive weights, nonnegative
costs, eps = 0 and eps > 0, gamma from 1e-1 down to 1e-12) are solved by
``solve_qrot`` and judged against references computed here, independently of
the solver:

* the KKT conditions of the weighted primal (docs/core.md, Part III Thm 2.7 and
  (3.1)), recomputed from the returned potentials: ``pi = (alpha (+) beta - c)_+ / gamma``
  and the marginal equations ``sum_j w2_j pi_ij + eps alpha_i = mu1_i`` (and twin);
* the exact transport LP (``exact_ot``, HiGHS) through weak duality.

Whenever ``success`` is True the plan must satisfy the marginals to the reported
accuracy and its transport cost must respect the LP bounds; otherwise the status
must be one of the documented failure codes with a message that says why.
Malformed input of every kind must raise a ValueError naming the argument.

The default profile is small and derandomized (deterministic in CI); the
``slow`` profile runs many more examples (``make test-slow``).
"""
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from femot import exact_ot, solve_qrot
from femot.core.qrot import PRECISION_RTOL, STATUS_MESSAGES

U = np.finfo(float).eps
FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=600, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
# HiGHS solves to primal/dual feasibility 1e-7 (its defaults); the LP optimum and
# its duals are trusted to that, relative to the data scale (see _lp_slack).
LP_FEAS = 1e-7


# -- strategies -------------------------------------------------------------------

def _vec(n, lo, hi):
    return st.lists(st.floats(lo, hi, allow_nan=False, allow_infinity=False), min_size=n, max_size=n)


@st.composite
def problems(draw):
    n1 = draw(st.integers(1, 8))
    n2 = draw(st.integers(1, 8))
    scale = draw(st.sampled_from([1.0, 10.0, 1e3]))
    c = np.array(draw(_vec(n1 * n2, 0.0, 1.0))).reshape(n1, n2) * scale
    if draw(st.booleans()):
        w1 = np.array(draw(_vec(n1, 0.1, 10.0)))
        w2 = np.array(draw(_vec(n2, 0.1, 10.0)))
    else:
        w1 = w2 = None
    # densities with zeros allowed, at least one positive entry a side
    m1 = np.array(draw(_vec(n1, 0.0, 1.0)))
    m2 = np.array(draw(_vec(n2, 0.0, 1.0)))
    m1[draw(st.integers(0, n1 - 1))] += 0.5
    m2[draw(st.integers(0, n2 - 1))] += 0.5
    eps = draw(st.sampled_from([0.0, 0.0, 1e-8, 1e-3, 0.1, 1.0]))
    gamma = 10.0 ** draw(st.floats(-12.0, -1.0))
    W1 = np.ones(n1) if w1 is None else w1
    W2 = np.ones(n2) if w2 is None else w2
    if eps == 0.0:
        m2 = m2 * ((W1 @ m1) / (W2 @ m2))  # equal masses
    elif draw(st.booleans()):
        m2 = m2 * draw(st.floats(0.5, 2.0))  # unbalanced: allowed with eps > 0
    return dict(c=c, m1=m1, m2=m2, w1=w1, w2=w2, W1=W1, W2=W2, gamma=gamma, eps=eps)


# -- the property ------------------------------------------------------------------

def _lp_slack(c, mass):
    """What the LP reference is trusted to: LP_FEAS relative to (1 + max c) * mass."""
    return 10 * LP_FEAS * (1.0 + np.abs(c).max()) * max(mass, 1e-300)


def check_solution(p, tol=1e-10, stats=None):
    c, m1, m2, W1, W2 = p["c"], p["m1"], p["m2"], p["W1"], p["W2"]
    gamma, eps = p["gamma"], p["eps"]
    dmax = max(m1.max(), m2.max())
    cmax = float(np.abs(c).max())
    if 0 < cmax < np.finfo(float).eps * gamma * dmax / min(W1.sum(), W2.sum()):
        # a cost below the rounding of the plan entries (hypothesis draws entries like 1e-94):
        # the solver refuses gamma, naming the largest usable one
        with pytest.raises(ValueError, match=r"too large for double precision at this cost scale.*use gamma <="):
            solve_qrot(c, m1, m2, gamma, eps, p["w1"], p["w2"], tol=tol)
        return None
    res = solve_qrot(c, m1, m2, gamma, eps, p["w1"], p["w2"], tol=tol)
    if stats is not None:
        stats[res.status] = stats.get(res.status, 0) + 1
    if not res.success:
        assert res.status in (1, 2, 3, 4), res.status
        assert res.message.startswith(STATUS_MESSAGES[res.status]), res.message
        if res.status == 4:
            # the floor is what blocks, and the message names the way out
            assert res.residual_floor > PRECISION_RTOL * dmax
            g = float(re.search(r"gamma >= ([0-9.eE+-]+)", res.message).group(1))
            assert g > gamma
        return res
    # reported accuracy: status 0 below tol; status 5 above tol but below a floor that is
    # small against the data, and the message says so with the three numbers
    assert res.status in (0, 5)
    if res.status == 0:
        assert res.residual <= tol
    else:
        assert tol < res.residual <= res.residual_floor <= PRECISION_RTOL * dmax
        assert res.message.startswith(f"accepted at the double-precision floor: residual {res.residual:.3g} > "
                                      f"tol {tol:.3g}, floor {res.residual_floor:.3g}"), res.message

    # KKT of the weighted primal, from the potentials (Part III Thm 2.7, (3.1))
    a, b = res.alpha, res.beta
    z = a[:, None] + b[None, :] - c
    P = res.plan.toarray()
    assert P.min() >= 0.0
    # the solver evaluates the same z; allow its rounding u (|a|+|b|+|c|) per entry
    zround = 4 * U * (np.abs(a)[:, None] + np.abs(b)[None, :] + np.abs(c)) / gamma
    assert np.all(np.abs(P - np.maximum(z, 0.0) / gamma) <= zround)
    r1 = P @ W2 + eps * a - m1
    r2 = W1 @ P + eps * b - m2
    sumround = 16 * U * (max(np.abs(P @ W2).max(), np.abs(W1 @ P).max()) + dmax
                         + eps * max(np.abs(a).max(), np.abs(b).max()))
    resid = max(np.abs(r1).max(), np.abs(r2).max())
    assert resid <= res.residual + sumround, (resid, res.residual)

    # exact transport references (weighted masses T = w1 w2 pi)
    T = W1[:, None] * W2[None, :] * P
    cost = float(np.sum(c * T))
    assert abs(cost - res.transport_cost()) <= 1e-12 * max(1.0, abs(cost))
    ra, rb = P @ W2, W1 @ P  # the plan's own marginal densities
    mass = float(T.sum())
    if mass > 0:
        # (i) P is the regularized optimum for its own marginals (up to the rounding
        # zround of its cost, i.e. optimal for a cost c - delta, |delta| <= gamma*zround),
        # so <c,T> + gamma/2 |P|_w^2 <= <c,T*> + gamma/2 |P*|_w^2 for the exact plan P*.
        own = exact_ot(c, ra, rb * ((W1 @ ra) / (W2 @ rb)), p["w1"], p["w2"])
        assert own.success
        Ps = own.plan.toarray()
        reg = lambda Q: 0.5 * gamma * float(np.sum(W1[:, None] * W2[None, :] * Q * Q))  # noqa: E731
        delta = 2 * gamma * float(np.max(zround)) * mass
        slack = _lp_slack(c, mass) + delta
        assert cost >= own.cost - slack
        assert cost + reg(P) <= own.cost + reg(Ps) + slack, (cost, own.cost, reg(P), reg(Ps))
    if eps == 0.0:
        # (ii) weak duality against the exact problem for (mu1, mu2): with LP duals
        # f + g <= c, <c, T> >= <f, a'> + <g, b'> = OT + <f, a' - a> + <g, b' - b>,
        # a' - a = w1 (P w2 - mu1) the marginal error: rigorous, so the only slack
        # is the LP's own tolerance.
        ex = exact_ot(c, m1, m2, p["w1"], p["w2"])
        assert ex.success
        bound = ex.cost + ex.alpha @ (W1 * (ra - m1)) + ex.beta @ (W2 * (rb - m2))
        assert cost >= bound - _lp_slack(c, float(W1 @ m1)), (cost, ex.cost, bound)
        # and the marginal error behind that correction is small against the data
        assert np.abs(ra - m1).max() <= max(tol, PRECISION_RTOL * dmax) + sumround
    return res


@FAST
@given(problems())
def test_random_problems(p):
    check_solution(p)


@pytest.mark.slow
@SLOW
@given(problems())
def test_random_problems_many(p):
    check_solution(p)


def test_property_reference_rejects_a_success_below_the_optimum():
    """The reference above rejects a wrong answer (a 'success' whose cost is below the exact
    optimum): fed such a verdict, check_solution fails."""
    rng = np.random.default_rng(0)
    c = rng.random((5, 5))
    m1, m2 = rng.random(5), rng.random(5)
    m2 *= m1.sum() / m2.sum()
    res = solve_qrot(c, m1, m2, 1e-14)
    assert res.status == 4
    ex = exact_ot(c, m1, m2)
    P = res.plan.toarray()
    bound = ex.cost + ex.alpha @ (P.sum(1) - m1) + ex.beta @ (P.sum(0) - m2)
    # the unresolved plan is not a valid answer: its marginals are off by more than
    # the admissible 1e-3 max(mu) (this is what 'success' claimed before)
    assert res.residual > PRECISION_RTOL * max(m1.max(), m2.max())
    assert res.transport_cost() >= bound - _lp_slack(c, m1.sum())  # duality still holds


# -- malformed input ---------------------------------------------------------------

def _valid(n1, n2, seed):
    rng = np.random.default_rng(seed)
    c = rng.random((n1, n2))
    m1, m2 = rng.random(n1) + 0.1, rng.random(n2) + 0.1
    m2 *= m1.sum() / m2.sum()
    return dict(c=c, mu1=m1, mu2=m2, gamma=0.1, eps=0.0, w1=None, w2=None)


def _corrupt(kind, args, pos, factor):
    a = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in args.items()}
    n1, n2 = a["c"].shape
    if kind == "nan":  # NaN or inf anywhere in an array argument
        name = ["c", "mu1", "mu2", "w1", "w2"][pos % 5]
        if name in ("w1", "w2"):
            a[name] = np.ones(n1 if name == "w1" else n2)
        flat = a[name].reshape(-1)
        flat[pos % flat.size] = [np.nan, np.inf, -np.inf][pos % 3]
        return a, name
    if kind == "negative":
        name = ["mu1", "mu2"][pos % 2]
        a[name][pos % a[name].size] = -factor
        return a, name
    if kind == "weights":  # zero or negative weights
        name = ["w1", "w2"][pos % 2]
        w = np.ones(n1 if name == "w1" else n2)
        w[pos % w.size] = -factor if pos % 3 else 0.0
        a[name] = w
        return a, name
    if kind == "shape":
        name = ["mu1", "mu2", "w1", "w2", "c"][pos % 5]
        if name == "c":
            a["c"] = a["c"].reshape(-1) if pos % 2 else a["c"][None]
        elif name in ("w1", "w2"):
            a[name] = np.ones((n1 if name == "w1" else n2) + 1)
        else:
            a[name] = np.append(a[name], 0.5)
        return a, name
    if kind == "mass":  # eps = 0 needs equal masses
        a["mu2"] = a["mu2"] * (1.0 + factor)
        return a, "mass"
    if kind == "gamma":
        a["gamma"] = [0.0, -factor, np.nan, np.inf, "x"][pos % 5]
        return a, "gamma"
    if kind == "eps":
        a["eps"] = [-factor, np.nan, np.inf, "x"][pos % 4]
        return a, "eps"
    raise AssertionError(kind)


@FAST
@given(st.sampled_from(["nan", "negative", "weights", "shape", "mass", "gamma", "eps"]),
       st.integers(1, 8), st.integers(1, 8), st.integers(0, 10_000), st.floats(1e-3, 1e3),
       st.integers(0, 3))
def test_malformed_input_names_the_argument(kind, n1, n2, pos, factor, seed):
    args, name = _corrupt(kind, _valid(n1, n2, seed), pos, factor)
    if kind == "shape" and name == "c" and args["c"].ndim == 1:
        # a 1D cost is itself malformed (it would also mismatch mu1): either name is correct
        name = "c|mu1|mu2"
    with pytest.raises(ValueError, match=name):
        solve_qrot(args["c"], args["mu1"], args["mu2"], args["gamma"], args["eps"], args["w1"], args["w2"])
    if kind in ("nan", "negative", "weights", "mass") and name != "c":
        with pytest.raises(ValueError, match=name):
            exact_ot(args["c"], args["mu1"], args["mu2"], args["w1"], args["w2"])


def test_identification_rejects_negative_observed_plan():
    """An observed plan pi_d with negative entries is not a transport plan: refused."""
    import scipy.sparse as sp

    from femot.core.instances import hitchcock_instance
    from femot.problems.identification import TransportIdentification

    c, m1, m2 = hitchcock_instance(8, seed=0)
    pi = np.abs(np.random.default_rng(0).random((8, 8)))
    TransportIdentification(c, m2, pi, m1)  # nonnegative: accepted
    bad = pi.copy()
    bad[2, 3] = -1e-3
    for pd in (bad, sp.csr_matrix(bad)):
        with pytest.raises(ValueError, match="pi_d"):
            TransportIdentification(c, m2, pd, m1)
