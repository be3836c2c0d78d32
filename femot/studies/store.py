"""The output directory of a study (layout and guarantees: docs/studies.md).

One atomically written file per run (result JSON and state npz, the result recording the
state's size and SHA-256, so a damaged run is detected as a whole by :meth:`RunStore.inspect`),
a manifest, the directory's lock (:class:`StudyLock`) and the lease its workers check
before writing (:func:`check_lease`).
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import secrets
import socket
import time
from pathlib import Path

import numpy as np

from femot._io import atomic_write, atomic_write_text, to_json

__all__ = ["RunStore", "StudyLock", "StoreError", "StudyLockedError", "ForeignDirectoryError", "LeaseLostError",
           "check_lease", "foreign_content",
           "atomic_write_text", "write_if_changed", "to_json", "LOCK_NAME", "OWN_ENTRIES"]

LOCK_NAME = ".femot.lock"
#: Entries of a study directory written by femot (anything else is foreign content).
OWN_ENTRIES = {LOCK_NAME, "manifest.json", "config.toml", "results.csv", "results.md", "rates.csv", "report.md",
               "figures", "runs"}


class StoreError(RuntimeError):
    """The output directory cannot be used for this study (the message says why)."""


class StudyLockedError(StoreError):
    """Another process holds the lock of the output directory."""


class ForeignDirectoryError(StoreError):
    """The output directory holds something other than this study."""


def write_if_changed(path, text: str) -> bool:
    """Write ``text`` to ``path`` atomically unless the file already holds exactly it.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    text : str
        Its new content.

    Returns
    -------
    bool
        True if the file was written, False if it already held ``text``.
    """
    path = Path(path)
    try:
        if path.read_text() == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    atomic_write_text(path, text)
    return True


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _record_checksum(rec: dict) -> str:
    """SHA-256 of a run record without its ``sha256`` entry, in a canonical JSON form.

    Computed on the parsed record (sorted keys), so it does not depend on the
    indentation of the file, and equal for the record written and the one read back.
    """
    body = {k: v for k, v in rec.items() if k != "sha256"}
    return _sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


class RunStore:
    """Results of the runs of a study in ``root`` (see the module doc); ``rid`` is a run id."""

    def __init__(self, root):
        self.root = Path(root)
        self.runs = self.root / "runs"

    # -- paths
    def result_path(self, rid: str) -> Path:
        """``runs/<rid>.json``: the result file of run ``rid``."""
        return self.runs / f"{rid}.json"

    def state_path(self, rid: str) -> Path:
        """``runs/<rid>.npz``: the warm-start state of run ``rid``."""
        return self.runs / f"{rid}.npz"

    def error_path(self, rid: str) -> Path:
        """``runs/<rid>.error.json``: the error file of run ``rid`` (its solve raised)."""
        return self.runs / f"{rid}.error.json"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def rel(self, path) -> str:
        """``path`` relative to the study directory (for messages).

        Parameters
        ----------
        path : str or os.PathLike
            A path, normally inside the study directory.

        Returns
        -------
        str
            The relative path, or ``path`` unchanged if it lies outside.
        """
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)

    # -- validation
    def _record(self, rid: str):
        """(record, None) for a valid result file, (None, None) if absent, (None, reason) if damaged."""
        path = self.result_path(rid)
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            return None, f"{self.rel(path)}: cannot be read ({exc.strerror or exc})"
        try:
            rec = json.loads(raw.decode())
        except (UnicodeDecodeError, ValueError) as exc:
            what = "empty" if not raw.strip() else f"not valid JSON ({exc})"
            return None, f"{self.rel(path)}: {what}"
        if not isinstance(rec, dict):
            return None, f"{self.rel(path)}: not a run record"
        if rec.get("id") != rid:
            return None, f"{self.rel(path)}: records run {rec.get('id')!r}, not {rid}"
        if "sha256" in rec and rec["sha256"] != _record_checksum(rec):
            return None, f"{self.rel(path)}: checksum does not match its content (edited or corrupted)"
        if rec.get("complete") is not True:
            return None, f"{self.rel(path)}: not marked complete"
        for key in ("metrics", "info"):
            if not isinstance(rec.get(key), dict):
                return None, f"{self.rel(path)}: field {key!r} missing or not a table"
        return rec, None

    def _state_problem(self, rid: str, rec: dict) -> str | None:
        """Why the state of a complete run is unusable (None if it is fine)."""
        path = self.state_path(rid)
        meta = rec.get("state", "legacy")
        if meta is None:  # the run left no state
            return None
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return f"{self.rel(path)}: missing (the result {self.rel(self.result_path(rid))} says it was written)"
        except OSError as exc:
            return f"{self.rel(path)}: cannot be read ({exc.strerror or exc})"
        if isinstance(meta, dict):
            if len(data) != meta.get("bytes") or _sha256(data) != meta.get("sha256"):
                return (f"{self.rel(path)}: {len(data)} bytes, checksum does not match the "
                        f"{meta.get('bytes')} bytes recorded in {self.rel(self.result_path(rid))}")
            return None
        # A store written before checksums were recorded: read every array.
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                for k in z.files:
                    z[k]
        except Exception as exc:  # BadZipFile, EOFError, zlib.error, ValueError, ...
            return f"{self.rel(path)}: not a valid npz archive ({type(exc).__name__}: {exc})"
        return None

    def inspect(self, rid: str) -> tuple[str, str | None]:
        """``("complete", None)``, ``("absent", None)`` or ``("damaged", reason)`` for run ``rid``.

        A run is complete when its result file is a valid record marked complete and its
        state file (if the record names one) matches the recorded size and checksum.

        Returns
        -------
        status : str
            ``'complete'``, ``'absent'`` or ``'damaged'``.
        reason : str or None
            Why the run is damaged (None otherwise).
        """
        rec, why = self._record(rid)
        if why is not None:
            return "damaged", why
        if rec is None:  # (a state without a result: the run did not finish)
            return "absent", None
        why = self._state_problem(rid, rec)
        if why is not None:
            return "damaged", why
        return "complete", None

    def scan(self, ids) -> tuple[set, dict]:
        """Complete run ids and damaged ones (id -> reason) among ``ids``.

        Parameters
        ----------
        ids : iterable of str
            Run ids to check (see :meth:`inspect`).

        Returns
        -------
        complete : set of str
            The complete runs.
        damaged : dict
            Run id -> reason for the damaged runs.
        """
        complete, damaged = set(), {}
        for rid in ids:
            st, why = self.inspect(rid)
            if st == "complete":
                complete.add(rid)
            elif st == "damaged":
                damaged[rid] = why
        return complete, damaged

    def discard(self, rid: str) -> None:
        """Delete the result and state files of run ``rid`` where present (a damaged run, to be computed again)."""
        for p in (self.result_path(rid), self.state_path(rid)):
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    # -- results
    def exists(self, rid: str) -> bool:
        """A result file of run ``rid`` is present (the run finished; see :meth:`inspect` for its validity)."""
        return self.result_path(rid).exists()

    def read(self, rid: str) -> dict | None:
        """The stored record (id, metrics, info, ...) of run ``rid`` if it is present and valid, else None."""
        return self._record(rid)[0]

    def complete_ids(self, ids) -> set:
        """The ids among ``ids`` of runs whose result and state are both valid."""
        return self.scan(ids)[0]

    def write(self, record: dict, state: dict | None = None) -> None:
        """Store a finished run: its state (npz) first, then the result (json) with the
        size and checksum of the state.

        Both files are written atomically; an error file of the run is removed.

        Parameters
        ----------
        record : dict
            The run record; ``record["id"]`` is the run id.
        state : dict, optional
            Arrays for warm-starting the next level (name -> array); None stores none.
        """
        rid = record["id"]
        self._require_root()
        self.runs.mkdir(exist_ok=True)
        meta = None
        if state is not None:
            buf = io.BytesIO()
            arrays: dict = {k: np.asarray(v) for k, v in state.items()}
            np.savez(buf, **arrays)
            data = buf.getvalue()
            atomic_write(self.state_path(rid), lambda fh: fh.write(data), binary=True)
            meta = {"file": self.state_path(rid).name, "bytes": len(data), "sha256": _sha256(data),
                    "arrays": sorted(state)}
        rec = json.loads(to_json(dict(record, complete=True, state=meta)))  # as it will be read back
        rec["sha256"] = _record_checksum(rec)
        atomic_write_text(self.result_path(rid), to_json(rec))
        if self.error_path(rid).exists():
            self.error_path(rid).unlink()

    def write_error(self, rid: str, error: dict) -> None:
        """Record that the solve of run ``rid`` raised (the run is retried on resume).

        Parameters
        ----------
        error : dict
            Description of the error (message, traceback, chain, level); the id and the
            time are added.
        """
        atomic_write_text(self.error_path(rid), to_json(dict(error, id=rid, time=time.time())))

    def read_error(self, rid: str) -> dict | None:
        """The error record of run ``rid`` (None if absent or unreadable)."""
        try:
            with open(self.error_path(rid)) as fh:
                err = json.load(fh)
        except (OSError, ValueError):
            return None
        return err if isinstance(err, dict) else None

    def load_state(self, rid: str) -> dict | None:
        """The warm-start state (array name -> array) stored by run ``rid`` (None if absent or damaged)."""
        if self.inspect(rid)[0] != "complete":
            return None
        try:
            with np.load(self.state_path(rid), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception:  # removed or altered since the check
            return None

    # -- manifest
    def write_manifest(self, data: dict) -> bool:
        """Write the manifest (only if its content changed).

        Parameters
        ----------
        data : dict
            The manifest (JSON-serializable).

        Returns
        -------
        bool
            True if the file was written.

        Raises
        ------
        FileNotFoundError
            If the study directory has vanished (it is not recreated).
        """
        self._require_root()
        return write_if_changed(self.manifest_path, to_json(data) + "\n")

    def _require_root(self) -> None:
        if not self.root.is_dir():  # vanished: do not recreate it (outside any lock)
            raise FileNotFoundError(errno.ENOENT, "the output directory has vanished", str(self.root))

    def read_manifest(self) -> dict | None:
        """The manifest if it parses and has the expected shape, else None."""
        try:
            with open(self.manifest_path) as fh:
                man = json.load(fh)
        except (OSError, ValueError):
            return None
        if not isinstance(man, dict) or not isinstance(man.get("runs"), list) or \
                not all(isinstance(r, dict) and isinstance(r.get("id"), str) for r in man["runs"]):
            return None
        return man

    def stored_run_ids(self) -> set:
        """Ids of all run files in ``runs/`` (results, states and errors), of any study."""
        if not self.runs.is_dir():
            return set()
        out = set()
        for p in self.runs.iterdir():
            name = p.name
            if name.startswith("."):
                continue
            for suf in (".error.json", ".json", ".npz"):
                if name.endswith(suf):
                    out.add(name[: -len(suf)])
                    break
        return out


def foreign_content(root, study) -> str | None:
    """Why ``root`` holds something other than ``study`` (None: absent, empty or the same study).

    The same study means the same set of run ids (names, descriptions and report options
    do not enter the ids). The evidence is the manifest, or, if the manifest is damaged,
    the run files; a directory with other files and no study in it is foreign too.

    Parameters
    ----------
    root : str or os.PathLike
        The output directory.
    study : Study
        The validated study.

    Returns
    -------
    str or None
        A description of the foreign content, or None.
    """
    root = Path(root)
    if not root.is_dir():
        return None
    # (temporary files of an atomic write cut short by a kill count as ours)
    entries = [p.name for p in root.iterdir() if not (p.name.startswith(".") and p.name.endswith(".tmp"))]
    if not [e for e in entries if e != LOCK_NAME]:
        return None
    ids = {lv.id for lv in study.runs}
    store = RunStore(root)
    man = store.read_manifest()
    if man is not None:
        theirs = {r["id"] for r in man["runs"]}
        if theirs == ids:
            return None
        name = man["study"].get("name", "?") if isinstance(man.get("study"), dict) else "?"
        return (f"{root} holds another study, {name!r} ({len(theirs)} runs; this study {study.name!r} has "
                f"{len(ids)}, {len(theirs & ids)} in common)")
    stored = store.stored_run_ids()
    if stored - ids:
        return (f"{root} holds {len(stored - ids)} stored run(s) that are not runs of study {study.name!r} "
                f"(and no readable manifest)")
    other = sorted(e for e in entries if e not in OWN_ENTRIES)
    if other and not stored:
        return f"{root} is not empty and holds no femot study (found {', '.join(other[:3])}" + \
            (", ...)" if len(other) > 3 else ")")
    return None


class LeaseLostError(StoreError):
    """The process that runs the study no longer holds its lock: a worker must stop writing."""


def check_lease(root, token: str | None) -> None:
    """Raise :class:`LeaseLostError` unless the study lock of ``root`` is held with ``token``.

    A worker of a study (process pool, dask) calls this before it computes or stores a
    run: once the process that started the study is gone (killed, disconnected) its
    lock is released, and a worker that kept writing would change a directory nobody
    locks, or one that another study run has locked since (another token).

    Parameters
    ----------
    root : str or os.PathLike
        The study directory.
    token : str or None
        The token of the lock (:attr:`StudyLock.token`); None checks nothing (a caller
        that does not run under a lock, or a platform without ``fcntl``).

    Raises
    ------
    LeaseLostError
        If the lock file is gone, names another token, or nobody holds the lock.
    """
    if token is None:
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return
    path = Path(root) / LOCK_NAME
    try:
        with open(path) as fh:
            held = fh.read().split()
            if len(held) < 3 or held[2] != token:
                raise LeaseLostError(f"{root}: the study lock is no longer ours (the process that started the "
                                     f"study is gone); not writing")
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:  # held exclusively: the study is alive
                return
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    except FileNotFoundError:
        gone = "the output directory has vanished" if not Path(root).is_dir() else "the study lock file is gone"
        raise LeaseLostError(f"cannot write the study output in {root}: {gone}; not writing") from None
    raise LeaseLostError(f"{root}: nobody holds the study lock any more (the process that started the study is "
                         f"gone); not writing")


class StudyLock:
    """Exclusive lock of a study directory: ``fcntl.flock`` on ``DIR/.femot.lock``.

    The lock file holds the pid and host of the holder and a random token; a second
    process fails at once with :class:`StudyLockedError` naming that pid. The lock is
    released when the holder exits, however it ends (the kernel drops it with the file
    descriptor). Workers of the holder write only while it holds the lock with that
    token (:func:`check_lease`). Where ``fcntl`` does not exist (Windows) no lock is taken.
    """

    def __init__(self, root):
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self.fh = None
        self.token: str | None = None

    def acquire(self) -> "StudyLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        self.root.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().split()
            fh.close()
            pid = holder[0] if holder else "?"
            host = f" on {holder[1]}" if len(holder) > 1 and holder[1] != socket.gethostname() else ""
            raise StudyLockedError(f"{self.root} is in use by another femot study (pid {pid}{host}); wait until "
                                   f"it finishes or choose another --out") from None
        fh.seek(0)
        fh.truncate()
        self.token = secrets.token_hex(8)
        fh.write(f"{os.getpid()} {socket.gethostname()} {self.token}\n")
        fh.flush()
        self.fh = fh
        return self

    def release(self) -> None:
        if self.fh is not None:
            try:
                self.fh.seek(0)
                self.fh.truncate()
            except OSError:
                pass
            self.fh.close()  # closing the descriptor drops the flock
            self.fh = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
