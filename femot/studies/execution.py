"""Running the chains of a study: :func:`execute_chain` (the one chain runner of every study
kind), the serial / process-pool / dask backends and the progress bar (docs/studies.md).

The numbers never depend on the backend: every run is a deterministic function of its
parameters and runs with a fixed number of numba threads. Workers die with the process that
started them (:func:`die_with_parent`).
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field

from femot._docstrings import fill_doc
from femot.studies import heartbeat
from femot.studies.config import Chain
from femot.studies.mesh_spec import MeshSpec
from femot.studies.registry import get_problem
from femot.studies.store import RunStore, check_lease

__all__ = ["ChainTask", "ChainResult", "execute_chain", "Progress", "run_serial", "run_process_pool", "run_dask",
           "die_with_parent", "process_pool", "BackendError", "DEFAULT_CONNECT_TIMEOUT"]

#: Seconds to wait for a dask scheduler given by address before giving up.
DEFAULT_CONNECT_TIMEOUT = 10.0


# the arguments and results the pool backends share
_pool_doc = fill_doc(
    pool_args="""
tasks : iterable of ChainTask
    The chains to run.
store : RunStore
    The output store, polled for finished runs.
pending_ids : iterable of str
    Ids of the runs to be computed (counted for the progress bar).
progress : Progress
    The progress bar.
""",
    on_run_done="""
on_run_done : callable, optional
    ``on_run_done(record)`` for every run whose result file appears.
""",
    pool_results="""
results : list of ChainResult
    The return values of :func:`execute_chain` of the tasks that returned.
""",
)


class BackendError(RuntimeError):
    """The parallel backend cannot be used (e.g. the dask scheduler does not answer)."""


# ----------------------------------------------------------------------------- worker lifetime


def _watch_parent(parent_pid: int, period: float) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)
        time.sleep(period)


def die_with_parent(parent_pid: int | None = None, period: float = 0.5) -> None:
    """Make this (worker) process end when its parent ``parent_pid`` ends.

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, so the kernel kills the worker as soon
    as the parent dies, whatever the worker is doing. Everywhere: a daemon thread that
    polls the parent pid every ``period`` seconds and exits when it changed (the worker
    was re-parented). Used as the initializer of the process pool and on every dask
    worker of a local cluster.

    Parameters
    ----------
    parent_pid : int, optional
        Process id of the parent to watch; default the current parent (``os.getppid()``).
    period : float, optional
        Polling interval of the watcher thread in seconds.  Default 0.5.
    """
    if parent_pid is None:
        parent_pid = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no libc / prctl
            pass
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid, period), name="femot-parent-watch",
                     daemon=True).start()


# ----------------------------------------------------------------------------- worker


class _Threads:
    """Fix the number of numba threads inside a run (restored afterwards)."""

    def __init__(self, n: int):
        self.n, self.saved = int(n), None

    def __enter__(self):
        try:
            import numba

            self.saved = numba.get_num_threads()
            numba.set_num_threads(max(1, min(self.n, numba.config.NUMBA_NUM_THREADS)))
        except ImportError:  # pragma: no cover - numba is a dependency
            pass
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            import numba

            numba.set_num_threads(self.saved)
        return False


@dataclass(frozen=True)
class ChainTask:
    """One chain to run: what :func:`execute_chain` needs, picklable for process pools and dask."""

    problem: str                     # the study kind (registry name)
    params: dict
    chain: Chain
    root: str                        # output directory
    skip: tuple = ()                 # ids already complete
    threads: int = 1                 # numba threads inside a run
    study: str = ""                  # the study's name (for the records)
    d: int | None = None
    finest: MeshSpec | None = None   # the study's finest mesh (total errors)
    #: token of the study lock: before every level and every write the chain checks that the
    #: lock is still held with it (LeaseLostError otherwise)
    lease: str | None = None


@dataclass
class ChainResult:
    """What a chain returns, so that a client without the workers' file system can store it."""

    chain: int
    records: list = field(default_factory=list)
    states: dict = field(default_factory=dict)      # run id -> state
    errors: list = field(default_factory=list)


def execute_chain(task: ChainTask, callback=None) -> ChainResult:
    """Run the missing levels of one chain; write each result as it finishes.

    Level n is warm-started from the state of level n - 1 (in memory, or read from the store
    when that level was already complete; cold if it is missing). A level whose solve raises
    is recorded as an error file and the chain continues cold.

    Parameters
    ----------
    task : ChainTask
        The chain and where to store it.
    callback : callable, optional
        ``callback(record)`` after every finished run (used by the serial backend).

    Returns
    -------
    ChainResult
    """
    chain = task.chain
    store = RunStore(task.root)
    skip = set(task.skip)
    problem = get_problem(task.problem)
    out = ChainResult(chain=chain.index)
    if all(lv.id in skip for lv in chain.levels):
        return out
    with _Threads(task.threads):
        ctx = problem.setup(task.params, chain.seed)
        ctx.finest = task.finest
        warm = None
        for lv in chain.levels:
            if lv.id in skip:
                warm = None
                continue
            if warm is not None:
                kind = f"level {lv.index - 1} (in memory)"
            elif lv.index == 0:
                kind = "cold (first level)"
            else:
                warm = store.load_state(chain.levels[lv.index - 1].id)
                kind = f"level {lv.index - 1} (stored state)" if warm is not None else "cold (no stored state)"
            check_lease(task.root, task.lease)  # the study's process is gone: stop computing
            t0 = time.perf_counter()
            heartbeat.start_level(heartbeat.heartbeat_path(task.root, lv.id), chain.label, lv.index)
            try:
                metrics, info, state = problem.solve(ctx, lv, warm)
            except Exception as exc:  # keep the chain going; the run is retried on resume
                err = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(),
                       "chain": chain.index, "level": lv.index}
                store.write_error(lv.id, err)
                out.errors.append(dict(err, id=lv.id))
                warm = None
                continue
            finally:
                heartbeat.end_level()
            record = {
                "id": lv.id, "study": task.study, "problem": task.problem, "chain": chain.index,
                "chain_label": chain.label, "level": lv.index, "seed": chain.seed, "gamma": lv.gamma,
                "delta": lv.delta, "ratio": lv.ratio, "d": task.d, "mesh": lv.mesh.key(),
                "mesh_label": lv.mesh.label(), "metrics": metrics, "info": info, "warm_start": kind,
                "time_s": round(time.perf_counter() - t0, 4), "finished": time.time(), "host": socket.gethostname(),
                "pid": os.getpid(),
            }
            check_lease(task.root, task.lease)  # ... and never write into a directory nobody locks
            store.write(record, state)
            out.records.append(record)
            out.states[lv.id] = state
            warm = state
            if callback is not None:
                callback(record)
    return out


# ----------------------------------------------------------------------------- progress


class Progress:
    """A text progress display on stderr that ticks while levels run.

    ``[#####.....] 12/40 done, 2 running (5m03s, ETA ~9m) | h=delta/4 level 3: 2m10s, it 37``:
    the finished runs, the running ones with their elapsed time and optimizer iterations (from
    the heartbeats of :mod:`femot.studies.heartbeat`, whatever process runs them) and an
    estimate of the time left from the runs finished so far. On a terminal the line is redrawn
    in place once a second (a ticker thread, :meth:`start`); otherwise a line is printed when
    the counts change and, while a level runs, once a minute. ``quiet`` turns it off.
    """

    def __init__(self, total: int, done: int = 0, *, quiet: bool = False, stream=None, width: int = 30,
                 root=None, tick: float | None = None):
        self.total, self.done, self.running = int(total), int(done), 0
        self.done0 = self.done
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.root = root
        self.tick = (1.0 if self.tty else 60.0) if tick is None else float(tick)
        self.t0 = time.time()
        self._last: tuple | None = None
        self._printed = self.t0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _clock(seconds: float) -> str:
        s = int(seconds)
        return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"

    def line(self) -> str:
        frac = self.done / self.total if self.total else 1.0
        k = int(round(frac * self.width))
        now = time.time()
        text = (f"[{'#' * k}{'.' * (self.width - k)}] {self.done}/{self.total} done, {self.running} running "
                f"({self._clock(now - self.t0)}")
        finished = self.done - self.done0
        if finished > 0 and self.done < self.total:  # the runs of this call so far set the pace
            text += f", ETA ~{self._clock((now - self.t0) / finished * (self.total - self.done))}"
        text += ")"
        beats = heartbeat.running_levels(self.root) if self.root is not None and self.running else []
        for h in beats[:2]:
            it = f", it {h['nit']}" if h.get("nit") else ""
            text += f" | {h.get('chain', '?')} level {h.get('level', '?')}: {self._clock(now - h['started'])}{it}"
        return text

    def update(self, done: int | None = None, running: int | None = None) -> None:
        """Set the counters and redraw the display (unless ``quiet``).

        Parameters
        ----------
        done : int, optional
            Number of finished runs; None keeps the current value.
        running : int, optional
            Number of runs in progress; None keeps the current value.
        """
        with self._lock:
            if done is not None:
                self.done = int(done)
            if running is not None:
                self.running = int(running)
            self._draw(force=False)

    def _draw(self, force: bool) -> None:
        if self.quiet:
            return
        key = (self.done, self.running)
        if self.tty:
            self.stream.write("\r" + self.line() + "\033[K")
            self.stream.flush()
        elif key != self._last or force:
            self.stream.write(self.line() + "\n")
            self.stream.flush()
            self._printed = time.time()
        self._last = key

    def _run_ticker(self) -> None:
        while not self._stop.wait(self.tick):
            with self._lock:
                if self.running:
                    self._draw(force=True)

    def start(self) -> Progress:
        """Start the ticker thread (redraws every ``tick`` seconds while a level runs); returns self."""
        if not self.quiet and self._thread is None:
            self._thread = threading.Thread(target=self._run_ticker, name="femot-progress", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the ticker and end the line."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if not self.quiet and self.tty:
            self.stream.write("\n")
            self.stream.flush()


# ----------------------------------------------------------------------------- backends


def run_serial(tasks, progress: Progress, on_run_done=None) -> tuple[list, list]:
    """Chains one after the other in this process.

    Parameters
    ----------
    tasks : iterable of ChainTask
        The chains to run.
    progress : Progress
        Updated after every finished run.
    on_run_done : callable, optional
        ``on_run_done(record)`` after every finished run.

    Returns
    -------
    results : list of ChainResult
        The return values of :func:`execute_chain`, one per task.
    errors : list of str
        Always empty (errors inside a run are in the results).
    """
    results = []
    done = progress.done

    def cb(record):
        nonlocal done
        done += 1
        progress.update(done, 1)
        if on_run_done is not None:
            on_run_done(record)

    for t in tasks:
        progress.update(running=1)
        results.append(execute_chain(t, callback=cb))
    progress.update(running=0)
    return results, []


def _poll(futures, store, pending_ids, progress, n_workers, on_run_done, running_of, result_of, poll=0.25):
    """Wait for the futures, counting finished runs by their result files."""
    pending = set(pending_ids)
    base = progress.done
    results, left = [], list(futures)
    errors = []
    while True:
        newly = [rid for rid in pending if store.exists(rid)]
        for rid in newly:
            pending.discard(rid)
            if on_run_done is not None:
                rec = store.read(rid)
                if rec is not None:
                    on_run_done(rec)
        still = []
        for f in left:
            if f.done():
                try:
                    results.append(result_of(f))
                except Exception as exc:  # a worker died or the task raised outside a run
                    errors.append(f"{type(exc).__name__}: {exc}")
            else:
                still.append(f)
        left = still
        progress.update(base + len(pending_ids) - len(pending), min(running_of(left), n_workers))
        if not left:
            break
        time.sleep(poll)
    return results, errors


def process_pool(workers: int):
    """A ``ProcessPoolExecutor`` of ``workers`` spawned processes that die with this one.

    Parameters
    ----------
    workers : int
        Number of worker processes.

    Returns
    -------
    concurrent.futures.ProcessPoolExecutor
        Its workers run :func:`die_with_parent` for this process at start.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=die_with_parent, initargs=(os.getpid(),))


@_pool_doc
def run_process_pool(tasks, store, pending_ids, progress, workers: int, on_run_done=None):
    """A local pool of ``workers`` spawned processes (one chain per task).

    Parameters
    ----------
    %(pool_args)s
    workers : int
        Number of worker processes.
    %(on_run_done)s

    Returns
    -------
    %(pool_results)s
    errors : list of str
        One message per task that raised outside a run (e.g. a worker died).
    """
    with process_pool(workers) as ex:
        futs = [ex.submit(execute_chain, t) for t in tasks]
        try:
            return _poll(futs, store, pending_ids, progress, workers, on_run_done,
                         running_of=lambda fs: sum(1 for f in fs if f.running()),
                         result_of=lambda f: f.result())
        except BaseException:
            for f in futs:
                f.cancel()
            raise


def _dask():
    try:
        import distributed
    except ImportError:
        raise ImportError("the dask backend needs dask.distributed; install the optional extra: "
                          "pip install 'femot[dask]'") from None
    return distributed


def check_dask() -> None:
    """ImportError (with the install hint) if dask.distributed is missing."""
    import importlib.util

    if importlib.util.find_spec("distributed") is None:
        _dask()


def connect_dask(scheduler: str | None = None, n_workers: int | None = None,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT):
    """``(client, cluster)``: a client of the scheduler at ``scheduler``, or of a new LocalCluster.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running dask scheduler; None starts a LocalCluster.
    n_workers : int, optional
        Number of single-threaded worker processes of the LocalCluster (they die with this
        process); default 1.  Ignored with ``scheduler``.
    connect_timeout : float, optional
        Seconds to wait for ``scheduler``.  Default :data:`DEFAULT_CONNECT_TIMEOUT`.

    Returns
    -------
    client : distributed.Client
    cluster : distributed.LocalCluster or None
        None for a remote scheduler.

    Raises
    ------
    BackendError
        If the scheduler does not answer within ``connect_timeout``.
    ImportError
        If dask.distributed is not installed (extra ``femot[dask]``).
    """
    import logging

    distributed = _dask()
    if scheduler:
        try:
            client = distributed.Client(scheduler, timeout=connect_timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BackendError(f"cannot connect to the dask scheduler at {scheduler} within {connect_timeout:g} s "
                               f"({msg}); is it running and reachable?") from None
        return client, None
    cluster = distributed.LocalCluster(n_workers=int(n_workers or 1), threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=logging.ERROR)
    client = distributed.Client(cluster)
    try:
        client.register_plugin(_die_with_parent_plugin(os.getpid()))
    except Exception:  # pragma: no cover - older distributed: run it once on the current workers
        client.run(die_with_parent, os.getpid())
    return client, cluster


def _die_with_parent_plugin(parent_pid: int):
    """A dask WorkerPlugin running :func:`die_with_parent` on every worker of a local
    cluster, also on workers restarted by their nanny (defined here so that importing this
    module does not import distributed)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class DieWithParent(WorkerPlugin):
        name = "femot-die-with-parent"

        def __init__(self, pid):
            self.parent_pid = pid

        def setup(self, worker=None):
            die_with_parent(self.parent_pid)

    return DieWithParent(parent_pid)


@_pool_doc
def run_dask(tasks, store, pending_ids, progress, *, scheduler: str | None = None, n_workers: int | None = None,
             on_run_done=None, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT, client=None):
    """Run the chains on dask.distributed: a scheduler at an address or a LocalCluster.

    For a remote cluster the output directory should be on a file system the workers share
    (each level is then stored as it finishes); otherwise the results are stored here when
    their chain returns.

    Parameters
    ----------
    %(pool_args)s
    scheduler : str, optional
        Address of a dask scheduler; None starts a LocalCluster.
    n_workers : int, optional
        Workers of the LocalCluster (default 1).
    %(on_run_done)s
    connect_timeout : float, optional
        Seconds to wait for ``scheduler``.  Default :data:`DEFAULT_CONNECT_TIMEOUT`.
    client : tuple, optional
        An open ``(client, cluster)`` pair from :func:`connect_dask`, used instead of
        connecting; it is closed here.

    Returns
    -------
    %(pool_results)s
    errors : list of str
        One message per task that raised outside a run.

    Raises
    ------
    BackendError
        If the scheduler does not answer within ``connect_timeout``.
    """
    import uuid

    client, cluster = client if client is not None else connect_dask(scheduler, n_workers, connect_timeout)
    try:
        nw = max(1, len(client.scheduler_info().get("workers", {})))
        tag = uuid.uuid4().hex[:8]
        futs = [client.submit(execute_chain, t, key=f"femot-chain-{t.chain.index}-{tag}", pure=False)
                for t in tasks]
        try:
            results, errors = _poll(futs, store, pending_ids, progress, nw, on_run_done,
                                    running_of=lambda fs: len(fs), result_of=lambda f: f.result())
        except BaseException:
            for f in futs:
                f.cancel()
            raise
        # Results of workers that could not write here (no shared file system).
        for res in results:
            for rec in res.records:
                if not store.exists(rec["id"]):
                    store.write(rec, res.states.get(rec["id"]))
        return results, errors
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
