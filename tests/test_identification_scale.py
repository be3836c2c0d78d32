"""The identification solver at scale (experiment 1, n = 200 and 500).

At n >= 200 with the cost |i - j|^2, the first levels (t gamma, t eps) of
``continuation="auto"`` put t eps |alpha| far above the marginals, where the lower level
does not converge; iterating there on unconverged plans cost minutes per level.  A
level is only a warm start, so the solver leaves it at the first failed lower solve and
goes on from the level's starting point.  The Newton path of the default can stop
uncertified at a kink (radius collapse) where the BFGS model's Bouligand model certifies
a point no higher: the default polishes it.  At tol the stopping test certifies points of
one basin whose J differ by about 1 %, and which of them a path reaches depends on the
levels: the default also runs the Newton model without them, and polishes its lowest
ends at tol/100.
"""
import numpy as np

from femot.problems import identification_instance, problem_from_instance


def test_a_level_whose_lower_level_fails_is_dropped():
    d = identification_instance(25, 1, experiment=1)
    # two Newton steps per lower solve: the level (10, 1e-3) fails, the problem's level does not
    kw = {"gamma": 1e-4, "eps": 1e-8, "qrot_options": {"max_iter": 2}}
    res = problem_from_instance(d, **kw).solve(model="newton", continuation=[1e5])
    level, last = res.levels
    assert (level["gamma"], level["eps"]) == (10.0, 1e-3)
    assert level["status"] == 4 and level["nit"] == 1  # left after its first iteration
    alone = problem_from_instance(d, **kw).solve(model="newton")
    # the last level starts where the dropped one did: the run without continuation
    assert last["nit"] == alone.nit and res.fun == alone.fun and np.array_equal(res.mu1, alone.mu1)


def test_a_level_whose_lower_level_converges_is_kept():
    d = identification_instance(25, 1, experiment=1)
    res = problem_from_instance(d, gamma=1e-4, eps=1e-8).solve(model="newton", continuation=[1e5])
    assert res.levels[0]["status"] == 0 and res.levels[0]["nit"] > 1
    alone = problem_from_instance(d, gamma=1e-4, eps=1e-8).solve(model="newton")
    assert not np.array_equal(res.mu1, alone.mu1)


def test_the_callback_sees_every_iteration_of_a_dropped_level():
    d = identification_instance(25, 1, experiment=1)
    seen = []
    P = problem_from_instance(d, gamma=1e-4, eps=1e-8, qrot_options={"max_iter": 2})
    res = P.solve(model="newton", continuation=[1e5], callback=lambda r: seen.append(r.nit))
    assert res.levels[0]["status"] == 4 and len(seen) == res.nit == sum(lv["nit"] for lv in res.levels)


def test_an_uncertified_newton_end_is_polished_by_the_bfgs_model():
    d = identification_instance(25, 1, experiment=1)
    res = problem_from_instance(d, gamma=1e-4, eps=1e-8).solve(options={"max_iter": 1}, starts=())
    phases = {p["phase"]: p for p in res.phases}
    newton, polish = phases["uniform: newton"], phases["uniform: newton + bfgs polish"]
    assert not newton["success"] and polish["model"] == "bfgs"
    assert polish["J"] <= newton["J"]  # the trust-region method is monotone


def test_every_level_runs_through_the_driver(monkeypatch):
    """Continuation levels and the final level of a phase are runs of solve_on_simplex."""
    import femot.problems.identification_paths as paths

    calls = []
    real = paths.solve_on_simplex

    def counting(problem, x0=None, **kw):
        calls.append(problem.gamma)
        return real(problem, x0, **kw)

    monkeypatch.setattr(paths, "solve_on_simplex", counting)
    d = identification_instance(25, 1, experiment=1)
    res = problem_from_instance(d, gamma=1e-4, eps=1e-4).solve(model="newton", continuation=[100.0, 10.0])
    assert calls == [lv["gamma"] for lv in res.levels] == [1e-2, 1e-3, 1e-4]


def phases_J(res, name):
    return next(p["J"] for p in res.phases if p["phase"] == name)


def test_the_default_polishes_its_lowest_ends_at_a_tighter_tolerance():
    """At tol the stopping test certifies points of one basin whose J differ by ~1e-3 relative; the
    default polishes the two lowest ends of each start by the Newton model at tol/100."""
    d = identification_instance(25, 1, experiment=1)
    res = problem_from_instance(d, gamma=1e-4, eps=1e-8).solve()
    # the BFGS path and the Newton path with continuation from either start, as before these rules
    paths = [p for p in res.phases if p["origin"] is None and "no continuation" not in p["phase"]]
    best = min((p for p in paths if p["success"]), key=lambda p: p["J"])
    assert best["stationarity"] > 1e-7  # certified at tol = 1e-5 only
    assert res.phase.endswith("+ newton at tol/100") and res.success
    assert res.stationarity <= 1e-7 and res.tol == 1e-5
    assert res.J < best["J"] * (1 - 1e-3)
    # the Newton path without continuation from the observed start meets the polished point
    assert phases_J(res, "observed: newton, no continuation") < best["J"] * (1 - 1e-3)
    # reference: the Newton model run to theta <= 1e-10 from the default's point lowers J by < 1e-6
    ref = problem_from_instance(d, gamma=1e-4, eps=1e-8).solve(res.mu1, model="newton", options={"tol": 1e-10})
    assert ref.success and res.J - ref.J <= 1e-6 * res.J


def test_the_default_runs_the_newton_model_without_continuation_when_a_level_was_kept():
    d = identification_instance(25, 1, experiment=1)
    res = problem_from_instance(d, gamma=1e-4, eps=1e-8).solve(starts=())
    phases = {p["phase"]: p for p in res.phases}
    levels = phases["uniform: newton"]["levels"]
    assert len(levels) == 3 and all(lv["status"] != 4 for lv in levels)  # (1e-2, 1e-6), (1e-3, 1e-7) kept
    alone = problem_from_instance(d, gamma=1e-4, eps=1e-8).solve(model="newton")
    assert phases["uniform: newton, no continuation"]["J"] == alone.fun
    # also when the Newton path ended uncertified and was polished
    res = problem_from_instance(d, gamma=1e-4, eps=1e-8).solve(options={"max_iter": 1}, starts=())
    names = [p["phase"] for p in res.phases]
    assert "uniform: newton + bfgs polish" in names and "uniform: newton, no continuation" in names
    # at gamma = 1e-2 there is no level: the Newton path is that run already and is not repeated
    res = problem_from_instance(d, gamma=1e-2, eps=1e-8).solve(starts=())
    assert not any("no continuation" in p["phase"] for p in res.phases)
