"""The transport demos in quick mode (they need the core)."""
import json

import numpy as np

from femot.cli import main


def test_transport_1d_quick(tmp_path):
    out = tmp_path / "t1.json"
    assert main(["demo", "transport-1d", "--quick", "--quiet", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    levels = data["levels"]
    assert len(levels) >= 5
    for lv in levels:
        assert {"gamma", "delta", "d", "cost_error"} <= set(lv)
        assert lv["marginal_error"] <= 1e-8
    # The coupling of Part II (3.1) holds and the cost error decreases at every level.
    ratio = np.array([lv["gamma"] / lv["delta"] ** lv["d"] for lv in levels])
    assert np.all(np.diff(ratio) < 0)
    assert np.all(np.diff([lv["cost_error"] for lv in levels]) < 0)


def test_transport_2d_quick(tmp_path):
    out = tmp_path / "t2.json"
    plots = tmp_path / "plots"
    assert main(["demo", "transport-2d", "--quick", "--quiet", "--json", str(out), "--plot", str(plots)]) == 0
    data = json.loads(out.read_text())
    assert {"n1", "n2", "success", "marginal_error", "time_s", "peak_memory_mb"} <= set(data)
    assert data["success"] and data["marginal_error"] <= 1e-8
    assert (plots / "marginals.png").exists() and (plots / "mass_flow.png").exists()


def test_transport_2d_default_delta_is_described_not_blamed_on_the_user(capsys):
    assert main(["demo", "transport-2d", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "refine the mesh or use a larger delta" not in out and "a scale demo" in out
    assert main(["demo", "transport-2d", "--quick", "--delta", "0.1"]) == 0
    assert "note: --delta: delta = 0.1 is not resolved by the mesh" in capsys.readouterr().out
