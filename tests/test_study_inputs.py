"""Study inputs from files: the prior mu2 (points and masses) and a sampled desired state y_d."""
import sys
from pathlib import Path

import numpy as np
import pytest

from femot.studies import ConfigError
from femot.studies.config import parse_config
from femot.studies.control_study import _sample_interpolant

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _control_config():
    return tomllib.loads((ROOT / "demos" / "studies" / "control_1d.toml").read_text())


def test_prior_from_a_file_is_the_same_study_as_inline(tmp_path):
    inline = parse_config(_control_config(), base_dir=tmp_path)
    (tmp_path / "prior.csv").write_text("# x, mass\n0.3, 0.5\n0.7 0.5\n")
    raw = _control_config()
    raw["control"]["mu2"] = {"type": "diracs", "file": "prior.csv"}
    from_file = parse_config(raw, base_dir=tmp_path)
    assert [lv.id for lv in from_file.runs] == [lv.id for lv in inline.runs]  # same content, same run ids


@pytest.mark.parametrize("text, needle", [
    ("0.3, 0.5, 1\n", "line 1: needs 2 finite numbers"),
    ("0.3, abc\n", "line 1: not numbers"),
    ("# nothing\n", "holds no rows"),
])
def test_bad_prior_files_are_refused_with_the_line(tmp_path, text, needle):
    (tmp_path / "prior.csv").write_text(text)
    raw = _control_config()
    raw["control"]["mu2"] = {"type": "diracs", "file": "prior.csv"}
    with pytest.raises(ConfigError, match=needle):
        parse_config(raw, base_dir=tmp_path)
    raw["control"]["mu2"] = {"type": "diracs", "file": "missing.csv"}
    with pytest.raises(ConfigError, match=r"control.mu2.file: cannot read .*missing.csv"):
        parse_config(raw, base_dir=tmp_path)


def test_sampled_desired_state_is_interpolated_linearly(tmp_path):
    x = np.linspace(0.0, 1.0, 11)
    (tmp_path / "yd.txt").write_text("\n".join(f"{a} {0.2 + 0.5 * a}" for a in x))
    raw = _control_config()
    raw["control"]["y_d"] = {"type": "samples", "file": "yd.txt"}
    study = parse_config(raw, base_dir=tmp_path)
    spec = study.params["y_d"]
    assert spec["type"] == "samples" and len(spec["points"]) == 11
    y_d = _sample_interpolant(np.array(spec["points"]), np.array(spec["values"]))
    t = np.array([[0.05, 0.33, 0.999]])
    assert np.allclose(y_d(t), 0.2 + 0.5 * t[0])  # linear data are reproduced


def test_2d_samples_reproduce_affine_data_and_extend_outside_the_hull():
    rng = np.random.default_rng(0)
    pts = rng.random((40, 2))
    pts = np.vstack([pts, [[0, 0], [1, 0], [0, 1], [1, 1]]])
    vals = 1.0 + 2.0 * pts[:, 0] - pts[:, 1]
    y_d = _sample_interpolant(pts, vals)
    q = rng.random((2, 5, 3))
    assert np.allclose(y_d(q), 1.0 + 2.0 * q[0] - q[1])
    out = y_d(np.array([[2.0], [2.0]]))  # outside: the nearest sample (1, 1)
    assert np.allclose(out, 2.0)
