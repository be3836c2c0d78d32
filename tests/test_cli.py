"""Command-line hygiene: user errors are one line on stderr with exit status 2,
output paths are checked before any work, demos list their own options."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import time

import pytest

from femot.cli import main


def one_line_error(capsys, *needles) -> str:
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert "Traceback" not in cap.err and len(err.splitlines()) == 1, cap.err
    for n in needles:
        assert n in err, (n, err)
    return err


def test_no_command_prints_usage_and_exits_2(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: femot") and "demo" in err and "study" in err
    assert main(["--help"]) == 0 and "usage: femot" in capsys.readouterr().out
    assert main(["frobnicate"]) == 2
    one_line_error(capsys, "unknown command 'frobnicate'")


def test_version_names_the_package_and_its_numerical_dependencies(capsys):
    from importlib import metadata

    import femot
    for flag in ("--version", "-V"):
        assert main([flag]) == 0
        out = capsys.readouterr().out.strip()
        assert out.startswith(f"femot {femot.__version__} (") and len(out.splitlines()) == 1
        assert f"numpy {metadata.version('numpy')}" in out and "scikit-fem" in out
    assert femot.__version__ == metadata.version("femot")


def test_demo_prints_json_only_when_asked(capsys, tmp_path):
    assert main(["demo", "qrot-1d", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "{" not in out and "done in" in out and "--json -" in out
    assert main(["demo", "qrot-1d", "--quick", "--json", "-"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("\n{") + 1:])  # the table, then the JSON document
    assert summary["demo"] == "qrot-1d" and summary["success"] is True
    assert main(["demo", "qrot-1d", "--quick", "--json", str(tmp_path / "s.json")]) == 0
    assert f"summary in {tmp_path / 's.json'}" in capsys.readouterr().out
    assert json.loads((tmp_path / "s.json").read_text())["demo"] == "qrot-1d"


def test_warmup_compiles_and_first_runs_are_announced(capsys, monkeypatch):
    import femot.cli.warmup as wu

    assert main(["warmup", "--quiet"]) == 0 and capsys.readouterr().out == ""
    assert wu.kernels_compiled()  # numba's cache now holds the core kernels
    monkeypatch.setattr(wu, "kernels_compiled", lambda: False)
    assert main(["demo", "qrot-1d", "--quick", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "compiled on this first run" in err and "femot warmup" in err
    monkeypatch.setattr(wu, "kernels_compiled", lambda: True)
    assert main(["demo", "qrot-1d", "--quick", "--quiet"]) == 0
    assert "first run" not in capsys.readouterr().err


def test_unknown_demo(capsys):
    assert main(["demo", "nonexistent"]) == 2
    one_line_error(capsys, "unknown demo 'nonexistent'", "ocp-2d")


def test_demo_help_lists_the_demos_own_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "ocp-2d", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for opt in ("--mesh", "--gamma", "--rtol", "--transport", "--json", "--quick"):
        assert opt in out, opt
    with pytest.raises(SystemExit) as exc:
        main(["demo", "qrot-1d", "-h"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "--gammas" in out and "--mesh" not in out
    with pytest.raises(SystemExit) as exc:  # an option of another demo is an error
        main(["demo", "qrot-1d", "--mesh", "lshaped"])
    assert exc.value.code == 2


@pytest.mark.parametrize("opt, bad, needle", [
    ("--json", "DIR", "is a directory"),
    ("--json", "FILE/x.json", "is not a directory"),
    ("--plot", "FILE", "exists and is not a directory"),
])
def test_demo_output_paths_are_checked_before_the_run(tmp_path, capsys, monkeypatch, opt, bad, needle):
    import femot.demos.qrot_1d as demo

    monkeypatch.setattr(demo, "run", lambda args: pytest.fail("the demo ran"))
    (tmp_path / "FILE").write_text("x")
    path = str(tmp_path) if bad == "DIR" else str(tmp_path / bad)
    assert main(["demo", "qrot-1d", opt, path]) == 2
    one_line_error(capsys, opt, needle)


def _no_solve(monkeypatch):
    import femot.problems.identification as ident

    monkeypatch.setattr(ident.TransportIdentification, "solve", lambda *a, **k: pytest.fail("the problem was solved"))


def test_identify_json_to_a_directory(tmp_path, capsys, monkeypatch):
    _no_solve(monkeypatch)
    target = tmp_path / "d"
    target.mkdir()
    assert main(["identify", "--random", "5", "--json", str(target)]) == 2
    one_line_error(capsys, "--json", "is a directory")
    assert sorted(os.listdir(tmp_path)) == ["d"]  # no d.tmp left behind


@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_identify_unwritable_save_fails_before_the_solve(tmp_path, capsys, monkeypatch, where):
    if where == "proc" and not os.path.isdir("/proc/self"):
        pytest.skip("no /proc")
    _no_solve(monkeypatch)
    (tmp_path / "f").write_text("x")
    path = str(tmp_path / "f" / "out.npz") if where == "under-a-file" else "/proc/femot-test/out.npz"
    assert main(["identify", "--random", "5", "--save", path]) == 2
    one_line_error(capsys, "--save", "cannot write")


def test_identify_writes_json_atomically_with_ordinary_permissions(tmp_path, capsys):
    old = os.umask(0o022)
    try:
        out = tmp_path / "r.json"
        assert main(["identify", "--random", "5", "--quiet", "--json", str(out), "--save",
                     str(tmp_path / "r.npz")]) == 0
    finally:
        os.umask(old)
    assert json.loads(out.read_text())["n1"] == 5
    assert sorted(os.listdir(tmp_path)) == ["r.json", "r.npz"]
    assert out.stat().st_mode & 0o777 == 0o644


def test_identify_json_dash_prints_the_summary(tmp_path, capsys, monkeypatch):
    """``--json -`` is standard output for ``femot identify`` as for ``femot demo`` (no file named '-')."""
    monkeypatch.chdir(tmp_path)
    assert main(["identify", "--random", "5", "--quiet", "--json", "-"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("\n{") + 1:])["n1"] == 5  # the result line, then the JSON document
    assert os.listdir(tmp_path) == []


def _study_config(tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text('[study]\nname = "t"\nproblem = "transport"\n\n[schedule]\nn_levels = 2\ngamma0 = 1e-2\n'
                   'factor = 0.05\n\n[mesh]\nnodes_per_delta = 4.0\n\n[transport]\n'
                   'mu1 = { type = "diracs", points = [0.4, 0.6] }\nmu2 = { type = "diracs", points = [0.3, 0.7] }\n')
    return cfg


@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_study_unwritable_out(tmp_path, capsys, where):
    if where == "proc" and not os.path.isdir("/proc/self"):
        pytest.skip("no /proc")
    cfg = _study_config(tmp_path)
    (tmp_path / "f").write_text("x")
    out = str(tmp_path / "f" / "out") if where == "under-a-file" else "/proc/x"
    assert main(["study", str(cfg), "--out", out]) == 2
    one_line_error(capsys, "--out", "cannot write directory")


@pytest.mark.skipif(importlib.util.find_spec("distributed") is None, reason="dask.distributed not installed")
def test_study_unreachable_scheduler_fails_fast(tmp_path, capsys):
    cfg = _study_config(tmp_path)
    out = tmp_path / "out"
    t0 = time.perf_counter()
    assert main(["study", str(cfg), "--out", str(out), "--scheduler", "tcp://127.0.0.1:1",
                 "--connect-timeout", "1", "--quiet"]) == 2
    elapsed = time.perf_counter() - t0
    one_line_error(capsys, "cannot connect to the dask scheduler at tcp://127.0.0.1:1 within 1 s")
    assert elapsed < 20, elapsed  # 30 s and a traceback before
    assert not out.exists()  # nothing was started
    from femot.studies.execution import DEFAULT_CONNECT_TIMEOUT

    assert DEFAULT_CONNECT_TIMEOUT <= 10


def test_check_writable_and_atomic_writes(tmp_path):
    from femot._io import OutputPathError, atomic_write_text, check_writable, write_json

    (tmp_path / "file").write_text("x")
    assert check_writable(tmp_path / "new" / "deeper" / "a.json", "--json") == tmp_path / "new" / "deeper" / "a.json"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    check_writable(tmp_path / "new-dir", "--out", directory=True)
    for path, kw, msg in ((tmp_path, {}, "is a directory"), (tmp_path / "file", {"directory": True}, "not a directory"),
                          (tmp_path / "file" / "x", {}, "is not a directory"), ("", {}, "empty path")):
        with pytest.raises(OutputPathError, match=f"^--opt: .*{msg}"):
            check_writable(path, "--opt", **kw)
    if hasattr(os, "geteuid") and os.geteuid() != 0:  # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        with pytest.raises(OutputPathError, match="cannot write"):
            check_writable(ro / "a.json", "--json")
    # an atomic write that fails leaves the old file and no temporary file
    atomic_write_text(tmp_path / "a.txt", "old")

    class Boom(Exception):
        pass

    def fail(fh):
        fh.write("partial")
        raise Boom

    from femot._io import atomic_write

    with pytest.raises(Boom):
        atomic_write(tmp_path / "a.txt", fail)
    assert (tmp_path / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "file"]
    import numpy as np

    write_json(tmp_path / "b.json", {"x": np.float64(1.5), "v": np.arange(3)})
    assert json.loads((tmp_path / "b.json").read_text()) == {"x": 1.5, "v": [0, 1, 2]}


def test_cli_entry_point_exit_status():
    """The real program: no traceback, exit status 2 (not 0) without a command."""
    import subprocess

    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run([sys.executable, "-m", "femot.cli"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("usage: femot") and r.stdout == ""
