"""``run_study``: validate, skip what is done, run the rest on a backend, report."""
from __future__ import annotations

import errno
import hashlib
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from femot._docstrings import fill_doc
from femot._io import check_writable
from femot.studies.config import Study, load_config
from femot.studies.execution import (
    DEFAULT_CONNECT_TIMEOUT,
    ChainTask,
    Progress,
    check_dask,
    connect_dask,
    run_dask,
    run_process_pool,
    run_serial,
)
from femot.studies.registry import get_problem
from femot.studies.report import fit_rates, format_table, table_rows, write_outputs
from femot.studies.store import (
    LOCK_NAME,
    ForeignDirectoryError,
    RunStore,
    StoreError,
    StudyLock,
    foreign_content,
    write_if_changed,
)

__all__ = ["run_study", "StudyOutcome", "backend_of", "fingerprint"]

# the study of the examples: two levels of the transport between two pairs of atoms on [0, 1]
_example = fill_doc(two_levels="""
>>> import tempfile
>>> from femot.studies import parse_config
>>> study = parse_config({
...     "study": {"problem": "transport"},
...     "schedule": {"gammas": [1e-2, 1e-3], "deltas": [0.2, 0.15]},
...     "mesh": {"nodes_per_delta": 4.0},
...     "transport": {"mu1": {"type": "diracs", "points": [0.4, 0.6]},
...                   "mu2": {"type": "diracs", "points": [0.45, 0.65]}}})
""")


@dataclass
@_example
class StudyOutcome:
    """What a call of :func:`run_study` did and found.

    ``executed``: ids computed by this call; ``previously_complete``: ids found complete
    before it; ``damaged``: runs found damaged (``{"id", "reason"}``), deleted and computed
    again; ``failed``: ids whose run raised (retried on the next call); ``rows``, ``rates``:
    the table and fitted rates over all complete runs; ``files``: written outputs.

    A second call on the same directory computes nothing (the runs are stored):

    %(two_levels)s
    >>> from femot.studies import run_study
    >>> with tempfile.TemporaryDirectory() as out:
    ...     first = run_study(study, out, quiet=True, plots=False)
    ...     again = run_study(study, out, quiet=True, plots=False)
    >>> len(first.executed), again.nothing_to_do, len(again.previously_complete), again.success
    (2, True, 2, True)
    """

    study: Study
    root: Path
    backend: str
    executed: list = field(default_factory=list)
    previously_complete: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    damaged: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    rates: list = field(default_factory=list)
    files: dict = field(default_factory=dict)
    nothing_to_do: bool = False
    wall_time_s: float = 0.0

    @property
    def complete(self) -> bool:
        return len(self.rows) == len(self.study.runs)

    @property
    def success(self) -> bool:
        """All runs complete, none raised, every solver reported success."""
        return self.complete and not self.failed and not self.errors and all(r["success"] for r in self.rows)

    def table(self) -> str:
        return format_table(self.study, self.rows, self.rates)


def backend_of(workers: int = 1, dask_local: int | None = None, scheduler: str | None = None) -> str:
    """The backend that :func:`run_study` uses for these arguments.

    Parameters
    ----------
    workers : int, optional
        Size of the local process pool (> 1 selects it).  Default 1.
    dask_local : int, optional
        Number of workers of a dask LocalCluster.
    scheduler : str, optional
        Address of a dask scheduler; takes precedence over the others.

    Returns
    -------
    str
        ``'dask'``, ``'dask-local'``, ``'process'`` or ``'serial'``.
    """
    if scheduler:
        return "dask"
    if dask_local:
        return "dask-local"
    return "process" if workers > 1 else "serial"


def fingerprint(study: Study) -> str:
    """Identity of a study in a directory: a hash of its sorted run ids.

    Parameters
    ----------
    study : Study
        The validated study.

    Returns
    -------
    str
        The first 16 hexadecimal digits of the SHA-256 hash of the sorted run ids.
    """
    return hashlib.sha256(",".join(sorted(lv.id for lv in study.runs)).encode()).hexdigest()[:16]


def _manifest(study: Study, store: RunStore, status: str, complete: set, *, process: dict | None = None) -> dict:
    """The manifest: a function of the study and the stored files (plus, while a process
    runs the study, that process's pid, host and backend)."""
    runs = []
    for ch in study.chains:
        for lv in ch.levels:
            st = "done" if lv.id in complete else ("error" if store.read_error(lv.id) is not None else "pending")
            runs.append({"id": lv.id, "chain": ch.index, "chain_label": ch.label, "seed": ch.seed,
                         "level": lv.index, "gamma": lv.gamma, "delta": lv.delta, "ratio": lv.ratio,
                         "mesh": lv.mesh.key(), "status": st, "result": f"runs/{lv.id}.json"})
    counts = {k: sum(r["status"] == k for r in runs) for k in ("done", "error", "pending")}
    man = {"femot_study": 2, "fingerprint": fingerprint(study), "study": study.summary(), "config": study.raw,
           "source": study.source, "status": status, "counts": dict(counts, total=len(runs)), "runs": runs}
    if process:
        man["process"] = dict(process, updated=time.strftime("%Y-%m-%d %H:%M:%S"))
    return man


@_example
def run_study(config, out, *, workers: int = 1, dask_local: int | None = None, scheduler: str | None = None,
              quiet: bool = False, plots: bool = True, on_run_done=None, stream=None, progress_stream=None,
              force: bool = False, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> StudyOutcome:
    """Run (or resume) a convergence study.

    Parameters
    ----------
    config : str, os.PathLike or Study
        Path of a TOML file or a validated :class:`~femot.studies.config.Study`.
    out : str or os.PathLike
        Output directory (created); results already there are reused (resume).
    workers : int, optional
        > 1 runs the chains on a local process pool of that size.  Default 1 (serial).
    dask_local : int, optional
        Start a dask LocalCluster with this many workers (optional extra femot[dask]).
    scheduler : str, optional
        Address of an existing dask scheduler.
    quiet : bool, optional
        No progress bar and no messages or table on ``stream``.  Default False.
    plots : bool, optional
        Draw the figures of the report.  Default True.
    on_run_done : callable, optional
        ``callback(record)`` after each finished run (serial: right after it is
        written; other backends: when the main process sees its file).
    stream : file-like, optional
        Where messages and the table are printed; default ``sys.stdout``.
    progress_stream : file-like, optional
        Where the progress bar is drawn; default ``sys.stderr``.
    force : bool, optional
        Write into ``out`` even if it holds another study (or other files).  Default False.
    connect_timeout : float, optional
        Seconds to wait for the dask scheduler ``scheduler``.

    Returns
    -------
    StudyOutcome
        What was run, what was found, the table rows, rates and output files.

    Every stored run is validated first (its result and its state, see
    :meth:`~femot.studies.store.RunStore.inspect`); damaged runs are deleted, computed
    again and reported. The manifest, results.csv, results.md, rates.csv and report.md are
    regenerated from the run files on every call (a file is rewritten only if its content
    changes). The directory is locked for the duration of the call.

    Raises
    ------
    femot._io.OutputPathError : ``out`` cannot be created or written.
    StudyLockedError : another process is running a study in ``out``.
    ForeignDirectoryError : ``out`` holds another study or other files (and not ``force``).
    BackendError : the dask scheduler does not answer within ``connect_timeout``.
    StoreError : the output cannot be written (disk full, read-only, permissions, the directory vanished);
        the message is one line, the runs stored so far stay valid.
    ImportError : the dask backend is requested but dask.distributed is not installed.

    Examples
    --------
    Two levels of the smoothed, regularized transport between two pairs of atoms on [0, 1]:

    %(two_levels)s
    >>> with tempfile.TemporaryDirectory() as out:
    ...     outcome = run_study(study, out, quiet=True, plots=False)
    ...     written = sorted(outcome.files)
    >>> outcome.success, [f"{row['cost_error']:.2e}" for row in outcome.rows]
    (True, ['1.30e-02', '2.95e-03'])
    >>> written
    ['csv', 'figures', 'markdown', 'rates', 'report']
    """
    t0 = time.perf_counter()
    study = config if isinstance(config, Study) else load_config(config)
    if sum(bool(x) for x in (workers > 1, dask_local, scheduler)) > 1:
        raise ValueError("workers, dask_local, scheduler: choose one backend")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    stream = stream if stream is not None else sys.stdout
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=stream, flush=True))
    backend = backend_of(workers, dask_local, scheduler)
    if backend in ("dask", "dask-local"):
        check_dask()
    root = Path(out)
    check_writable(root, "out", directory=True)
    created = not root.exists()

    def refuse_foreign(warn: bool):
        why = foreign_content(root, study)
        if why is not None:
            if not force:
                raise ForeignDirectoryError(f"{why}; refusing to overwrite its files. Choose another --out, "
                                            f"or force=True (--force) to write this study there")
            if warn:
                print(f"femot study: warning: {why}; writing study {study.name!r} there (forced)", file=sys.stderr)

    refuse_foreign(False)  # before the lock file is created in a directory that is not ours
    try:
        with StudyLock(root) as lock:
            refuse_foreign(True)  # again, now that no other process can change it
            try:
                return _run_locked(study, root, backend, t0, workers=workers, dask_local=dask_local,
                                   scheduler=scheduler, quiet=quiet, plots=plots, on_run_done=on_run_done, say=say,
                                   progress_stream=progress_stream, connect_timeout=connect_timeout,
                                   lease=lock.token)
            except OSError as exc:
                if not _output_failure(exc, root):
                    raise
                raise StoreError(_output_message(exc, root)) from exc
    except BaseException:
        if created:  # leave no directory behind that holds nothing but the lock file
            try:
                (root / LOCK_NAME).unlink()
                root.rmdir()
            except OSError:
                pass
        raise


_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def _output_failure(exc: OSError, root: Path) -> bool:
    """The error is about the output directory: disk full, read-only, or a path inside ``root``."""
    if exc.errno in _DISK_ERRNOS:
        return True
    try:
        base = root.resolve()
        return any(f is not None and (Path(f).resolve() == base or base in Path(f).resolve().parents)
                   for f in (exc.filename, exc.filename2))
    except (OSError, RuntimeError):
        return False


def _output_message(exc: OSError, root: Path) -> str:
    what = exc.strerror or str(exc)
    where = f" ({exc.filename})" if exc.filename else ""
    return (f"cannot write the study output in {root}: {what}{where}; the runs stored so far are complete and "
            f"kept; fix the cause (free space, permissions, the directory) and rerun the same command to resume")


def _run_locked(study, root, backend, t0, *, workers, dask_local, scheduler, quiet, plots, on_run_done, say,
                progress_stream, connect_timeout, lease=None):
    store = RunStore(root)
    ids = [lv.id for lv in study.runs]
    done_before, damaged = store.scan(ids)
    for rid in damaged:
        store.discard(rid)
    outcome = StudyOutcome(study=study, root=root, backend=backend, previously_complete=sorted(done_before),
                           damaged=[{"id": rid, "reason": why} for rid, why in damaged.items()])
    pending_chains = [ch for ch in study.chains if any(lv.id not in done_before for lv in ch.levels)]
    pending_ids = [lv.id for ch in pending_chains for lv in ch.levels if lv.id not in done_before]
    client = None
    if pending_ids and backend in ("dask", "dask-local"):  # connect before anything is written
        client = connect_dask(scheduler, dask_local, connect_timeout)
    if study.source and Path(study.source).is_file():
        write_if_changed(root / "config.toml", Path(study.source).read_text())

    if not pending_ids:
        outcome.nothing_to_do = True
        say(f"study {study.name!r}: all {len(ids)} runs are already complete in {root}; nothing to run.")
    else:
        if damaged:
            print(f"femot study: {len(damaged)} damaged run(s) will be recomputed: "
                  + "; ".join(damaged.values()), file=sys.stderr, flush=True)
        say(f"study {study.name!r} ({study.problem}): {len(ids)} runs in {len(study.chains)} chain(s) of "
            f"{len(study.gammas)} levels; {len(done_before)} already complete, {len(pending_ids)} to run "
            f"[{backend}{'' if backend == 'serial' else ', ' + str(scheduler or dask_local or workers)}]")
        finished = set(done_before)
        proc = {"pid": os.getpid(), "host": socket.gethostname(), "backend": backend}
        store.write_manifest(_manifest(study, store, "running", finished, process=proc))

        def run_done(record):
            # Keep the manifest current, so that a killed study leaves a truthful one.
            finished.add(record["id"])
            store.write_manifest(_manifest(study, store, "running", finished, process=proc))
            if on_run_done is not None:
                on_run_done(record)

        tasks = [ChainTask(problem=study.problem, params=study.params, chain=ch, root=str(root.resolve()),
                           skip=tuple(sorted(lv.id for lv in ch.levels if lv.id in done_before)),
                           threads=study.threads, study=study.name, d=study.d, finest=study.finest, lease=lease)
                 for ch in pending_chains]
        progress = Progress(len(ids), len(done_before), quiet=quiet, stream=progress_stream, root=root).start()
        progress.update()
        try:
            if backend == "serial":
                results, errors = run_serial(tasks, progress, run_done)
            elif backend == "process":
                results, errors = run_process_pool(tasks, store, pending_ids, progress, workers, run_done)
            else:
                results, errors = run_dask(tasks, store, pending_ids, progress, on_run_done=run_done, client=client)
        except BaseException:
            progress.close()
            try:
                store.write_manifest(_manifest(study, store, "interrupted", store.complete_ids(ids)))
            except OSError:  # (disk full, directory gone): the original error is the one to report
                pass
            raise
        progress.close()
        run_errors = [e for res in results for e in res.errors]
        outcome.failed = [e["id"] for e in run_errors]
        outcome.errors = run_errors + [{"error": e} for e in errors]
        for e in outcome.errors:
            where = f"chain {e['chain']}, level {e['level']}: " if "chain" in e else ""
            print(f"femot study: run failed: {where}{e['error']}", file=sys.stderr)

    complete = store.complete_ids(ids)
    outcome.executed = [rid for rid in pending_ids if rid in complete]
    records = {rid: store.read(rid) for rid in ids if rid in complete}
    outcome.rows = table_rows(study, records)
    outcome.rates = fit_rates(study, outcome.rows)
    status = "complete" if len(records) == len(ids) else "incomplete"
    # Regenerated from the run files on every call; unchanged files are not rewritten.
    store.write_manifest(_manifest(study, store, status, complete))
    n_err = sum(store.read_error(rid) is not None for rid in ids if rid not in complete)
    outcome.files = write_outputs(study, root, outcome.rows, outcome.rates, plots=plots,
                                  problem=get_problem(study.problem), runs_info={"failed": n_err})
    if outcome.rows:
        say("")
        say(outcome.table())
    if not outcome.nothing_to_do:
        say("")
        say(f"{len(outcome.executed)} run(s) executed, {len(outcome.previously_complete)} reused, "
            f"{len(outcome.failed)} failed; {len(records)}/{len(ids)} complete. Results in {root}"
            + (": report.md, results.csv, results.md, figures/" if outcome.files else ""))
    if outcome.damaged:
        redone = [d for d in outcome.damaged if d["id"] in complete]
        if redone:
            print(f"femot study: recomputed {len(redone)} damaged run{'s' if len(redone) > 1 else ''}: "
                  + "; ".join(d["reason"] for d in redone), file=sys.stderr, flush=True)
    unconverged = [r for r in outcome.rows if not r["success"]]
    if unconverged:
        say(f"note: {len(unconverged)} run(s) did not report solver success (column ok); see report.md")
    outcome.wall_time_s = time.perf_counter() - t0
    return outcome
