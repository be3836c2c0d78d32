"""The identification solver at scale (experiment 1, n = 200 and 500).

At n >= 200 with the cost |i - j|^2, the first levels (t gamma, t eps) of
``continuation="auto"`` put t eps |alpha| far above the marginals, where the lower level
does not converge; iterating there on unconverged plans cost minutes per level.  A
level is only a warm start, so the solver leaves it at the first failed lower solve and
goes on from the level's starting point.  The Newton path of the default can stop
uncertified at a kink (radius collapse) where the BFGS model's Bouligand model certifies
a point no higher: the default polishes it.
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
