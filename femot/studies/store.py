"""The output directory of a study: one file per run plus a manifest, written atomically.

Layout::

    DIR/manifest.json        the study, its runs (id, chain, level, parameters) and their status
    DIR/config.toml          a copy of the configuration
    DIR/runs/<id>.json       the result of one run (metrics, solver info), written when it finishes
    DIR/runs/<id>.npz        the state it leaves for the next level (warm start)
    DIR/runs/<id>.error.json the traceback of a run that raised (it is retried on resume)

Every file is written to a temporary name and moved into place with ``os.replace``, so a
reader (or a resumed study) sees either nothing or a complete file. The state is written
before the result, so a complete result always has its state beside it.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["RunStore", "atomic_write_text", "to_json"]


def _default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def to_json(data) -> str:
    return json.dumps(data, indent=2, default=_default)


def atomic_write_text(path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class RunStore:
    """Results of the runs of a study in ``root`` (see the module doc)."""

    def __init__(self, root):
        self.root = Path(root)
        self.runs = self.root / "runs"

    # -- paths
    def result_path(self, rid: str) -> Path:
        return self.runs / f"{rid}.json"

    def state_path(self, rid: str) -> Path:
        return self.runs / f"{rid}.npz"

    def error_path(self, rid: str) -> Path:
        return self.runs / f"{rid}.error.json"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    # -- results
    def exists(self, rid: str) -> bool:
        """A result file is present (written atomically, so it is complete if it parses)."""
        return self.result_path(rid).exists()

    def read(self, rid: str) -> dict | None:
        """The stored result of run ``rid`` if it is present and complete, else None."""
        try:
            with open(self.result_path(rid)) as fh:
                rec = json.load(fh)
        except (OSError, ValueError):
            return None
        if not isinstance(rec, dict) or rec.get("id") != rid or rec.get("complete") is not True:
            return None
        return rec

    def complete_ids(self, ids) -> set:
        return {rid for rid in ids if self.read(rid) is not None}

    def write(self, record: dict, state: dict | None = None) -> None:
        """Store a finished run: its state (npz) first, then the result (json)."""
        rid = record["id"]
        self.runs.mkdir(parents=True, exist_ok=True)
        if state is not None:
            fd, tmp = tempfile.mkstemp(prefix=f".{rid}.", suffix=".npz", dir=self.runs)
            try:
                with os.fdopen(fd, "wb") as fh:
                    np.savez(fh, **{k: np.asarray(v) for k, v in state.items()})
                os.replace(tmp, self.state_path(rid))
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        atomic_write_text(self.result_path(rid), to_json(dict(record, complete=True)))
        if self.error_path(rid).exists():
            self.error_path(rid).unlink()

    def write_error(self, rid: str, error: dict) -> None:
        atomic_write_text(self.error_path(rid), to_json(dict(error, id=rid, time=time.time())))

    def read_error(self, rid: str) -> dict | None:
        try:
            with open(self.error_path(rid)) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return None

    def load_state(self, rid: str) -> dict | None:
        """The warm-start state stored by run ``rid`` (None if absent or unreadable)."""
        if self.read(rid) is None:
            return None
        try:
            with np.load(self.state_path(rid)) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError):
            return None

    # -- manifest
    def write_manifest(self, data: dict) -> None:
        atomic_write_text(self.manifest_path, to_json(data))

    def read_manifest(self) -> dict | None:
        try:
            with open(self.manifest_path) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return None
