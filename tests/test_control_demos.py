"""The control and tracking demos (quick mode; the full 2D run is marked slow)."""
import json

import numpy as np
import pytest

from femot.cli import main


def run_demo(name, tmp_path, *extra):
    out = tmp_path / f"{name}.json"
    plots = tmp_path / name
    code = main(["demo", name, "--quiet", "--json", str(out), "--plot", str(plots), *extra])
    data = json.loads(out.read_text())
    return code, data, plots


def test_ocp_1d_quick_schedule_study(tmp_path):
    """Value formulation: every level certified (fw_gap <= 1e-8 |f|) within 25 iterations."""
    code, data, plots = run_demo("ocp-1d", tmp_path, "--quick", "--formulation", "value")
    assert code == 0 and data["success"]
    assert data["formulations"] == ["value"] and set(data["runs"]) == {"value"}
    levels = data["levels"]
    assert len(levels) >= 4
    for lv in levels:
        assert {"gamma", "delta", "control_w1_error", "objective_gap", "success", "iterations", "fw_gap",
                "time_s"} <= set(lv)
        assert lv["success"] and lv["formulation"] == "value"
        assert lv["iterations"] <= 25 and 0 <= lv["fw_gap"] <= 1e-8 * abs(lv["fun"])
        # the exact control minimizes the unregularized objective (up to the QP's certificate)
        assert lv["objective_gap_signed"] >= -1e-9
    g = np.array([lv["gamma"] for lv in levels])
    dl = np.array([lv["delta"] for lv in levels])
    # coupling of Part II (3.1) with d = 2, delta well above the mesh size
    assert np.all(np.diff(g / dl**2) < 0) and np.all(dl >= 4 * data["h"])
    errs = np.array([lv["control_w1_error"] for lv in levels])
    assert np.all(np.diff(errs) < 0)
    assert np.all(np.diff([lv["objective_gap"] for lv in levels]) < 0)
    assert errs[-1] < 0.5 * data["uniform_w1_error"]
    assert data["reference"]["success"] and data["reference"]["frank_wolfe_gap"] <= 1e-8
    for f in ("control_state.png", "plan_transport.png", "convergence.png"):
        assert (plots / f).exists()


@pytest.mark.slow
def test_ocp_1d_both_formulations(tmp_path):
    """Both formulations on the default schedule; the plan levels carry relative_stationarity."""
    code, data, _ = run_demo("ocp-1d", tmp_path, "--formulation", "both")
    assert data["formulations"] == ["plan", "value"]
    for form, run in data["runs"].items():
        key = "fw_gap" if form == "value" else "relative_stationarity"
        for lv in run["levels"]:
            assert {"success", "iterations", key, "time_s", "control_w1_error"} <= set(lv)
        assert run["control_error_monotone"]
    assert all(lv["success"] for lv in data["runs"]["value"]["levels"])


@pytest.mark.slow
def test_ocp_2d_refinement_study(tmp_path):
    code, data, plots = run_demo("ocp-2d", tmp_path, "--formulation", "value", "--refinements", "3")
    levels = data["levels"]
    assert [lv["nodes"] for lv in levels] == sorted(lv["nodes"] for lv in levels) and levels[-1]["nodes"] >= 4000
    for lv in levels:
        assert {"nodes", "iterations", "fw_gap", "fun", "time_s", "success"} <= set(lv)
        assert lv["success"] and lv["fw_gap"] <= 1e-8 * abs(lv["fun"])
    its = [lv["iterations"] for lv in levels]
    assert max(its) <= 2 * min(its)
    assert (plots / "controls_by_level.png").exists() and (plots / "iterations_vs_nodes.png").exists()


def test_ocp_2d_quick_refinements(tmp_path):
    code, data, _ = run_demo("ocp-2d", tmp_path, "--quick", "--formulation", "value", "--refinements", "1")
    assert code == 0 and data["success"] and data["formulation"] == "value"
    lv = data["levels"][0]
    assert lv["success"] and lv["nodes"] == 289 and lv["fw_gap"] <= 1e-8 * abs(lv["fun"])


def test_tracking_1d_quick(tmp_path):
    code, data, plots = run_demo("tracking-1d", tmp_path, "--quick")
    assert code == 0 and data["success"]
    assert data["gradient_fd_rel_error"] <= 1e-6
    assert data["control_w1_error"] < 0.25 * data["start_w1_error"]
    assert data["objective"] < data["objective_start"]
    assert 0 < data["D_vertices"] < data["product_vertices"]  # D is a proper subdomain
    assert (plots / "control_plan.png").exists() and (plots / "adjoint_state.png").exists()


def test_tracking_1d_quick_p_prime_below_two(tmp_path):
    code, data, _ = run_demo("tracking-1d", tmp_path, "--quick", "--p-prime", "1.5")
    assert code == 0 and data["p_prime"] == 1.5
    assert data["gradient_fd_rel_error"] <= 1e-6


def test_ocp_2d_quick(tmp_path):
    code, data, plots = run_demo("ocp-2d", tmp_path, "--quick")
    assert code == 0 and data["success"] and data["formulation"] == "value"
    assert data["iterations"] <= 25 and 0 <= data["fw_gap"] <= 1e-8 * abs(data["objective"])
    assert {"nodes", "success", "time_s", "tr_iterations", "newton_iterations"} <= set(data)
    assert abs(data["control_mass"] - 1.0) <= 1e-12
    assert data["plan_marginal_error"] <= 1e-8
    assert data["objective"] < data["uniform_objective"]
    for f in ("control.png", "state.png", "transport.png"):
        assert (plots / f).exists()


@pytest.mark.slow
def test_ocp_2d_full_acceptance(tmp_path):
    code, data, _ = run_demo("ocp-2d", tmp_path)
    assert code == 0 and data["success"]
    assert data["nodes"] >= 1000 and data["time_s"] < 600
    assert data["objective"] < data["uniform_objective"]
