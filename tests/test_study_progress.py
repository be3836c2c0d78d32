"""The progress display of a study ticks inside long levels, and SIGTERM ends a study cleanly."""
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from femot.studies import heartbeat
from femot.studies.execution import Progress

ROOT = Path(__file__).resolve().parents[1]


def test_heartbeat_counts_iterations_and_disappears(tmp_path):
    (tmp_path / "runs").mkdir()
    path = heartbeat.heartbeat_path(tmp_path, "abc")
    heartbeat.start_level(path, "h=delta/4", 2)
    assert path.is_file() and heartbeat.running_levels(tmp_path)[0]["level"] == 2
    for _ in range(7):
        heartbeat.iteration_tick(object())
    heartbeat._current["written"] = 0.0  # as if a second had passed since the last write
    heartbeat.iteration_tick()
    assert heartbeat.running_levels(tmp_path)[0]["nit"] == 8
    heartbeat.end_level()
    assert not path.exists() and heartbeat.running_levels(tmp_path) == []
    heartbeat.iteration_tick()  # no running level: nothing happens


def test_progress_ticks_while_a_level_runs(tmp_path):
    (tmp_path / "runs").mkdir()
    heartbeat.start_level(heartbeat.heartbeat_path(tmp_path, "lvl"), "chain A", 3)
    for _ in range(37):
        heartbeat.iteration_tick()
    heartbeat._current["written"] = 0.0
    heartbeat.iteration_tick()
    buf = io.StringIO()
    p = Progress(6, 2, stream=buf, root=tmp_path, tick=0.05).start()
    p.update(running=1)
    time.sleep(0.4)
    p.update(3, 1)  # a run finished: the estimate of the time left appears
    time.sleep(0.2)
    p.close()
    heartbeat.end_level()
    lines = buf.getvalue().splitlines()
    assert len(lines) >= 5, lines  # redrawn by the ticker, not only when counts change
    assert all("chain A level 3: 0m0" in ln and "it 38" in ln for ln in lines)
    assert "ETA ~" not in lines[0] and "3/6 done" in lines[-1] and "ETA ~" in lines[-1]


def test_quiet_progress_prints_nothing(tmp_path):
    quiet = io.StringIO()
    Progress(4, quiet=True, stream=quiet, root=tmp_path, tick=0.01).start().update(1, 1)
    time.sleep(0.05)
    assert quiet.getvalue() == ""


def test_sigterm_interrupts_a_study_with_one_line_and_it_resumes(tmp_path):
    out = tmp_path / "st"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "femot.cli", "study", str(ROOT / "demos" / "studies" / "transport_1d.toml"),
           "--out", str(out), "--no-plots"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = out / "runs"
    deadline = time.time() + 300
    while time.time() < deadline and not (runs.is_dir() and any(runs.glob("*.json"))):
        time.sleep(0.2)  # interrupt once the first level is stored and the second is running
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted by SIGTERM" in err and "rerun the same command to resume" in err
    assert "Traceback" not in err
    assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"
    assert not list((out / "runs").glob(".*.running"))  # no stale heartbeat
