"""Every demo checked against a number known independently of the demo's own computation.

Each test runs one demo through the command line on a small size and compares what it
reports with mathematics: an exact reference computed another way (linear programming,
quantile functions), an optimality inequality (the exact optimum is a minimum), or the
objective of the known truth. (transport-2d is tested in tests/test_fem_demos.py.)
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from femot.cli import main


def _run(tmp_path, name, *options):
    out = tmp_path / f"{name}.json"
    assert main(["demo", name, "--quiet", "--json", str(out), *options]) == 0
    return json.loads(out.read_text())


def test_qrot_1d_exact_cost_is_the_lp_optimum_and_the_gaps_close(tmp_path):
    from femot.core import exact_ot
    from femot.demos.qrot_1d import marginals

    n = 40
    s = _run(tmp_path, "qrot-1d", "--n", str(n), "--gammas", "1e-2", "1e-3", "1e-4")
    x, w, m1, m2 = marginals(n)
    lp = exact_ot((x[:, None] - x[None, :]) ** 2, m1, m2, w, w)  # HiGHS, not the monotone rearrangement
    assert s["exact_cost"] == pytest.approx(lp.cost, rel=1e-9)
    gaps = [lv["cost_gap"] for lv in s["levels"]]
    # the regularized plan is feasible for the unregularized problem: its cost is >= W_2^2
    assert min(gaps) >= -1e-12
    assert all(g1 < g0 for g0, g1 in zip(gaps, gaps[1:]))


def test_transport_1d_exact_cost_is_the_quantile_integral(tmp_path):
    from femot.demos.transport_1d import gaussian_mixture

    s = _run(tmp_path, "transport-1d", "--quick", "--levels", "3", "--factor", "0.1")
    # W_2^2 = int_0^1 |Q1(t) - Q2(t)|^2 dt with the quantile functions inverted from the
    # cumulative distribution functions on a fine grid (independent of femot.fem.wasserstein_1d)
    _, c1 = gaussian_mixture([(0.30, 0.08, 0.5), (0.62, 0.05, 0.5)])
    _, c2 = gaussian_mixture([(0.45, 0.10, 0.7), (0.80, 0.06, 0.3)])
    xs = np.linspace(0.0, 1.0, 400_001)
    F1 = 0.6 * c1(xs) + 0.2 * (xs >= 0.12) + 0.2 * (xs >= 0.85)
    F2 = c2(xs)
    t = (np.arange(200_000) + 0.5) / 200_000
    q1 = xs[np.minimum(np.searchsorted(F1, t), xs.size - 1)]
    q2 = xs[np.minimum(np.searchsorted(F2, t), xs.size - 1)]
    w2 = float(np.mean((q1 - q2) ** 2))
    assert s["exact_cost"] == pytest.approx(w2, abs=2e-5)
    errs = [lv["cost_error"] for lv in s["levels"]]
    assert all(e1 < e0 for e0, e1 in zip(errs, errs[1:]))
    assert all(lv["marginal_error"] < 1e-8 for lv in s["levels"])


def test_ocp_1d_exact_optimum_is_below_every_control_the_demo_visits(tmp_path):
    s = _run(tmp_path, "ocp-1d", "--quick", "--max-iter", "60")
    ref = s["reference"]
    assert ref["success"]
    # J* = tracking + nu W_2^2 at the QP's control, and it is the minimum of J: every
    # regularized control, evaluated in the unregularized J (monotone rearrangement), is worse
    assert ref["fun"] == pytest.approx(ref["tracking"] + s["nu"] * ref["transport"], rel=1e-10)
    for lv in s["levels"]:
        assert lv["objective_exact"] >= ref["fun"] - 1e-12 * abs(ref["fun"])
        assert lv["objective_gap_signed"] == pytest.approx(lv["objective_exact"] - ref["fun"], abs=1e-15)
    gaps = [lv["objective_gap"] for lv in s["levels"]]
    assert gaps[-1] < gaps[0]


def test_ocp_2d_value_formulation_is_certified_and_beats_the_start(tmp_path):
    s = _run(tmp_path, "ocp-2d", "--quick")
    assert s["success"]
    assert s["objective"] == pytest.approx(s["tracking"] + s["nu"] * s["transport"], rel=1e-10)
    # convex value formulation: the Frank-Wolfe gap bounds f - min f, so f is at most the
    # uniform start's objective (plus the certified gap)
    assert s["objective"] <= s["uniform_objective"] + s["fw_gap"]
    assert s["control_mass"] == pytest.approx(1.0, rel=1e-12)
    assert s["plan_marginal_error"] < 1e-8


def test_tracking_1d_reaches_the_objective_of_the_true_control(tmp_path):
    s = _run(tmp_path, "tracking-1d", "--quick")
    assert s["tr_success"]
    # the data come from a known control: the computed optimum is at least as good
    assert s["objective"] <= s["objective_true_control"] * (1 + 1e-6)
    assert s["objective"] < s["objective_start"]
    assert s["gradient_fd_rel_error"] < 1e-5


def test_identification_reaches_the_truths_objective_at_small_gamma(tmp_path):
    s = _run(tmp_path, "identification", "--quick", "--gammas", "1e-2", "1e-4")
    runs = s["experiment1"]
    for r in runs:
        assert r["success"]
        # with full observation the truth is feasible: the computed J cannot be larger
        assert r["J"] <= r["J_at_truth"] * (1 + 1e-6) + 1e-14
    errs = [r["mu1_err_max"] for r in runs]
    assert errs[-1] < errs[0]
