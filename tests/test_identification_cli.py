"""``femot identify`` end to end."""
import json

import numpy as np

from femot.cli import main
from femot.problems.instances import identification_instance, save_instance


def test_identify_random_writes_json_and_npz(tmp_path):
    out, npz = tmp_path / "r.json", tmp_path / "r.npz"
    rc = main(["identify", "--random", "10", "--seed", "1", "--gamma", "1e-3", "--json", str(out), "--save",
               str(npz), "--plot", str(tmp_path / "fig"), "--quiet"])
    data = json.loads(out.read_text())
    assert {"J", "nit", "stationarity", "success", "mu1_err_max", "pi_err_max"} <= set(data)
    assert rc == (0 if data["success"] else 1)
    z = np.load(npz)
    assert z["mu1"].shape == (10,) and z["pi"].shape == (10, 10)
    assert abs(z["mu1"].sum() - 1) < 1e-10
    assert (tmp_path / "fig" / "identification.png").exists()


def test_identify_file_and_errors(tmp_path, capsys):
    d = identification_instance(8, seed=0)
    path = tmp_path / "inst.npz"
    save_instance(path, d)
    assert main(["identify", str(path), "--gamma", "1e-2", "--quiet"]) in (0, 1)
    bad = tmp_path / "bad.npz"
    np.savez(bad, c_d=d["c_d"], mu2_d=d["mu2_d"], mu1_d=d["mu1_d"])
    try:
        main(["identify", str(bad)])
    except SystemExit as e:
        assert e.code == 2
    assert "pi_d" in capsys.readouterr().err
