"""Run one benchmark case in a fresh Python process and read back its result.

Every benchmark script times each case in its own subprocess (so that compile
caches, thread pools and peak memory belong to that case alone).  The worker
prints one line ``RESULT <json>``; :func:`run_worker` returns that dict, or
``label`` with ``success = False`` and the reason (timeout, or the end of the
worker's stderr) when there is none.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time

#: The femot checkout the workers import: this one, or ``FEMOT_ROOT`` (before/after comparisons).
ROOT = os.environ.get("FEMOT_ROOT") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def busy_processes(k, settle=0.0):
    """``k`` CPU-bound competitors (``python -c "while True: pass"``) for the duration of the block.

    Yields their list (empty for k = 0); waits ``settle`` seconds after starting them; kills and
    reaps them at the end, also on errors.
    """
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(int(k))]
    try:
        if procs and settle:
            time.sleep(settle)
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def run_worker(script, args, label, timeout, env_updates=None, time_on_failure=False):
    """``python script *args`` with femot's checkout first on PYTHONPATH; the worker's RESULT dict."""
    env = dict(os.environ)
    for key, value in (env_updates or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, os.path.abspath(script), *[str(a) for a in args]]
    failed = dict(label, success=False)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return dict(failed, error=f"timeout {timeout}s", **({"time_s": float(timeout)} if time_on_failure else {}))
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return dict(failed, error=p.stderr[-800:], **({"time_s": float("nan")} if time_on_failure else {}))
