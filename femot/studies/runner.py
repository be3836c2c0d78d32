"""``run_study``: validate, skip what is done, run the rest on a backend, report."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from femot.studies.config import Study, load_config
from femot.studies.execution import Progress, run_dask, run_process_pool, run_serial
from femot.studies.report import fit_rates, format_table, table_rows, write_outputs
from femot.studies.store import RunStore, atomic_write_text

__all__ = ["run_study", "StudyOutcome", "backend_of"]


@dataclass
class StudyOutcome:
    """What a call of :func:`run_study` did and found.

    ``executed``: ids computed by this call; ``previously_complete``: ids found complete
    before it; ``failed``: ids whose run raised (retried on the next call); ``rows``, ``rates``:
    the table and fitted rates over all complete runs; ``files``: written outputs.
    """

    study: Study
    root: Path
    backend: str
    executed: list = field(default_factory=list)
    previously_complete: list = field(default_factory=list)
    failed: list = field(default_factory=list)
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
    if scheduler:
        return "dask"
    if dask_local:
        return "dask-local"
    return "process" if workers > 1 else "serial"


def _manifest(study: Study, store: RunStore, backend: str, status: str, counts: dict, errors=()) -> dict:
    err_ids = {e["id"] for e in errors if "id" in e}
    runs = []
    for ch in study.chains:
        for lv in ch.levels:
            st = "done" if store.exists(lv.id) else ("error" if lv.id in err_ids or store.error_path(lv.id).exists()
                                                     else "pending")
            runs.append({"id": lv.id, "chain": ch.index, "chain_label": ch.label, "seed": ch.seed,
                         "level": lv.index, "gamma": lv.gamma, "delta": lv.delta, "ratio": lv.ratio,
                         "mesh": lv.mesh.key(), "status": st, "result": f"runs/{lv.id}.json"})
    return {"femot_study": 1, "study": study.summary(), "config": study.raw, "source": study.source,
            "status": status, "backend": backend, "updated": time.strftime("%Y-%m-%d %H:%M:%S"),
            "counts": dict(counts, total=len(runs), done=sum(r["status"] == "done" for r in runs)), "runs": runs}


def run_study(config, out, *, workers: int = 1, dask_local: int | None = None, scheduler: str | None = None,
              quiet: bool = False, plots: bool = True, on_run_done=None, stream=None, progress_stream=None
              ) -> StudyOutcome:
    """Run (or resume) a convergence study.

    Parameters
    ----------
    config : path of a TOML file or a validated :class:`~femot.studies.config.Study`.
    out : output directory (created); results already there are reused (resume).
    workers : > 1 runs the chains on a local process pool of that size.
    dask_local : start a dask LocalCluster with this many workers (optional extra femot[dask]).
    scheduler : address of an existing dask scheduler.
    quiet : no progress bar and no table on ``stream``.
    on_run_done : ``callback(record)`` after each finished run (serial: right after it is
        written; other backends: when the main process sees its file).
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
    root = Path(out)
    store = RunStore(root)
    ids = [lv.id for lv in study.runs]
    done_before = store.complete_ids(ids)
    outcome = StudyOutcome(study=study, root=root, backend=backend, previously_complete=sorted(done_before))
    pending_chains = [ch for ch in study.chains if any(lv.id not in done_before for lv in ch.levels)]
    pending_ids = [lv.id for ch in pending_chains for lv in ch.levels if lv.id not in done_before]

    if not pending_ids:
        outcome.nothing_to_do = True
        say(f"study {study.name!r}: all {len(ids)} runs are already complete in {root}; nothing to run.")
    else:
        root.mkdir(parents=True, exist_ok=True)
        if study.source and Path(study.source).is_file():
            atomic_write_text(root / "config.toml", Path(study.source).read_text())
        say(f"study {study.name!r} ({study.problem}): {len(ids)} runs in {len(study.chains)} chain(s) of "
            f"{len(study.gammas)} levels; {len(done_before)} already complete, {len(pending_ids)} to run "
            f"[{backend}{'' if backend == 'serial' else ', ' + str(scheduler or dask_local or workers)}]")
        store.write_manifest(_manifest(study, store, backend, "running", {}))
        tasks = [{"problem": study.problem, "params": study.params, "chain": ch, "root": str(root.resolve()),
                  "skip": sorted(lv.id for lv in ch.levels if lv.id in done_before), "threads": study.threads,
                  "study": study.name, "d": study.d} for ch in pending_chains]
        progress = Progress(len(ids), len(done_before), quiet=quiet, stream=progress_stream)
        progress.update()
        try:
            if backend == "serial":
                results, errors = run_serial(tasks, progress, on_run_done)
            elif backend == "process":
                results, errors = run_process_pool(tasks, store, pending_ids, progress, workers, on_run_done)
            else:
                results, errors = run_dask(tasks, store, pending_ids, progress, scheduler=scheduler,
                                           n_workers=dask_local, on_run_done=on_run_done)
        except BaseException:
            progress.close()
            store.write_manifest(_manifest(study, store, backend, "interrupted", {}))
            raise
        progress.close()
        outcome.executed = [rid for rid in pending_ids if store.exists(rid)]
        run_errors = [e for res in results for e in res["errors"]]
        outcome.failed = [e["id"] for e in run_errors]
        outcome.errors = run_errors + [{"error": e} for e in errors]
        for e in outcome.errors:
            where = f"chain {e['chain']}, level {e['level']}: " if "chain" in e else ""
            print(f"femot study: run failed: {where}{e['error']}", file=sys.stderr)

    records = {rid: rec for rid in ids if (rec := store.read(rid)) is not None}
    outcome.rows = table_rows(study, records)
    outcome.rates = fit_rates(study, outcome.rows)
    status = "complete" if len(records) == len(ids) else "incomplete"
    from femot.studies.problems import get_problem

    if not outcome.nothing_to_do or not (root / "report.md").exists():
        store.write_manifest(_manifest(study, store, backend, status,
                                       {"executed": len(outcome.executed), "failed": len(outcome.failed)},
                                       outcome.errors))
        outcome.files = write_outputs(study, root, outcome.rows, outcome.rates, plots=plots,
                                      problem=get_problem(study.problem),
                                      runs_info={"failed": len(outcome.failed)})
    if outcome.rows:
        say("")
        say(outcome.table())
    if not outcome.nothing_to_do:
        say("")
        say(f"{len(outcome.executed)} run(s) executed, {len(outcome.previously_complete)} reused, "
            f"{len(outcome.failed)} failed; {len(records)}/{len(ids)} complete. Results in {root}"
            + (f": report.md, results.csv, results.md, figures/" if outcome.files else ""))
    unconverged = [r for r in outcome.rows if not r["success"]]
    if unconverged:
        say(f"note: {len(unconverged)} run(s) did not report solver success (column ok); see report.md")
    outcome.wall_time_s = time.perf_counter() - t0
    return outcome
