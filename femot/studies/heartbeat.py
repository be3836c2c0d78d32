"""Heartbeats of running levels: what the progress display shows while a long level runs.

A worker that starts a level writes ``runs/.<id>.running`` (JSON: chain label, level,
start time, iterations so far) and removes it when the level ends; the upper-level solvers'
callbacks count iterations into it (:func:`iteration_tick`, rewritten at most once per
second). The study's process reads these files (:func:`running_levels`), whatever backend
runs the level. Names starting with a dot are not run files of the store.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

__all__ = ["heartbeat_path", "start_level", "end_level", "iteration_tick", "running_levels"]

_current: dict = {}  # this process's running level: path, chain, level, started, nit, written


def heartbeat_path(root, run_id: str) -> Path:
    """The heartbeat file of run ``run_id`` in the study directory ``root``."""
    return Path(root) / "runs" / f".{run_id}.running"


def _write(state: dict) -> None:
    try:
        tmp = state["path"].with_suffix(".tmp")
        tmp.write_text(json.dumps({k: state[k] for k in ("chain", "level", "started", "nit")}))
        os.replace(tmp, state["path"])
        state["written"] = time.time()
    except OSError:  # a heartbeat is a display aid: never fail a run for it
        pass


def start_level(path, chain: str, level: int) -> None:
    """Announce that this process runs ``level`` of ``chain`` (``path`` None: nothing is written)."""
    _current.clear()
    if path is not None:
        _current.update(path=Path(path), chain=str(chain), level=int(level), started=time.time(), nit=0)
        _write(_current)


def end_level() -> None:
    """Remove this process's heartbeat."""
    path = _current.get("path")
    _current.clear()
    if path is not None:
        try:
            path.unlink()
        except OSError:
            pass


def iteration_tick(*_args, **_kwargs) -> None:
    """Count one iteration of the running level (an optimizer callback; returns None, never stops it)."""
    if not _current:
        return
    _current["nit"] += 1
    if time.time() - _current.get("written", 0.0) >= 1.0:
        _write(_current)


def running_levels(root) -> list[dict]:
    """The heartbeats under ``root/runs`` (chain, level, started, nit), oldest first."""
    runs = Path(root) / "runs"
    out = []
    if runs.is_dir():
        for p in runs.glob(".*.running"):
            try:
                out.append(json.loads(p.read_text()))
            except (OSError, ValueError):  # being replaced, or removed meanwhile
                continue
    return sorted(out, key=lambda h: h.get("started", 0.0))
