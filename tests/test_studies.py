"""Convergence studies (femot.studies): config validation, resume, backends, metrics, reports."""
from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import time

import numpy as np
import pytest
import scipy.sparse as sp

from femot.studies import ConfigError, load_config, parse_config, run_study
from femot.studies.execution import Progress
from femot.studies.metrics import (
    fit_rate,
    observed_orders,
    plan_distance,
    plan_points,
    wasserstein_discrete,
    wasserstein_to_measure,
)
from femot.studies.study_problem import carry_nodal, nodal_state

# A small transport study: two seeds (random atoms of mu1), three coupled levels.
BASE = {
    "study": {"name": "tiny", "problem": "transport", "seeds": [0, 1]},
    "schedule": {"n_levels": 3, "gamma0": 1e-2, "factor": 0.1, "s": 1.0, "C": 1.0},
    "mesh": {"nodes_per_delta": 4.0},
    "transport": {"mu1": {"type": "random_diracs", "n": 3, "interval": [0.2, 0.8]},
                    "mu2": {"type": "diracs", "points": [0.35, 0.65]}},
}


def config(**changes):
    raw = copy.deepcopy(BASE)
    for key, value in changes.items():
        sec, _, field = key.partition("__")
        if field:
            if value is None:
                raw[sec].pop(field, None)
            else:
                raw.setdefault(sec, {})[field] = value
        elif value is None:
            raw.pop(sec, None)
        else:
            raw[sec] = value
    return raw


def toml_text(raw) -> str:
    """A minimal TOML writer for the configs of these tests."""
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {val(x)}" for k, x in v.items()) + " }"
        raise TypeError(v)

    out = []
    for sec, body in raw.items():
        out.append(f"[{sec}]")
        out += [f"{k} = {val(v)}" for k, v in body.items()]
        out.append("")
    return "\n".join(out)


def metrics_of(outcome) -> dict:
    return {r["id"]: {m: r[m] for m in outcome.study.metrics} for r in outcome.rows}


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("changes, field", [
    ({"study__problem": "heat-equation"}, "study.problem"),
    ({"study__problem": None}, "study.problem"),
    ({"mesh": {"name": "no_such_mesh"}}, "mesh.name"),
    ({"mesh": {"name": "meshes/missing.vtu"}}, "mesh.name"),
    ({"mesh": {"names": ["unit_interval_16", "nope"]}}, "mesh.names[1]"),
    # delta falls faster than gamma^(1/d): gamma/delta^2 grows (Part II (3.1) violated)
    ({"schedule": {"gammas": [1e-2, 1e-3, 1e-4], "deltas": [0.2, 0.05, 0.01]}}, "schedule.deltas"),
    # gamma/delta^d decreases too little (s tiny)
    ({"schedule": {"n_levels": 3, "gamma0": 1e-2, "factor": 0.5, "s": 0.01}},
     "schedule.n_levels/gamma0/factor (with s, C)"),
    ({"schedule": {"gammas": [1e-2, 2e-2], "deltas": [0.2, 0.1]}}, "schedule.deltas"),
    ({"schedule__factor": 1.5}, "schedule.factor"),
    ({"schedule__d": 3}, "schedule.d"),
    ({"schedule__bogus": 1}, "schedule.bogus"),
    ({"transport__mu2": {"type": "diracs", "points": [0.35, 1.5]}}, "transport.mu2.points[1]"),
    ({"transport__mu2": {"type": "gauss"}}, "transport.mu2.type"),
    ({"transport__mu2": {"type": "diracs", "points": [0.5], "weights": [2.0]}}, "transport.mu2"),
    ({"transport__enlarge": False, "transport__mu1": {"type": "diracs", "points": [0.4, 0.6]},
      "transport__mu2": {"type": "diracs", "points": [0.1, 0.65]}}, "transport.mu2"),
    ({"control": {"nu": 1.0}}, "control"),
    ({"report": {"metrics": ["cost_error", "speed"]}}, "report.metrics[1]"),
    ({"study__seeds": [1, 1]}, "study.seeds"),
])
def test_invalid_configs_are_rejected_naming_the_field(changes, field):
    with pytest.raises(ConfigError) as exc:
        parse_config(config(**changes))
    assert str(exc.value).startswith(field), str(exc.value)


def test_coupling_violation_message_explains_the_condition():
    with pytest.raises(ConfigError, match=r"gamma_n/delta_n\^d -> 0"):
        parse_config(config(schedule={"gammas": [1e-2, 1e-3, 1e-4], "deltas": [0.2, 0.05, 0.01]}))


def test_rejected_config_starts_no_run(tmp_path, capsys):
    from femot.cli import main

    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml_text(config(study__problem="unknown-problem")))
    out = tmp_path / "out"
    assert main(["study", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "study.problem" in err and "unknown-problem" in err
    assert not out.exists()


def test_schedule_follows_the_coupling_and_ids_are_deterministic():
    st = parse_config(config())
    g, de = np.array(st.gammas), np.array(st.deltas)
    assert np.allclose(g, 1e-2 * 0.1 ** np.arange(3))
    assert np.allclose(de, g ** (1 / 3))  # delta = C gamma^(1/(d+s)), d = 2, s = 1, C = 1
    assert np.all(np.diff(g / de**st.d) < 0)
    assert len(st.chains) == 2 and len(st.runs) == 6
    ids = [lv.id for lv in st.runs]
    assert len(set(ids)) == 6
    assert ids == [lv.id for lv in parse_config(config()).runs]
    # Extending the schedule keeps the ids of the common levels (their inputs are unchanged) ...
    longer = parse_config(config(schedule__n_levels=4))
    assert [lv.id for lv in longer.chains[0].levels[:3]] == [lv.id for lv in st.chains[0].levels]
    # ... while a changed parameter changes every id.
    other = parse_config(config(**{"transport__beta": 1.5}))
    assert not set(ids) & {lv.id for lv in other.runs}


def test_mesh_levels_follow_delta():
    st = parse_config(config())
    cells = [lv.mesh.cells for lv in st.chains[0].levels]
    assert all(c >= 4 / de for c, de in zip(cells, st.deltas))  # h = 1/cells <= delta / 4


# ----------------------------------------------------------------------------- metrics


def test_wasserstein_discrete_matches_linear_programming():
    from scipy.spatial.distance import cdist

    from femot import exact_ot

    rng = np.random.default_rng(3)
    for dim in (1, 2):
        xa, xb = rng.random((6, dim)), rng.random((5, dim))
        a, b = rng.random(6), rng.random(5)
        for p in (1.0, 2.0):
            lp = exact_ot(cdist(xa, xb) ** p, a / a.sum(), b / b.sum()).cost
            assert abs(wasserstein_discrete(xa, a, xb, b, p) - lp ** (1 / p)) <= 1e-9


def test_plan_distance_of_a_translate_is_the_shift():
    # W1(pi, pi(. - v)) = |v| for the Euclidean ground metric (potential x . v / |v|).
    rng = np.random.default_rng(0)
    x = np.linspace(0, 1, 7)
    P = sp.random(7, 7, density=0.4, random_state=1, format="csr")
    pa, a = plan_points(P, x, x)
    v = np.array([0.03, -0.04])
    assert plan_distance(pa, a, pa + v, 3.0 * a) == pytest.approx(0.05, abs=1e-12)
    assert plan_distance(pa, a, pa, a) == pytest.approx(0.0, abs=1e-14)
    w = rng.random(7) + 0.5
    pw, aw = plan_points(P, x, x, w, w)  # densities -> masses w_i w_j pi_ij
    coo = P.tocoo()
    assert np.allclose(np.sort(aw), np.sort(w[coo.row] * w[coo.col] * coo.data))


def test_plan_distance_without_pot_uses_the_lp(monkeypatch):
    import sys

    rng = np.random.default_rng(2)
    pa, pb = rng.random((9, 2)), rng.random((7, 2))
    a, b = rng.random(9), rng.random(7)
    with_pot = plan_distance(pa, a, pb, b) if importlib.util.find_spec("ot") else None
    monkeypatch.setitem(sys.modules, "ot", None)  # import ot -> ImportError
    lp = plan_distance(pa, a, pb, b)
    assert np.isfinite(lp) and lp > 0
    if with_pot is not None:
        assert lp == pytest.approx(with_pot, abs=1e-10)
    monkeypatch.setattr("femot.studies.metrics.PLAN_LP_LIMIT", 10)
    assert math.isnan(plan_distance(pa, a, pb, b))  # too large for the LP fallback: NaN, not a guess


def test_wasserstein_to_measure_equals_the_discrete_formula_for_atoms():
    from femot.fem import DiracSum

    rng = np.random.default_rng(5)
    x, m = rng.random(8), rng.random(8)
    z, wz = rng.random(4), rng.random(4)
    mu = DiracSum(z, wz)
    for p in (1.0, 2.0):
        assert wasserstein_to_measure(x, m, mu, p) == pytest.approx(wasserstein_discrete(x, m, z, wz, p), abs=1e-9)


def test_fitted_rates_recover_power_laws():
    g = np.array([1e-2, 1e-3, 1e-4, 1e-5])
    assert fit_rate(g, 3.0 * g**0.75) == pytest.approx(0.75, abs=1e-12)
    assert np.allclose(observed_orders(g, 2 * g**1.5)[1:], 1.5)
    assert math.isnan(observed_orders(g, g)[0])
    assert math.isnan(fit_rate(g[:1], g[:1]))
    assert fit_rate(g, np.array([1e-3, 0.0, np.nan, 1e-5])) == pytest.approx(1.0 / 1.5)


def test_warm_start_potentials_are_p1_interpolants_of_the_previous_mesh():
    from skfem import MeshTri

    from femot.fem import quadrature

    q_old, q_new = quadrature(MeshTri.init_sqsymmetric().refined(1)), quadrature(MeshTri.init_sqsymmetric().refined(3))
    f = lambda x: 2 * x[:, 0] - 3 * x[:, 1] + 1  # noqa: E731
    warm = dict(nodal_state(q_old), alpha=f(q_old.nodes))
    assert np.allclose(carry_nodal(warm, "alpha", q_new.nodes), f(q_new.nodes))  # exact for affine functions
    assert np.array_equal(carry_nodal(warm, "alpha", q_old.nodes), warm["alpha"])
    xo, xn = np.linspace(0, 1, 9), np.linspace(0, 1, 23)  # on the line: the mesh of the sorted nodes
    line = {"q_nodes": xo[:, None], "alpha": 2 * xo - 1}
    assert np.allclose(carry_nodal(line, "alpha", xn[:, None]), 2 * xn - 1)


def test_progress_bar_text():
    import io

    buf = io.StringIO()
    p = Progress(40, 12, stream=buf)
    p.update(running=2)
    assert "[#########.....................] 12/40 done, 2 running" in buf.getvalue()
    quiet = io.StringIO()
    Progress(4, quiet=True, stream=quiet).update(1, 1)
    assert quiet.getvalue() == ""


# ----------------------------------------------------------------------------- runs, resume


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The tiny study run serially, uninterrupted."""
    out = tmp_path_factory.mktemp("ref")
    return run_study(parse_config(config()), out, quiet=True, plots=False)


def test_transport_study_converges_against_the_exact_transport(reference_run):
    from femot.core import wasserstein_pp_1d
    from femot.studies.line_measures import build_measure

    o = reference_run
    assert o.complete and not o.failed and len(o.executed) == 6
    st = o.study
    for ch in st.chains:
        rows = [r for r in o.rows if r["chain"] == ch.label]
        # the plan and its marginals approach the exact ones at every level
        for m in ("marginal_w1", "plan_w1"):
            e = [r[m] for r in rows]
            assert all(b < a for a, b in zip(e, e[1:])), (m, e)
        # the stored exact value is W_2^2 of the atoms (independent formula)
        mu1 = build_measure(st.params["mu1"], (0.0, 1.0), ch.seed, 1)
        mu2 = build_measure(st.params["mu2"], (0.0, 1.0), ch.seed, 2)
        rec = json.loads((o.root / "runs" / f"{rows[0]['id']}.json").read_text())
        W = wasserstein_pp_1d(mu1.points[:, 0], mu2.points[:, 0], mu1.weights, mu2.weights, p=2.0)
        assert rec["info"]["exact"] == pytest.approx(W, abs=1e-9)
        assert rec["metrics"]["cost_error"] == pytest.approx(abs(rec["info"]["transport_cost"] - W), abs=1e-9)
        assert rec["info"]["marginal_residual"] < 1e-8
    # seeds give different instances
    r0 = [r for r in o.rows if r["chain"] == st.chains[0].label]
    r1 = [r for r in o.rows if r["chain"] == st.chains[1].label]
    assert r0[0]["cost_error"] != r1[0]["cost_error"]


def test_outputs_are_written(reference_run):
    root = reference_run.root
    for f in ("manifest.json", "results.csv", "results.md", "rates.csv", "report.md"):
        assert (root / f).is_file(), f
    man = json.loads((root / "manifest.json").read_text())
    assert man["status"] == "complete" and man["counts"]["done"] == 6
    assert {r["status"] for r in man["runs"]} == {"done"}
    lines = (root / "results.csv").read_text().splitlines()
    assert len(lines) == 7 and lines[0].startswith("chain,seed,mesh,level,gamma,delta")
    for r in reference_run.rows:
        assert (root / "runs" / f"{r['id']}.json").is_file() and (root / "runs" / f"{r['id']}.npz").is_file()
    text = reference_run.table()
    assert "fitted rates" in text and "plan_w1" in text


class Stop(Exception):
    pass


def test_interrupted_study_resumes_without_recomputing(tmp_path, reference_run, capsys):
    st = parse_config(config())
    out = tmp_path / "study"
    k = 4  # chain 0 complete, chain 1 stopped after its first level
    seen = []

    def hook(record):
        seen.append(record["id"])
        if len(seen) == k:
            raise Stop

    with pytest.raises(Stop):
        run_study(st, out, quiet=True, plots=False, on_run_done=hook)
    done = sorted(p.stem for p in (out / "runs").glob("*.json"))
    assert sorted(seen) == done and len(done) == k
    assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}

    executed = []
    o = run_study(st, out, quiet=True, plots=False, on_run_done=lambda r: executed.append(r["id"]))
    all_ids = [lv.id for lv in st.runs]
    assert sorted(o.executed) == sorted(executed) == sorted(set(all_ids) - set(done))
    assert sorted(o.previously_complete) == done
    for name, t in mtimes.items():  # finished runs were not rewritten
        assert (out / "runs" / name).stat().st_mtime_ns == t
    # The resumed level warm-started from the stored state: same numbers as uninterrupted.
    assert metrics_of(o) == metrics_of(reference_run)
    rec = json.loads((out / "runs" / f"{st.chains[1].levels[1].id}.json").read_text())
    assert rec["warm_start"] == "level 0 (stored state)"

    # A finished study does nothing and says so.
    capsys.readouterr()
    def mtimes_of_outputs():  # (the lock file records the pid of each call)
        return {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != ".femot.lock"}

    before = mtimes_of_outputs()
    again = run_study(st, out, plots=False, on_run_done=lambda r: pytest.fail("a run was executed"))
    assert again.nothing_to_do and again.executed == [] and again.complete
    assert "nothing to run" in capsys.readouterr().out
    assert mtimes_of_outputs() == before


def test_a_lost_middle_run_is_recomputed_alone(tmp_path, reference_run):
    st = parse_config(config())
    out = tmp_path / "s"
    run_study(st, out, quiet=True, plots=False)
    lost = st.chains[0].levels[1].id
    (out / "runs" / f"{lost}.json").unlink()
    o = run_study(st, out, quiet=True, plots=False)
    assert o.executed == [lost]
    assert metrics_of(o) == metrics_of(reference_run)


def test_a_failing_run_is_reported_and_retried(tmp_path, monkeypatch, reference_run):
    from femot.studies.transport_study import TransportStudy

    st = parse_config(config())
    bad = st.chains[0].levels[1].id
    original = TransportStudy.solve

    def flaky(self, ctx, level, warm):
        if level.id == bad:
            raise FloatingPointError("injected failure")
        return original(self, ctx, level, warm)

    monkeypatch.setattr(TransportStudy, "solve", flaky)
    o = run_study(st, tmp_path, quiet=True, plots=False)
    assert o.failed == [bad] and not o.complete and len(o.executed) == 5
    err = json.loads((tmp_path / "runs" / f"{bad}.error.json").read_text())
    assert "injected failure" in err["error"]
    after = json.loads((tmp_path / "runs" / f"{st.chains[0].levels[2].id}.json").read_text())
    assert after["warm_start"].startswith("cold")  # the chain went on without a warm start
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["status"] == "incomplete" and [r["status"] for r in man["runs"]].count("error") == 1

    monkeypatch.setattr(TransportStudy, "solve", original)
    o2 = run_study(st, tmp_path, quiet=True, plots=False)
    assert o2.executed == [bad] and o2.complete and not (tmp_path / "runs" / f"{bad}.error.json").exists()
    assert metrics_of(o2)[bad] == metrics_of(reference_run)[bad]  # warm start from the stored level 0


def test_cli_rerun_of_finished_study(tmp_path, capsys):
    from femot.cli import main

    cfg = tmp_path / "s.toml"
    raw = config(study__seeds=[0], schedule__n_levels=2, schedule__factor=0.05)
    cfg.write_text(toml_text(raw))
    out = tmp_path / "out"
    assert main(["study", str(cfg), "--out", str(out), "--no-plots"]) == 0
    text = capsys.readouterr().out
    assert "2 run(s) executed" in text and "fitted rates" in text
    assert main(["study", str(cfg), "--out", str(out)]) == 0
    assert "nothing to run" in capsys.readouterr().out
    assert main(["study", str(cfg), "--out", str(out), "--check"]) == 0
    assert capsys.readouterr().out.count(" done") == 2


# ----------------------------------------------------------------------------- backends


def test_process_pool_equals_serial(tmp_path, reference_run):
    o = run_study(parse_config(config()), tmp_path / "pool", workers=2, quiet=True, plots=False)
    assert o.backend == "process" and len(o.executed) == 6
    assert metrics_of(o) == metrics_of(reference_run)


@pytest.mark.skipif(importlib.util.find_spec("distributed") is None, reason="dask.distributed not installed")
def test_dask_local_cluster_equals_serial(tmp_path, reference_run):
    o = run_study(parse_config(config()), tmp_path / "dask", dask_local=2, quiet=True, plots=False)
    assert o.backend == "dask-local" and len(o.executed) == 6 and not o.errors
    assert metrics_of(o) == metrics_of(reference_run)


@pytest.mark.skipif(importlib.util.find_spec("distributed") is None, reason="dask.distributed not installed")
def test_dask_existing_scheduler_equals_serial(tmp_path, reference_run):
    import logging

    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster:
        o = run_study(parse_config(config()), tmp_path / "dask", scheduler=cluster.scheduler_address, quiet=True,
                      plots=False)
    assert o.backend == "dask" and len(o.executed) == 6 and not o.errors
    assert metrics_of(o) == metrics_of(reference_run)


def test_backend_arguments_are_exclusive(tmp_path):
    with pytest.raises(ValueError, match="workers, dask_local, scheduler"):
        run_study(parse_config(config()), tmp_path, workers=2, dask_local=2)


# ----------------------------------------------------------------------------- shipped configs


@pytest.mark.parametrize("name", ["control_1d.toml", "transport_1d.toml"])
def test_shipped_configs_validate(name):
    path = os.path.join(os.path.dirname(__file__), "..", "demos", "studies", name)
    st = load_config(path)
    assert len(st.gammas) >= 5
    assert np.all(np.diff(np.array(st.gammas) / np.array(st.deltas) ** st.d) < 0)


# ----------------------------------------------------------------------------- control


def test_control_study_converges_to_the_known_solution(tmp_path):
    """Prior = the control that generates y_d: the exact (OCP) solution is mu* (objective 0)."""
    from femot.core import wasserstein_pp_1d

    star = {"points": [0.375, 0.625], "weights": [0.5, 0.5]}
    raw = {"study": {"name": "control-tiny", "problem": "control"},
           "schedule": {"n_levels": 3, "gamma0": 1e-2, "factor": 0.1, "s": 1.0, "C": 0.5},
           "mesh": {"name": "unit_interval_16", "resolution_ratio": 0.25},  # not about resolution
           "control": {"nu": 0.05, "y_d": dict(star, type="state"), "mu2": dict(star, type="diracs")}}
    o = run_study(parse_config(raw), tmp_path, quiet=True, plots=False)
    assert o.complete and not o.failed
    rows = o.rows
    for m in ("control_w1", "objective_gap", "value_error", "state_error"):
        e = [r[m] for r in rows]
        assert all(b < a for a, b in zip(e, e[1:])), (m, e)
    for r in rows:
        rec = json.loads((tmp_path / "runs" / f"{r['id']}.json").read_text())
        assert rec["info"]["reference_status"] == 0 and abs(rec["info"]["reference_fun"]) < 1e-8
        assert r["control_w1"] <= r["control_w2"] + 1e-12  # W1 <= W2 for probability measures
        assert r["objective_gap"] >= -1e-9
        with np.load(tmp_path / "runs" / f"{r['id']}.npz") as z:  # independent recomputation
            w1 = wasserstein_pp_1d(z["control_points"][:, 0], star["points"], z["x"], star["weights"], p=1)
        assert r["control_w1"] == pytest.approx(w1, abs=1e-6)
    assert rows[1]["warm_start"].startswith("level 0")


# ----------------------------------------------------------------------------- identification, tracking


def test_identification_study_approaches_the_observed_solution(tmp_path):
    from femot.core import wasserstein_pp_1d
    from femot.core.instances import hitchcock_instance

    raw = {"study": {"name": "ident", "problem": "identification"},
           "schedule": {"gammas": [1e-3, 1e-4, 1e-5]}, "identification": {"n": 16}}
    o = run_study(parse_config(raw), tmp_path, quiet=True, plots=False)
    assert o.complete and not o.failed
    for m in ("objective", "plan_w1"):
        e = [r[m] for r in o.rows]
        assert all(b < a for a, b in zip(e, e[1:])), (m, e)
    _, mu1_true, _ = hitchcock_instance(16, 0)
    x = np.linspace(0, 1, 16)
    for r in o.rows:
        with np.load(tmp_path / "runs" / f"{r['id']}.npz") as z:
            assert r["mu1_w1"] == pytest.approx(wasserstein_pp_1d(x, x, z["x"], mu1_true, p=1), abs=1e-12)
            assert r["mu1_err_max"] == pytest.approx(np.abs(z["x"] - mu1_true).max(), abs=1e-15)
    assert "delta" not in o.table().splitlines()[0]


@pytest.mark.parametrize("changes, field", [
    ({"mesh": {"name": "unit_interval_16"}}, "mesh"),
    ({"schedule": {"gammas": [1e-2, 1e-3], "deltas": [0.1, 0.05]}}, "schedule.deltas"),
    ({"schedule": {"gammas": [1e-2, 1e-2]}}, "schedule.gammas"),
    ({"identification": {"n": 1}}, "identification.n"),
])
def test_identification_config_errors(changes, field):
    raw = {"study": {"name": "ident", "problem": "identification"},
           "schedule": {"gammas": [1e-3, 1e-4]}, "identification": {"n": 16}}
    raw.update(changes)
    with pytest.raises(ConfigError) as exc:
        parse_config(raw)
    assert str(exc.value).startswith(field), str(exc.value)


def test_tracking_study_converges_to_the_measured_plan(tmp_path):
    raw = {"study": {"name": "track", "problem": "tracking"},
           "schedule": {"n_levels": 3, "gamma0": 1e-2, "factor": 0.1, "s": 1.0, "C": 0.5},
           "mesh": {"name": "unit_interval_16", "resolution_ratio": 0.25},  # not about resolution
           "tracking": {"nu": 0.01, "mu1": {"points": [0.375, 0.625], "weights": [0.5, 0.5]},
                        "mu2": {"points": [0.4375, 0.6875], "weights": [0.5, 0.5]}}}
    o = run_study(parse_config(raw), tmp_path, quiet=True, plots=False)
    assert o.complete and not o.failed
    for m in ("plan_w1", "objective", "misfit"):
        e = [r[m] for r in o.rows]
        assert all(b < a for a, b in zip(e, e[1:])), (m, e)
    for r in o.rows:
        assert 0 <= r["misfit"] <= r["objective"] + 1e-15
        assert r["control_w1"] <= r["control_w2"] + 1e-12
    bad = copy.deepcopy(raw)
    bad["tracking"]["mu1"] = {"points": [0.05, 0.625], "weights": [0.5, 0.5]}
    with pytest.raises(ConfigError, match=r"^tracking\.mu1"):
        parse_config(bad)


# ----------------------------------------------------------------------------- store integrity
#
# Damaged runs and outputs are recomputed or regenerated; a busy or foreign directory is refused.


@pytest.fixture(scope="module")
def one_chain(tmp_path_factory):
    """One chain of three levels, run serially, uninterrupted: (study, outcome)."""
    st = parse_config(config(study__seeds=[0]))
    return st, run_study(st, tmp_path_factory.mktemp("one"), quiet=True, plots=False)


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [
    ("npz", _truncate),                                 # BadZipFile before: the study could not resume
    ("npz", _flip_byte),                                # same size, other content: the checksum differs
    ("npz", lambda p: p.unlink()),                      # the state the result promises is gone
    ("json", _truncate),
    ("json", lambda p: p.write_text("")),
    ("json", lambda p: p.write_text(json.dumps({"id": "someone-else", "complete": True}))),
])
def test_a_damaged_run_is_recomputed_and_reported(tmp_path, one_chain, capsys, damage):
    st, ref = one_chain
    ext, hurt = damage
    out = tmp_path / "s"
    run_study(st, out, quiet=True, plots=False)
    bad, after = st.chains[0].levels[1].id, st.chains[0].levels[2].id
    hurt(out / "runs" / f"{bad}.{ext}")
    (out / "runs" / f"{after}.json").unlink()  # the next level is missing: it warm-starts from the damaged one
    capsys.readouterr()
    o = run_study(st, out, quiet=True, plots=False)
    assert o.executed == [bad, after] and [d["id"] for d in o.damaged] == [bad] and o.complete
    err = capsys.readouterr().err
    assert f"recomputed 1 damaged run: runs/{bad}.{ext}" in err, err
    # recomputed from the stored state of level 0: the numbers of the uninterrupted run
    assert metrics_of(o) == metrics_of(ref)
    with np.load(out / "runs" / f"{bad}.npz") as z:
        assert set(z.files) == {"x1", "x2", "alpha", "beta"}


def test_a_damaged_state_with_a_process_pool_is_recomputed(tmp_path, one_chain, capsys):
    st, ref = one_chain
    out = tmp_path / "s"
    run_study(st, out, quiet=True, plots=False)
    bad = st.chains[0].levels[0].id
    _truncate(out / "runs" / f"{bad}.npz")
    (out / "runs" / f"{st.chains[0].levels[2].id}.json").unlink()  # and a missing run after it
    o = run_study(st, out, workers=2, quiet=True, plots=False)
    assert sorted(o.executed) == sorted([bad, st.chains[0].levels[2].id]) and o.complete and not o.errors
    assert f"runs/{bad}.npz" in capsys.readouterr().err
    assert metrics_of(o) == metrics_of(ref)


def test_legacy_state_without_checksum_is_read_in_full(tmp_path, one_chain):
    from femot.studies.store import RunStore

    st, _ = one_chain
    run_study(st, tmp_path, quiet=True, plots=False)
    store = RunStore(tmp_path)
    rid = st.chains[0].levels[0].id
    rec = json.loads(store.result_path(rid).read_text())
    del rec["state"]  # as written before checksums were recorded
    del rec["sha256"]  # (of the state, and of the result itself)
    store.result_path(rid).write_text(json.dumps(rec))
    assert store.inspect(rid) == ("complete", None)
    _truncate(store.state_path(rid), 0.9)
    st_, why = store.inspect(rid)
    assert st_ == "damaged" and "not a valid npz archive" in why


def test_truncated_manifest_and_emptied_results_are_regenerated(tmp_path, one_chain):
    st, ref = one_chain
    run_study(st, tmp_path, quiet=True, plots=False)
    good = {f: (tmp_path / f).read_text() for f in ("manifest.json", "results.csv", "results.md", "report.md")}
    _truncate(tmp_path / "manifest.json")
    (tmp_path / "results.csv").write_text("")
    (tmp_path / "results.md").unlink()
    (tmp_path / "report.md").write_text("# nothing\n")
    o = run_study(st, tmp_path, quiet=True, plots=False)
    assert o.nothing_to_do
    for f, text in good.items():
        assert (tmp_path / f).read_text() == text, f
    man = json.loads(good["manifest.json"])
    assert man["status"] == "complete" and man["counts"]["done"] == man["counts"]["total"] == 3
    assert len((tmp_path / "results.csv").read_text().splitlines()) == 4


def test_the_manifest_is_current_while_the_study_runs(tmp_path):
    """What a SIGKILL at any moment leaves behind: the manifest counts the stored runs."""
    st = parse_config(config(study__seeds=[0]))
    seen = []

    def hook(record):
        seen.append(record["id"])
        man = json.loads((tmp_path / "manifest.json").read_text())
        assert man["status"] == "running" and man["process"]["pid"] == os.getpid()
        assert man["counts"]["done"] == len(seen)
        assert {r["id"] for r in man["runs"] if r["status"] == "done"} == set(seen)

    o = run_study(st, tmp_path, quiet=True, plots=False, on_run_done=hook)
    assert len(seen) == 3 and o.complete
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["status"] == "complete" and "process" not in man


def _hold_lock_in_another_process(folder):
    """A process that holds the study lock of ``folder`` (as a running study does)."""
    import subprocess
    import sys

    folder.mkdir(parents=True, exist_ok=True)
    code = ("import fcntl, os, sys, time\n"
            f"fh = open({str(folder / '.femot.lock')!r}, 'a+')\n"
            "fcntl.flock(fh.fileno(), fcntl.LOCK_EX)\n"
            "fh.seek(0); fh.truncate(); fh.write(f'{os.getpid()} host\\n'); fh.flush()\n"
            "print('locked', flush=True)\n"
            "time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert _read_line(proc, 60) == "locked"
    return proc


def _read_line(proc, timeout) -> str:
    """The next line of the child's stdout, failing (and killing it) after ``timeout`` seconds."""
    import select

    if not select.select([proc.stdout], [], [], timeout)[0]:
        proc.kill()
        pytest.fail(f"no output from the child process within {timeout} s")
    return proc.stdout.readline().strip()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX file locks")
def test_a_second_process_on_the_same_out_is_refused(tmp_path, capsys):
    from femot.cli import main

    cfg = tmp_path / "s.toml"
    cfg.write_text(toml_text(config(study__seeds=[0])))
    out = tmp_path / "out"
    holder = _hold_lock_in_another_process(out)
    try:
        assert main(["study", str(cfg), "--out", str(out), "--quiet", "--no-plots"]) == 2
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and "in use by another femot study" in err and len(err.splitlines()) == 1
        assert not (out / "runs").exists() and not (out / "manifest.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # the lock dies with its holder
    assert main(["study", str(cfg), "--out", str(out), "--quiet", "--no-plots"]) == 0


def test_another_study_into_a_used_directory_is_refused_unless_forced(tmp_path, capsys):
    from femot.cli import main

    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text(toml_text(config(study__seeds=[0], schedule__n_levels=2, schedule__factor=0.05)))
    b.write_text(toml_text(config(study__seeds=[1], schedule__n_levels=2, schedule__factor=0.05)))
    out = tmp_path / "out"
    assert main(["study", str(a), "--out", str(out), "--quiet", "--no-plots"]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".femot.lock"}
    capsys.readouterr()
    assert main(["study", str(b), "--out", str(out), "--quiet", "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert "holds another study" in err and "--force" in err and len(err.splitlines()) == 1
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".femot.lock"} == before
    # the same study again is fine, and --check says what a run would meet
    assert main(["study", str(a), "--out", str(out), "--quiet"]) == 0
    assert main(["study", str(b), "--out", str(out), "--check"]) == 0
    assert "needs --force" in capsys.readouterr().out
    assert main(["study", str(b), "--out", str(out), "--quiet", "--no-plots", "--force"]) == 0
    assert (out / "config.toml").read_text() == b.read_text()
    assert json.loads((out / "manifest.json").read_text())["counts"]["done"] == 2
    # a directory with other files and no study in it
    other = tmp_path / "thesis"
    other.mkdir()
    (other / "chapter1.tex").write_text("x")
    capsys.readouterr()
    assert main(["study", str(a), "--out", str(other), "--quiet", "--no-plots"]) == 2
    assert "holds no femot study" in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == ["chapter1.tex"]


def test_output_files_get_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        run_study(parse_config(config(study__seeds=[0], schedule__n_levels=2, schedule__factor=0.05)), tmp_path,
                  quiet=True, plots=False)
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != ".femot.lock"]
    assert len(files) >= 9
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o644)}, \
        {p.name: oct(p.stat().st_mode & 0o777) for p in files}


# ----------------------------------------------------------------------------- early validation


CONTROL = {"study": {"name": "control-tiny", "problem": "control"},
           "schedule": {"n_levels": 3, "gamma0": 1e-2, "factor": 0.1, "s": 1.0, "C": 0.5},
           "mesh": {"name": "unit_interval_16", "resolution_ratio": 0.25},  # not about resolution
           "control": {"nu": 0.05, "y_d": {"type": "state", "points": [0.375, 0.625]},
                       "mu2": {"type": "diracs", "points": [0.375, 0.625]}}}


@pytest.mark.parametrize("section, value, field", [
    ("y_d", {"type": "state", "points": [0.375, 1.625]}, "control.y_d.points[1]"),
    ("mu2", {"type": "diracs", "points": [-0.5, 0.625]}, "control.mu2.points[0]"),
    ("tr", {"eta1": 2.0}, "control.tr.eta1"),
    ("tr", {"max_iter": -3}, "control.tr"),
])
def test_control_config_errors_found_before_any_run(section, value, field):
    raw = copy.deepcopy(CONTROL)
    raw["control"][section] = value
    with pytest.raises(ConfigError) as exc:
        parse_config(raw)
    assert str(exc.value).startswith(field), str(exc.value)


def test_a_missing_qp_solver_is_reported_at_validation(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "clarabel", None)  # import clarabel -> ImportError
    with pytest.raises(ConfigError, match=r"^control: .*clarabel.*pip install"):
        parse_config(copy.deepcopy(CONTROL))
    parse_config(config())  # the other problems do not need it


# ----------------------------------------------------------------------------- workers die with the study


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (an exited child nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _descendants(pid: int) -> set:
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def _wait_until(cond, timeout, what, poll=0.2):
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def _repo_env():
    return dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc (Linux)")


@needs_proc
def test_pool_workers_die_with_a_killed_parent(tmp_path):
    """SIGKILL of the process that owns the study's process pool ends its busy workers."""
    import signal
    import subprocess
    import sys

    script = tmp_path / "parent.py"
    script.write_text(
        "import os, time\n"
        "from femot.studies.execution import process_pool\n"
        "if __name__ == '__main__':\n"
        "    ex = process_pool(2)\n"
        "    pids = {f.result() for f in [ex.submit(os.getpid) for _ in range(8)]}\n"
        "    busy = [ex.submit(time.sleep, 300) for _ in range(2)]\n"
        "    print(' '.join(map(str, sorted(ex._processes))), flush=True)\n"
        "    time.sleep(300)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=_repo_env())
    try:
        workers = [int(p) for p in _read_line(parent, 180).split()]
        assert len(workers) == 2 and all(_alive(p) for p in workers)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        _wait_until(lambda: not any(_alive(p) for p in workers), 30, "the workers to end")
    finally:
        parent.kill()
        for p in _descendants(parent.pid) if _alive(parent.pid) else []:
            os.kill(p, signal.SIGKILL)


# Six chains of three levels: after its first run the study has work for much longer than
# the 10 s the test waits for the manifest.
KILL_STUDY = {
    "study": {"name": "kill", "problem": "transport", "seeds": [0, 1, 2, 3, 4, 5]},
    "schedule": {"n_levels": 3, "gamma0": 1e-2, "factor": 0.1},
    "mesh": {"nodes_per_delta": 30.0},
    "transport": {"mu1": {"type": "random_diracs", "n": 5, "interval": [0.2, 0.8]},
                    "mu2": {"type": "diracs", "points": [0.35, 0.65]}},
}


@pytest.mark.slow
@needs_proc
@pytest.mark.parametrize("backend", [["--workers", "2"], pytest.param(["--dask-local", "2"], marks=pytest.mark.skipif(
    importlib.util.find_spec("distributed") is None, reason="dask.distributed not installed"))])
def test_sigkill_of_a_parallel_study_leaves_no_worker_and_a_truthful_manifest(tmp_path, backend):
    import signal
    import subprocess
    import sys

    cfg = tmp_path / "kill.toml"
    cfg.write_text(toml_text(KILL_STUDY))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "femot.cli", "study", str(cfg), "--out", str(out), "--quiet", "--no-plots"]
    study = subprocess.Popen(cmd + backend, env=_repo_env(), stderr=subprocess.PIPE, text=True)

    def manifest_done():
        try:
            return json.loads((out / "manifest.json").read_text())["counts"]["done"] >= 1
        except (OSError, ValueError, KeyError):
            return False

    def stored():
        if study.poll() is not None:
            pytest.fail(f"the study ended before it was killed: {study.stderr.read()}")
        return any(p.name.count(".") == 1 for p in (out / "runs").glob("*.json"))

    try:
        _wait_until(stored, 300, "a finished run")
        # The manifest follows the stored runs while the study runs (it is updated when the
        # main process sees the file, polled every 0.25 s) ...
        t0 = time.monotonic()
        while not manifest_done() and time.monotonic() - t0 < 10:
            time.sleep(0.1)
        workers = _descendants(study.pid)
        assert study.poll() is None and len(workers) >= 2
        os.kill(study.pid, signal.SIGKILL)
        study.wait(timeout=30)
        # ... its workers end with it instead of computing on ...
        _wait_until(lambda: not any(_alive(p) for p in workers), 60, f"the workers {sorted(workers)} to end")
    finally:
        if study.poll() is None:
            study.kill()
    # ... the manifest it leaves counts the stored runs, and a rerun completes and regenerates it.
    man = json.loads((out / "manifest.json").read_text())
    stored = len(list((out / "runs").glob("*.json"))) - len(list((out / "runs").glob("*.error.json")))
    assert man["status"] == "running" and 1 <= man["counts"]["done"] <= stored
    r = subprocess.run(cmd + ["--workers", "2"], env=_repo_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    man = json.loads((out / "manifest.json").read_text())
    assert man["status"] == "complete" and man["counts"]["done"] == man["counts"]["total"] == 18


def test_renamed_study_kind_names_its_new_name():
    """A configuration written for the old kind name gets the new name, not "unknown problem"."""
    with pytest.raises(ConfigError, match=r"study.problem: the study kind 'lower-level' is now called 'transport'"):
        parse_config({"study": {"name": "t", "problem": "lower-level"}})
