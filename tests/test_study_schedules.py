"""Study schedules that resolve delta: coupled mesh refinement, the shared
resolution check, errors kept apart and fitted rates with confidence intervals."""
from __future__ import annotations

import copy
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from femot.fem.smoothing import RESOLUTION_RATIO, check_resolution, mesh_size
from femot.studies import ConfigError, parse_config, run_study
from femot.studies.metrics import fit_rate_ci

ROOT = Path(__file__).resolve().parents[1]

LOWER = {
    "study": {"name": "ll", "problem": "transport"},
    "schedule": {"n_levels": 4, "gamma0": 1e-2, "factor": 0.1, "s": 1.0, "C": 1.0},
    "mesh": {"name": "unit_interval", "refine_with_delta": 4},
    "transport": {"mu1": {"type": "diracs", "points": [0.4, 0.6]}, "mu2": {"type": "diracs", "points": [0.45, 0.7]}},
}


def _raw(**mesh):
    raw = copy.deepcopy(LOWER)
    raw["mesh"] = mesh
    return raw


# ----------------------------------------------------------------------------- the shared check


def test_mesh_size_is_the_longest_edge():
    import skfem

    from femot.fem import load_mesh

    assert mesh_size(load_mesh("unit_interval_64")) == pytest.approx(1 / 64)
    sq = load_mesh("unit_square")  # 32 x 32 squares cut along diagonals
    assert mesh_size(sq) == pytest.approx(math.sqrt(2) / 32)
    irregular = skfem.MeshLine(np.array([0.0, 0.1, 0.5, 0.6, 1.0]))
    assert mesh_size(irregular) == pytest.approx(0.4)
    assert mesh_size(np.array([0.0, 0.3, 0.35, 1.0])) == pytest.approx(0.65)


def test_check_resolution_boundary_and_message():
    assert RESOLUTION_RATIO == 4.0
    assert check_resolution(0.025, 0.1) == pytest.approx(4.0)  # h = delta / 4 exactly: resolved
    with pytest.raises(ValueError, match=r"^level 3: delta = 0\.1 is not resolved.*h = 0\.026 > delta / 4"):
        check_resolution(0.026, 0.1, what="level 3")
    assert check_resolution(0.04, 0.1, ratio=2.0) == pytest.approx(2.5)
    with pytest.raises(ValueError, match="ratio"):
        check_resolution(0.01, 0.1, ratio=0.0)


# ----------------------------------------------------------------------------- coupled refinement


@pytest.mark.parametrize("R", [4.0, 6.0])
def test_refine_with_delta_picks_the_coarsest_resolving_mesh(R):
    st = parse_config(_raw(name="unit_interval", refine_with_delta=R))
    assert st.resolution_ratio == R and st.mesh_mode == "coupled"
    hs = []
    for lv in st.chains[0].levels:
        h = mesh_size(lv.mesh.load())  # measured on the mesh the run will use
        assert h == pytest.approx(lv.h)
        assert h <= lv.delta / R * (1 + 1e-12)
        assert 2 * h > lv.delta / R  # the next coarser uniform mesh would not resolve delta
        hs.append(h)
    assert all(b <= a for a, b in zip(hs, hs[1:])) and hs[-1] < hs[0]  # refined along the chain
    assert st.finest is None  # transport: no discrete reference across meshes


def test_refine_with_delta_on_a_stored_mesh_and_the_square():
    st = parse_config(_raw(name="unit_interval_16", refine_with_delta=4))
    for lv in st.chains[0].levels:
        assert lv.mesh.name == "unit_interval_16"
        assert lv.h == pytest.approx(mesh_size(lv.mesh.load())) and lv.h <= lv.delta / 4 < 2 * lv.h or \
            lv.mesh.refine == 0
    # 2D family: h = sqrt(2) / 2^k on the unit square
    from femot.studies.config import _FAMILIES, MeshSpec

    for k in (1, 3, 5):
        m = MeshSpec(name="unit_square", family="unit_square", level=k).load()
        assert mesh_size(m) == pytest.approx(_FAMILIES["unit_square"][1](k))
        assert m.p.shape[1] == (2 ** k + 1) ** 2


def test_unresolved_level_is_rejected_naming_the_level_and_the_field():
    # unit_interval_64 (h = 1/64) with delta = gamma^(1/3): level 0 (delta 0.215) and 1 (0.1) are
    # resolved, level 2 (delta = 0.0464 < 4/64) is not
    with pytest.raises(ConfigError) as exc:
        parse_config(_raw(name="unit_interval_64"))
    msg = str(exc.value)
    assert msg.startswith("mesh.name: mesh unit_interval_64 at level 2 ")
    assert "h = 0.01562 > delta / 4" in msg and "schedule.gamma0/factor" in msg
    # explicit deltas: the schedule field is named
    raw = _raw(name="unit_interval_64")
    raw["schedule"] = {"gammas": [1e-2, 1e-3, 1e-5], "deltas": [0.3, 0.2, 0.05]}
    with pytest.raises(ConfigError, match=r"^mesh\.name: mesh unit_interval_64 at level 2 .*schedule\.deltas"):
        parse_config(raw)
    # per-level meshes: the entry is named
    raw["mesh"] = {"levels": ["unit_interval_64", "unit_interval_64", "unit_interval_16"]}
    with pytest.raises(ConfigError, match=r"^mesh\.levels\[2\]: mesh unit_interval_16 at level 2 "):
        parse_config(raw)
    # generated intervals with fewer than 4 cells per delta
    with pytest.raises(ConfigError, match=r"^mesh\.nodes_per_delta: .* at level 0 "):
        parse_config(_raw(nodes_per_delta=3.0))
    # refinement limit reached
    with pytest.raises(ConfigError, match=r"^mesh\.refine_with_delta: level 2 .*mesh\.max_refine"):
        parse_config(_raw(name="unit_interval", refine_with_delta=4, max_refine=6))


def test_resolution_ratio_is_a_field_and_stated_in_the_report(tmp_path):
    # a deliberately lower ratio is accepted where the default refuses, and said in the report
    raw = _raw(name="unit_interval_64", resolution_ratio=1.0)
    raw["schedule"] = {"gammas": [1e-2, 1e-3], "deltas": [0.2, 0.1]}
    st = parse_config(raw)
    assert st.resolution_ratio == 1.0
    o = run_study(st, tmp_path, quiet=True, plots=False)
    assert o.complete
    rep = (tmp_path / "report.md").read_text()
    assert "mesh.resolution_ratio = 1 < 4" in rep
    with pytest.raises(ConfigError, match=r"^mesh\.resolution_ratio"):
        parse_config(_raw(name="unit_interval", refine_with_delta=4, resolution_ratio=2))
    with pytest.raises(ConfigError, match=r"^mesh\.resolution_ratio: must be positive"):
        parse_config(_raw(name="unit_interval_64", resolution_ratio=0))


def test_cli_check_rejects_an_unresolved_level(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[study]\nname = "bad"\nproblem = "transport"\n'
                   '[schedule]\ngammas = [1e-2, 1e-3, 1e-5]\ndeltas = [0.3, 0.2, 0.05]\n'
                   '[mesh]\nname = "unit_interval_64"\n'
                   '[transport]\nmu1 = { type = "diracs", points = [0.4, 0.6] }\n'
                   'mu2 = { type = "diracs", points = [0.45, 0.7] }\n')
    out = tmp_path / "out"
    for extra in (["--check"], []):  # validation, and before any run
        p = subprocess.run([sys.executable, "-m", "femot.cli", "study", str(cfg), "--out", str(out), *extra],
                           capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert p.returncode == 2, p.stderr
        assert "mesh.name: mesh unit_interval_64 at level 2" in p.stderr
        assert not out.exists()


@pytest.mark.parametrize("name", ["control_1d", "control_2d", "transport_1d"])
def test_shipped_studies_resolve_every_level(name):
    from femot.studies import load_config

    st = load_config(ROOT / "demos" / "studies" / f"{name}.toml")
    assert st.resolution_ratio >= 4
    for lv in st.runs:
        assert lv.h <= lv.delta / 4 * (1 + 1e-12), (lv.index, lv.h, lv.delta)
    if name == "control_1d":
        assert len(st.gammas) >= 6 and st.params["transport"] == "value"
        assert st.finest is not None and st.finest.label() == st.chains[0].levels[-1].mesh.label()


# ----------------------------------------------------------------------------- rates with intervals


def test_fit_rate_ci_matches_the_least_squares_formula():
    rng = np.random.default_rng(3)
    x = 0.5 ** np.arange(6)
    e = 2.0 * x ** 1.5 * np.exp(0.05 * rng.standard_normal(6))
    ci = fit_rate_ci(x, e)
    X, Y = np.log(x), np.log(e)
    slope, icpt = np.polyfit(X, Y, 1)
    resid = Y - (slope * X + icpt)
    se = math.sqrt(resid @ resid / (len(X) - 2) / np.sum((X - X.mean()) ** 2))
    t = stats.t.ppf(0.975, len(X) - 2)
    assert ci["n"] == 6
    assert ci["rate"] == pytest.approx(slope, rel=1e-12)
    assert ci["lo"] == pytest.approx(slope - t * se, rel=1e-10) and ci["hi"] == pytest.approx(slope + t * se, rel=1e-10)
    assert ci["lo"] < 1.5 < ci["hi"]
    # exact power law: a degenerate interval; two levels: no interval; zeros are not used
    exact = fit_rate_ci(x, 3 * x ** 2)
    assert exact["rate"] == pytest.approx(2.0) and exact["hi"] - exact["lo"] < 1e-10
    two = fit_rate_ci(x[:2], e[:2])
    assert np.isfinite(two["rate"]) and math.isnan(two["lo"])
    assert fit_rate_ci(x, np.r_[e[:5], 0.0])["n"] == 5


# ----------------------------------------------------------------------------- errors kept apart


def test_control_study_keeps_regularization_and_discretization_errors_apart(tmp_path):
    """Value formulation, mesh refined with delta; total <= regularization + discretization
    (triangle inequality for W1), both references exact, and the report says which dominates."""
    raw = {"study": {"name": "c1", "problem": "control"},
           "schedule": {"n_levels": 3, "gamma0": 1e-2, "factor": 0.1, "s": 1.0, "C": 0.5},
           "mesh": {"name": "unit_interval", "refine_with_delta": 4},
           "control": {"nu": 0.05, "transport": "value",
                       "y_d": {"type": "state", "points": [0.3, 0.7], "weights": [0.5, 0.5]},
                       "mu2": {"type": "diracs", "points": [0.3, 0.7], "weights": [0.5, 0.5]}},
           "report": {"metrics": ["control_w1", "control_w1_total", "discretization_w1", "objective_gap"]}}
    st = parse_config(raw)
    assert [lv.mesh.label() for lv in st.chains[0].levels] == ["unit_interval_64", "unit_interval_128",
                                                               "unit_interval_256"]
    o = run_study(st, tmp_path, quiet=True, plots=True)
    assert o.complete and not o.failed
    for r in o.rows:
        assert r["success"] and r["certificate"] == "fw_gap" and r["status"] == "converged"
        assert r["control_w1_total"] <= r["control_w1"] + r["discretization_w1"] + 1e-9
        assert r["control_w1_total"] >= abs(r["control_w1"] - r["discretization_w1"]) - 1e-9
        assert r["h"] <= r["delta"] / 4
    last = o.rows[-1]
    assert last["discretization_w1"] == pytest.approx(0.0, abs=1e-12)  # the finest mesh is its own reference
    assert last["control_w1_total"] == pytest.approx(last["control_w1"], rel=1e-9)
    assert o.rows[0]["discretization_w1"] > 0  # 0.3 is no vertex: the references differ
    rep = (tmp_path / "report.md").read_text()
    assert "## Errors kept apart" in rep and "dominates" in rep and "unit_interval_256" in rep
    assert "## Upper-level convergence" in rep and "3 of 3 levels converged" in rep
    assert (tmp_path / "figures" / "errors_vs_delta.png").is_file()
    rates = (tmp_path / "rates.csv").read_text().splitlines()
    assert rates[0].startswith("chain,metric,levels,levels_used,rate_gamma,rate_gamma_lo,rate_gamma_hi")
    # the finest mesh enters the run ids: a longer schedule gives other ids
    raw2 = copy.deepcopy(raw)
    raw2["schedule"]["n_levels"] = 4
    st2 = parse_config(raw2)
    assert st2.chains[0].levels[0].id != st.chains[0].levels[0].id


def test_ocp_1d_demo_refuses_an_unresolved_delta_through_the_shared_check():
    p = subprocess.run([sys.executable, "-m", "femot.cli", "demo", "ocp-1d", "--cells", "16", "--quiet"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode != 0
    assert "is not resolved by the mesh: h = 0.0625 > delta / 4" in p.stderr
