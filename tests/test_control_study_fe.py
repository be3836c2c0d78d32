"""Control studies and the ocp-2d demo on users' meshes: transport_mesh / enlarge in TOML, --check, --mesh."""
import importlib.util
import json
import re
import shutil
from pathlib import Path

import meshio
import numpy as np
import pytest
import skfem

from femot.cli import main
from femot.studies import ConfigError, parse_config, run_study

needs_qp = pytest.mark.skipif(importlib.util.find_spec("clarabel") is None,
                              reason="optional QP solver clarabel (femot[qp]) not installed")
REPO = Path(__file__).resolve().parents[1]


def write_square(path, k):
    """[0, 1]^2 with 2^k x 2^k squares (spacing 2^-k) as a .vtu file (a user's mesh)."""
    m = skfem.MeshTri().refined(k)
    meshio.write(path, meshio.Mesh(np.c_[m.p.T, np.zeros(m.p.shape[1])], [("triangle", m.t.T)]))
    return path


def study_2d(folder, **control):
    """A tiny 2D control study: state on 8 x 8 squares, transport on a 32 x 32 mesh file."""
    write_square(folder / "state.vtu", 3)
    write_square(folder / "transport.vtu", 5)
    raw = {"study": {"name": "control-2d-tiny", "problem": "control"},
           "schedule": {"gammas": [1e-2, 2e-3], "deltas": [0.25, 0.2]},
           "mesh": {"name": "state.vtu", "resolution_ratio": 0.5},  # the transport mesh resolves delta
           "control": {"nu": 0.05, "transport": "value", "transport_mesh": "transport.vtu",
                       "y_d": {"type": "state", "points": [[0.45, 0.5]]},
                       "mu2": {"type": "diracs", "points": [[0.55, 0.5], [0.5, 0.55]]}}}
    raw["control"].update(control)
    return raw


@needs_qp
def test_transport_mesh_in_toml_enters_ids_by_name_not_path(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    sa = parse_config(study_2d(a), base_dir=a)
    sb = parse_config(study_2d(b), base_dir=b)
    t = sa.params["transport_mesh"]
    assert t["name"] == "transport.vtu" and t["refine"] == 0 and Path(t["path"]) == a / "transport.vtu"
    assert [lv.id for lv in sa.runs] == [lv.id for lv in sb.runs]  # moving the study keeps its ids
    sc = parse_config(study_2d(a, transport_refine=1), base_dir=a)
    assert sc.params["transport_mesh"]["refine"] == 1
    assert not {lv.id for lv in sc.runs} & {lv.id for lv in sa.runs}
    # without the keys the parameters (and the ids of existing studies) are as before
    raw = study_2d(a)
    del raw["control"]["transport_mesh"]
    raw["mesh"]["resolution_ratio"] = 0.1
    assert "transport_mesh" not in parse_config(raw, base_dir=a).params


@needs_qp
@pytest.mark.parametrize("changes, field, needle", [
    ({"transport_mesh": "missing.vtu"}, "control.transport_mesh", "not found"),
    ({"transport_refine": 1, "transport_mesh": None}, "control.transport_refine", "goes with"),
    ({"transport_mesh": "state.vtu"}, "control.transport_mesh", "h = 0.125"),
    ({"enlarge": "yes"}, "control.enlarge", "true or false"),
])
def test_transport_mesh_and_enlarge_errors_name_the_field(tmp_path, changes, field, needle):
    raw = study_2d(tmp_path)
    for k, v in changes.items():
        if v is None:
            raw["control"].pop(k)
        else:
            raw["control"][k] = v
    with pytest.raises(ConfigError) as exc:
        parse_config(raw, base_dir=tmp_path)
    assert str(exc.value).startswith(field) and needle in str(exc.value), str(exc.value)


@needs_qp
def test_enlarge_in_toml_admits_a_prior_on_the_boundary(tmp_path):
    raw = study_2d(tmp_path)
    raw["control"]["mu2"] = {"type": "diracs", "points": [[0.0, 0.5], [0.5, 0.55]]}
    with pytest.raises(ConfigError, match=r"^control.mu2: .*enlarge"):
        parse_config(raw, base_dir=tmp_path)
    raw["control"]["enlarge"] = True
    s = parse_config(raw, base_dir=tmp_path)
    assert s.params["enlarge"] is True and s.params["rho"] == 0.0


@needs_qp
def test_check_predicts_the_size_of_a_study_on_a_user_mesh(tmp_path, capsys):
    raw = study_2d(tmp_path)
    from tests.test_studies import toml_text

    cfg = tmp_path / "study.toml"
    cfg.write_text(toml_text(raw))
    out = tmp_path / "out"
    assert main(["study", str(cfg), "--out", str(out), "--check"]) == 0
    text = capsys.readouterr().out
    lines = [ln for ln in text.splitlines() if ln.strip().startswith("nodes ")]
    assert len(lines) == 2, text
    for ln in lines:
        for part in ("nodes 81", "transport nodes 1089", "pairs 1.19e+06", "dense cost 9 MiB", "memory ~",
                     "time ~"):
            assert part in ln, (part, ln)
    assert "estimated time of the runs to do" in text
    predicted = [int(float(re.search(r"plan ~([0-9.e+]+) nonzeros", ln).group(1))) for ln in lines]
    # the run: the same nodes and pairs, and plans of the predicted order of magnitude
    o = run_study(parse_config(raw, base_dir=tmp_path), out, quiet=True, plots=False)
    assert o.complete and not o.failed
    for r, nnz in zip(o.rows, predicted):
        info = json.loads((out / "runs" / f"{r['id']}.json").read_text())["info"]
        assert info["n_nodes"] == 81 and info["transport_nodes"] == 1089
        assert info["transport_pairs"] == 1089**2 and info["matrix_free"] is False
        assert nnz / 4 <= info["plan_nnz"] <= 4 * nnz, (nnz, info["plan_nnz"])


def run_demo(tmp_path, *args):
    out = tmp_path / "out.json"
    code = main(["demo", "ocp-2d", "--quiet", "--json", str(out), *args])
    return code, (json.loads(out.read_text()) if out.exists() else None)


def test_ocp_2d_runs_on_a_gmsh_file_of_an_l_shaped_domain(tmp_path):
    msh = tmp_path / "lshape.msh"
    shutil.copy(REPO / "meshes" / "lshape_user.msh", msh)
    code, data = run_demo(tmp_path, "--mesh", str(msh))
    assert code == 0 and data["success"], data
    assert data["nodes"] == 833 and data["transport_nodes"] == 833
    assert data["delta_resolved"] and data["delta_over_h"] >= 4 - 1e-9
    assert data["fw_gap"] <= 1e-8 * abs(data["objective"])
    assert data["objective"] < data["uniform_objective"]
    # the controls: the vertices at distance >= rho from the L's boundary (also from the reentrant corner)
    from femot.fem import load_mesh
    from femot.fem.meshes import admissible_vertices, boundary_distance

    m = load_mesh(msh)
    adm = admissible_vertices(m, data["rho"])
    assert data["control_nodes"] == adm.size
    assert np.all(boundary_distance(m, m.p[:, adm].T, signed=False) >= data["rho"] * (1 - 1e-12))


def test_ocp_2d_mesh_file_errors(tmp_path, capsys):
    assert main(["demo", "ocp-2d", "--mesh", str(tmp_path / "nope.msh")]) == 2
    assert "--mesh" in capsys.readouterr().err
    line = skfem.MeshLine(np.linspace(0, 1, 5))
    path = tmp_path / "line.vtu"
    meshio.write(path, meshio.Mesh(np.c_[line.p.T, np.zeros((5, 2))], [("line", line.t.T)]))
    assert main(["demo", "ocp-2d", "--mesh", str(path)]) == 2
    assert "2D" in capsys.readouterr().err


def test_gmsh_example_is_what_generate_writes(tmp_path):
    spec = importlib.util.spec_from_file_location("generate", REPO / "meshes" / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    path = gen.write_gmsh_lshape(tmp_path)
    from femot.fem import load_mesh

    a, b = load_mesh(path), load_mesh(REPO / "meshes" / gen.GMSH_LSHAPE)
    assert np.array_equal(a.t, b.t) and np.allclose(a.p, b.p, atol=1e-12)




def test_refinement_study_gamma_scaling_keeps_plan_rows_fixed(tmp_path):
    """--gamma-scaling plan: gamma_k = gamma (h_k / h_0)^4 in 2D, so the plan's nonzeros per row stay put."""
    code, data = run_demo(tmp_path, "--formulation", "value", "--refinements", "2", "--transport", "full",
                          "--gamma-scaling", "plan")
    assert code == 0 and data["gamma_scaling"] == "plan"
    lv = data["levels"]
    assert all(level["success"] for level in lv)
    assert lv[1]["gamma"] == pytest.approx(lv[0]["gamma"] / 16, rel=1e-12)
    per_row = [level["plan_nnz"] / level["transport_nodes"] for level in lv]
    # at fixed gamma the rows would hold 4x as many nodes on the finer mesh
    assert per_row[1] < 1.3 * per_row[0]


def test_gamma_scaling_auto_switches_to_plan_only_when_a_plan_would_be_too_large():
    """--gamma-scaling auto: 'fixed' while every level's plan estimate stays below AUTO_PLAN_NNZ, 'plan'
    (said, with the level and its estimate) as soon as one does not; the estimate is ~n^2 at one gamma."""
    from femot.demos.ocp_2d import AUTO_PLAN_NNZ, _auto_scaling
    from femot.problems.control import estimate_size

    meshes = [skfem.MeshTri.init_sqsymmetric().refined(3 + k) for k in range(4)]
    nnz = [estimate_size(m, 1e-3, 0.125, rho=0.15)["plan_nnz"] for m in meshes]
    assert nnz[2] < AUTO_PLAN_NNZ < nnz[3]
    said = []
    assert _auto_scaling(1e-3, 0.125, 0.15, meshes[:3], None, said.append) == "fixed" and not said
    assert _auto_scaling(1e-3, 0.125, 0.15, meshes, None, said.append) == "plan"
    assert "level 3" in said[0] and "--gamma-scaling fixed" in said[0]
    # a smaller gamma keeps the plans sparse on all four levels
    assert _auto_scaling(1e-5, 0.125, 0.15, meshes, None, said.append) == "fixed"


def test_refinement_study_refuses_a_level_beyond_the_machine_memory(tmp_path, monkeypatch, capsys):
    import os

    real = os.sysconf
    monkeypatch.setattr(os, "sysconf", lambda name: 1 if name == "SC_PHYS_PAGES" else real(name))
    code, data = run_demo(tmp_path, "--refinements", "2", "--transport", "full")
    err = capsys.readouterr().err
    assert code != 0 and data is None
    for part in ("level 0", "289 nodes", "GiB", "--gamma-scaling plan", "--transport coarse"):
        assert part in err
