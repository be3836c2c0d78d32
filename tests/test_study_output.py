"""Study output under hostile conditions: edited results, a full disk, a vanished directory, a dead client."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap

import pytest

from femot.cli import main
from femot.studies import parse_config, run_study
from femot.studies.store import RunStore, StudyLock

RAW = {
    "study": {"name": "tiny", "problem": "transport", "seeds": [0]},
    "schedule": {"n_levels": 2, "gamma0": 1e-2, "factor": 0.05, "s": 1.0, "C": 1.0},
    "mesh": {"nodes_per_delta": 4.0},
    "transport": {"mu1": {"type": "random_diracs", "n": 3, "interval": [0.2, 0.8]},
                    "mu2": {"type": "diracs", "points": [0.35, 0.65]}},
}
TOML = textwrap.dedent("""\
    [study]
    name = "tiny"
    problem = "transport"
    seeds = [0]
    [schedule]
    n_levels = 2
    gamma0 = 1e-2
    factor = 0.05
    s = 1.0
    C = 1.0
    [mesh]
    nodes_per_delta = 4.0
    [transport]
    mu1 = { type = "random_diracs", n = 3, interval = [0.2, 0.8] }
    mu2 = { type = "diracs", points = [0.35, 0.65] }
    """)


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_an_edited_run_json_is_detected_and_recomputed(tmp_path, capsys):
    st = parse_config(RAW)
    ref = run_study(st, tmp_path, quiet=True, plots=False)
    rid = st.chains[0].levels[1].id
    path = RunStore(tmp_path).result_path(rid)
    rec = json.loads(path.read_text())
    metric = next(iter(rec["metrics"]))
    rec["metrics"][metric] = 123.456  # a plausible-looking edit: still valid JSON, still complete
    path.write_text(json.dumps(rec, indent=1))
    assert RunStore(tmp_path).inspect(rid) == ("damaged", f"runs/{rid}.json: checksum does not match its content "
                                                          "(edited or corrupted)")
    capsys.readouterr()
    again = run_study(st, tmp_path, quiet=True, plots=False)
    assert again.executed == [rid] and [d["id"] for d in again.damaged] == [rid]
    assert [r[metric] for r in again.rows] == [r[metric] for r in ref.rows]  # the edit did not reach the table
    assert "123.456" not in (tmp_path / "results.csv").read_text()


def _cli(cfg, out):
    return main(["study", str(cfg), "--out", str(out), "--no-plots", "--quiet"])


def test_disk_full_is_one_line_and_a_nonzero_exit(tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "s.toml"
    cfg.write_text(TOML)
    out = tmp_path / "out"
    real = RunStore.write
    calls = []

    def full(self, record, state=None):
        calls.append(record["id"])
        if len(calls) > 1:  # the first run is stored, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.result_path(record["id"])))
        return real(self, record, state)

    monkeypatch.setattr(RunStore, "write", full)
    capsys.readouterr()
    rc = _cli(cfg, out)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith(f"femot study: cannot write the study output in {out}: "
                                               "No space left on device"), err
    assert "rerun the same command to resume" in err[0]
    # the store is consistent: the stored run is complete, nothing half-written, and a rerun finishes the study
    store = RunStore(out)
    st = parse_config(RAW)
    first, second = (lv.id for lv in st.chains[0].levels)
    assert store.inspect(first) == ("complete", None) and store.inspect(second) == ("absent", None)
    assert not [f for f in _files(out) if f.endswith(".tmp")]
    monkeypatch.setattr(RunStore, "write", real)
    assert _cli(cfg, out) == 0
    assert store.inspect(second) == ("complete", None)


def test_a_vanished_output_directory_is_not_recreated(tmp_path, monkeypatch, capsys):
    import shutil

    cfg = tmp_path / "s.toml"
    cfg.write_text(TOML)
    out = tmp_path / "out"
    import femot.studies.runner as runner

    real = runner.run_serial

    def vanish_then_run(tasks, progress, on_run_done=None):
        shutil.rmtree(out)  # the directory disappears under the running study
        return real(tasks, progress, on_run_done)

    monkeypatch.setattr(runner, "run_serial", vanish_then_run)
    capsys.readouterr()
    rc = _cli(cfg, out)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"femot study: cannot write the study output in {out}")
    assert "vanished" in err[0]
    assert not out.exists()  # not silently recreated outside any lock


def test_workers_stop_writing_once_the_study_lock_is_gone(tmp_path):
    """A 'client' process takes the lock and is killed; a worker holding its lease must not write."""
    from femot.studies.execution import ChainTask, execute_chain
    from femot.studies.store import LeaseLostError, check_lease

    root = tmp_path / "out"
    root.mkdir()
    code = ("import sys, time; from femot.studies.store import StudyLock; l = StudyLock(sys.argv[1]).acquire(); "
            "print(l.token, flush=True); time.sleep(60)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(p) for p in sys.path if p]))
    client = subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        token = client.stdout.readline().strip()
        check_lease(root, token)  # held: fine
        with pytest.raises(LeaseLostError, match="no longer ours"):
            check_lease(root, "another-token")
    finally:
        client.kill()
        client.wait()
    with pytest.raises(LeaseLostError, match="nobody holds the study lock"):
        check_lease(root, token)
    st = parse_config(RAW)
    task = ChainTask(problem=st.problem, params=st.params, chain=st.chains[0], root=str(root), study=st.name,
                     d=st.d, finest=st.finest, lease=token)
    with pytest.raises(LeaseLostError):
        execute_chain(task)
    assert not (root / "runs").exists() or not any((root / "runs").iterdir())
    # a lock taken again by a new study (another token) does not revive the old lease
    with StudyLock(root) as lock:
        assert lock.token != token
        with pytest.raises(LeaseLostError, match="no longer ours"):
            check_lease(root, token)
