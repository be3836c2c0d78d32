"""``femot identify`` and ``femot demo identification``."""
import json

import numpy as np
import pytest

from femot.cli import main
from femot.problems.instances import identification_instance, save_instance


def test_identify_random_writes_json_and_solution(tmp_path, capsys):
    js, npz = tmp_path / "out.json", tmp_path / "sol.npz"
    rc = main(["identify", "--random", "10", "--seed", "2", "--gamma", "1e-3", "--json", str(js), "--save", str(npz)])
    out = capsys.readouterr().out
    assert rc == 0
    for label in ("max|mu1_d - mu1|", "max|pi_d - pi|", "J ", "iterations", "stationarity", "success", "theta"):
        assert label in out
    s = json.loads(js.read_text())
    for k in ("J", "nit", "stationarity", "success", "mu1_err_max", "pi_err_max", "mu1_true_err_max"):
        assert k in s
    assert s["success"] is True and s["stationarity"] <= 1e-5 and s["gamma"] == 1e-3 and s["eps"] == 1e-3
    z = np.load(npz)
    mu1, pi, alpha, beta = z["mu1"], z["pi"], z["alpha"], z["beta"]
    assert mu1.min() >= 0 and mu1.sum() == pytest.approx(1.0)
    # the saved plan is the lower-level solution at mu1 (Part III (3.1))
    assert np.allclose(pi.sum(1) + 1e-3 * alpha, mu1, atol=1e-8)
    d = identification_instance(10, 2)
    assert np.allclose(pi.sum(0) + 1e-3 * beta, d["mu2_d"], atol=1e-8)
    assert np.allclose(pi, np.maximum(alpha[:, None] + beta[None, :] - d["c_d"], 0) / 1e-3)
    # the reported J is the objective at the saved solution
    J = 0.5 * np.sum((pi - d["pi_true"].toarray()) ** 2) + 0.5 * np.sum((mu1 - d["mu1_true"]) ** 2)
    assert s["J"] == pytest.approx(J, rel=1e-10)


def test_identify_file_with_masks_start_and_plot(tmp_path, capsys):
    d = identification_instance(10, 4, experiment=2)
    d["mu1_0"] = np.full(10, 0.1)[None, :]  # row vector
    for k in ("mu1_true", "pi_true"):
        d.pop(k)
    path = tmp_path / "inst.npz"
    save_instance(path, d)
    rc = main(["identify", str(path), "--gamma", "1e-2", "--eps", "1e-3", "--lam", "0.5", "--max-iter", "40",
               "--quiet", "--plot", str(tmp_path / "figs"), "--json", str(tmp_path / "o.json")])
    assert rc in (0, 1)
    s = json.loads((tmp_path / "o.json").read_text())
    assert s["eps"] == 1e-3 and s["lam"] == 0.5 and s["model"] == "auto"
    # the default runs several phases from the file's mu1_0 and the observed start, each within --max-iter
    assert s["phases"][0]["phase"] == "x0: bfgs" and s["phases"][0]["nit"] <= 40
    assert s["nit"] == sum(p["nit"] for p in s["phases"]) and s["phase"] in [p["phase"] for p in s["phases"]]
    assert "mu1_true_err_max" not in s
    assert all((tmp_path / "figs" / f).exists() for f in ("marginal.png", "plan.png"))
    assert rc == (0 if s["success"] else 1)


def test_identify_mat_file(tmp_path, capsys):
    d = identification_instance(8, 1)
    path = tmp_path / "inst.mat"
    save_instance(path, d)
    assert main(["identify", str(path), "--gamma", "1e-2", "--quiet"]) == 0


def _write(tmp_path, name, **over):
    d = identification_instance(6, 0)
    data = {"c_d": d["c_d"], "mu2_d": d["mu2_d"], "mu1_d": d["mu1_d"], "pi_d": d["pi_d"].toarray()}
    data.update(over)
    data = {k: v for k, v in data.items() if v is not None}
    p = tmp_path / name
    np.savez(p, **data)
    return p


@pytest.mark.parametrize("over,match", [
    (dict(pi_d=None), "pi_d"),
    (dict(D=np.ones((6, 5))), "D has shape"),
    (dict(D1=np.zeros(6)), "D1 is empty"),
    (dict(mu2_d=np.array([1.0, -0.5, 0.5, 0, 0, 0])), "mu2_d must be nonnegative"),
    (dict(mu1_0=np.full(6, 0.5)), "mu1_0"),
    (dict(c_d=np.ones((6, 7))), "mu2_d has 6 entries but c_d has shape (6, 7)"),
])
def test_identify_bad_input_exit_2_with_message(tmp_path, capsys, over, match):
    p = _write(tmp_path, "bad.npz", **over)
    rc = main(["identify", str(p), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and match in err


def test_identify_usage_errors(tmp_path, capsys):
    assert main(["identify"]) == 2
    assert "INSTANCE" in capsys.readouterr().err
    p = _write(tmp_path, "ok.npz")
    assert main(["identify", str(p), "--random", "5"]) == 2
    assert main(["identify", str(tmp_path / "none.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["identify", "--random", "6", "--gamma", "-1"]) == 2
    assert "gamma" in capsys.readouterr().err


def test_identify_iteration_limit_gives_exit_1(capsys):
    assert main(["identify", "--random", "12", "--seed", "1", "--gamma", "1e-4", "--max-iter", "1", "--quiet"]) == 1
    assert "success                  = False" in capsys.readouterr().out


def test_demo_identification_quick(tmp_path, capsys):
    from femot.demos import available_demos

    assert "identification" in available_demos()
    js = tmp_path / "demo.json"
    rc = main(["demo", "identification", "--quick", "--quiet", "--json", str(js), "--plot", str(tmp_path / "f")])
    s = json.loads(js.read_text())
    assert rc == (0 if s["success"] else 1)
    for key in ("experiment1", "experiment2", "experiment2_path"):
        rows = s[key]
        assert len(rows) == len(s["gammas"]) and all(np.isfinite(r["J"]) for r in rows)
    # experiment 1 improves as gamma = eps decreases
    e1 = s["experiment1"]
    assert e1[-1]["mu1_err_max"] < e1[0]["mu1_err_max"] and e1[-1]["J"] < e1[0]["J"]
    assert s["experiment1_beats_truth"]
    figs = s["figures"]
    assert len(figs) == 7 and all((tmp_path / "f" / f.split("/")[-1]).exists() for f in figs)


def test_identify_start_choices(tmp_path, capsys):
    """--start observed begins at mu1_d, so with D1 = Omega_1 the trust region (which only
    accepts decreasing steps) ends no higher than J(mu1*); a file's mu1_0 is used by
    'auto' and ignored by 'uniform'."""
    from femot.problems.instances import problem_from_instance

    js = tmp_path / "o.json"
    rc = main(["identify", "--random", "30", "--seed", "3", "--gamma", "1e-2", "--eps", "1e-8", "--start",
               "observed", "--max-iter", "300", "--quiet", "--json", str(js)])
    s = json.loads(js.read_text())
    d = identification_instance(30, 3)
    J_truth = problem_from_instance(d, gamma=1e-2, eps=1e-8).value(d["mu1_true"])
    assert rc == 0 and s["start"] == "observed" and s["J"] <= J_truth
    d = identification_instance(10, 4, experiment=2)
    d["mu1_0"] = np.full(10, 0.1)
    path = tmp_path / "inst.npz"
    save_instance(path, d)
    for start, expect in (("auto", "mu1_0"), ("uniform", "uniform")):
        main(["identify", str(path), "--gamma", "1e-2", "--start", start, "--max-iter", "3", "--quiet",
              "--json", str(js)])
        assert json.loads(js.read_text())["start"] == expect


def test_identify_model_flag_for_experts(tmp_path, capsys):
    """--model bfgs / newton run one phase (the models before the default); the default needs no flag
    and prints every phase's J and what its stationarity certifies."""
    js = tmp_path / "o.json"
    for model, cont in (("bfgs", "none"), ("newton", "auto")):
        rc = main(["identify", "--random", "10", "--seed", "2", "--gamma", "1e-2", "--model", model,
                   "--continuation", cont, "--quiet", "--json", str(js)])
        s = json.loads(js.read_text())
        assert rc == (0 if s["success"] else 1) and s["model"] == model and len(s["phases"]) == 1
    capsys.readouterr()
    rc = main(["identify", "--random", "10", "--seed", "2", "--gamma", "1e-2", "--quiet", "--json", str(js)])
    s = json.loads(js.read_text())
    out = capsys.readouterr().out
    assert s["model"] == "auto" and len(s["phases"]) >= 3 and rc == (0 if s["success"] else 1)
    assert "certified: tol 1.0e-05" in out and "<- returned" in out
    assert all(f"J = {p['J']:.6e}" in out for p in s["phases"])


def test_identify_output_explains_itself(capsys):
    assert main(["identify", "--random", "10", "--seed", "2", "--gamma", "1e-3", "--max-iter", "20"]) == 0
    out = capsys.readouterr().out
    assert out.count("columns: f objective; theta stationarity measure") == 1  # once, above the first table
    assert "psi the measure psi_R" in out and "face = dogleg on the current face" in out
    assert "phase uniform: bfgs:" in out  # the default runs several phases: each table is named
    for line in out.splitlines():  # model and step columns never run together
        assert "newtonbundle" not in line and "bfgsdogleg" not in line
    assert "lower eps" not in out and "<- large" not in out  # the default eps = gamma is described, not blamed
    assert "eps bias eps*max|alpha|" in out
    # experiment 1 observes the truth: one statement instead of the same numbers twice
    assert "the observations are the truth here" in out and "(against the truth)" not in out
