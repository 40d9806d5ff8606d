"""Resumable grids of runs: nothing lost on interruption, nothing computed twice.

Each finished run is one JSON file ``out_dir/runs/<config key>.json`` (see
:mod:`bayesprune.runs.results`), written atomically, so a reader sees either nothing
or a whole file, even if the process is killed with SIGKILL.
``out_dir/results.csv`` is rebuilt from those files after every run.

One sweep at a time per folder: ``sweep`` holds ``out_dir/.sweep.lock``
(``fcntl.flock``, released by the operating system when the process ends, however
it ends; :mod:`bayesprune.runs.locks`); a second sweep on the same folder is refused
with the holder's pid.  No symbolic link inside the folder is ever followed: a
``runs/``, ``runs/quarantine/``, ``results.csv`` or lock that is a link is refused
(:class:`~bayesprune.runs.runio.OutputError`) before anything is written, and the
clean-up deletes only temporary files the package wrote (``.<name>.bayesprune-<host>-<pid>.*.tmp``)
whose writer is gone.  A write that fails (a full disk) stops the sweep with
:class:`SweepWriteError`, which names the file, what it held and the exit status
(2 before the first run, 1 after); the runs stored before it stay intact.

``executor`` is anything with the :class:`concurrent.futures.Executor`
interface (``submit`` returning futures): ``None`` runs in-process one after the
other; :class:`~bayesprune.runs.pool.WorkerPool` (``make_executor``, CLI ``--workers``)
or ``ProcessPoolExecutor`` use local cores; Dask's ``Client.get_executor()``
hands the same sweep to a cluster.  Workers write their own run files, so the
run folder must be on storage every worker can see.

A run whose worker died (killed, out of memory, lost with its machine) is stored
as failed with ``"worker_lost": true`` and the error, and is run again by the next
sweep on the folder without ``--retry-failed``: it says nothing about its config.
If the sweep is interrupted (Ctrl-C, SIGTERM, an exception), the futures it
submitted are cancelled; the caller stops its executor (:func:`stop_executor`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import traceback
import uuid
from concurrent.futures import Executor, Future, as_completed
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import pandas as pd

from ..core.config import PAPER_METHODS, RunConfig
from .fileio import atomic_write_json, is_real_dir, parse_temp_name, temp_writer_gone
from .locks import FolderLock, LockError
from .results import RUN_FILE_VERSION, load_run, load_runs, run_path, runs_dir, write_results
from .runio import OutputError

LOCK_NAME = ".sweep.lock"


class SweepBusyError(OutputError):
    """Another sweep holds the folder's lock; the message names its pid and host."""


class SweepWriteError(Exception):
    """A file of the sweep could not be written (a full disk ...): the message names it and what it held.

    ``exit_code`` is 2 if no run had started, 1 after (the CLI's exit status).
    """

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class RunStoreError(RuntimeError):
    """``run_one`` trained its run but could not store its file (picklable: it comes back from a worker)."""

    def __init__(self, path: str, reason: str):
        super().__init__(path, reason)
        self.path, self.reason = path, reason

    def __str__(self) -> str:
        return f"could not write {self.path}: {self.reason}"


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _write_failed(path: Any, what: str, exc: OSError, started: bool) -> SweepWriteError:
    where = exc.filename or path
    tail = ("the runs stored before are intact; free some space and run the sweep again: it skips the finished "
            "runs" if started else "no run had started")
    return SweepWriteError(f"could not write {where} ({what}): {_reason(exc)}; {tail}", 1 if started else 2)


# ------------------------------------------------------------------ grid
def grid(
    base: RunConfig,
    methods: Optional[Sequence[str]] = None,
    sparsities: Optional[Sequence[float]] = None,
    seeds: Optional[Sequence[int]] = None,
) -> list[RunConfig]:
    """methods x sparsities x seeds as configs; ``none`` gets one run per seed (sparsity 0).

    ``methods`` defaults to the paper's five (unpruned, random, magnitude and their Bayes twins).
    """
    methods = list(methods) if methods is not None else list(PAPER_METHODS)
    sparsities = list(sparsities) if sparsities is not None else [base.sparsity]
    seeds = list(seeds) if seeds is not None else [base.seed]
    out: dict[str, RunConfig] = {}
    for seed in seeds:
        for method in methods:
            for r in [0.0] if method == "none" else sparsities:
                cfg = base.replace(method=method, sparsity=float(r), seed=int(seed))
                out.setdefault(cfg.key(), cfg)
    return list(out.values())


# ------------------------------------------------------------------ one run
def _failure_record(cfg: RunConfig, error: str, **extra: Any) -> dict[str, Any]:
    return {"version": RUN_FILE_VERSION, "key": cfg.key(), "config": cfg.to_dict(), "status": "failed",
            "error": error, "history": [], **extra}


def run_one(config: dict[str, Any], out_dir: str, threads: Optional[int] = None,
            attempt: Optional[str] = None) -> dict[str, Any]:
    """Train one config and store its record; failures are stored, not raised.

    A module-level function taking plain data, so any executor can pickle it.
    ``attempt`` is unused: ``sweep`` passes a fresh id, so that an executor that caches
    calls by their arguments (Dask's default ``pure=True``) never answers a new
    attempt with an old failure (a ``KilledWorker``) instead of running it.
    """
    import torch

    from ..engine.training import TrainingDiverged, train

    if threads:
        torch.set_num_threads(threads)
    _thread_lock_for_progress_bars()
    cfg = RunConfig.from_dict(config)
    t0 = time.perf_counter()
    record: dict[str, Any] = {"version": RUN_FILE_VERSION, "key": cfg.key(), "config": cfg.to_dict()}
    try:
        res = train(cfg, progress=False)
        record.update(
            status="ok", error="",
            test_accuracy=res.test_accuracy, test_loss=res.test_loss,
            final_sparsity=res.final_sparsity, layer_sparsity=res.layer_sparsity,
            history=res.history.to_dict(orient="records"),
        )
    except TrainingDiverged as exc:
        record.update(status="failed", error=str(exc), history=exc.history.to_dict(orient="records"))
    except Exception as exc:  # bad data, out of memory ...: recorded so the sweep goes on
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc(limit=5), history=[])
    record["seconds"] = time.perf_counter() - t0
    path = run_path(out_dir, cfg.key())
    if not is_real_dir(path.parent):
        raise RunStoreError(str(path), f"{path.parent} is no longer a real folder (a symbolic link?)")
    try:
        atomic_write_json(path, record)
    except OSError as exc:
        raise RunStoreError(str(exc.filename or path), _reason(exc)) from None
    return {k: record.get(k) for k in ("key", "status", "error", "test_accuracy", "final_sparsity", "seconds")}


def _thread_lock_for_progress_bars() -> None:
    """In a worker process, give tqdm a thread lock instead of its multiprocessing one.

    tqdm creates a named semaphore even for a disabled bar and registers it with the
    parent's resource tracker; a worker ended by SIGTERM/SIGKILL (Ctrl-C of the sweep)
    never unregisters it, and the tracker then warns of a "leaked semaphore" at exit.
    """
    import multiprocessing

    from tqdm import tqdm

    if multiprocessing.parent_process() is not None and getattr(tqdm, "_lock", None) is None:
        tqdm.set_lock(threading.RLock())


class SequentialExecutor(Executor):
    """The default: runs each task in-process at submit time."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        fut: Future = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except Exception as exc:  # pragma: no cover - run_one catches its own errors
            fut.set_exception(exc)
        return fut


# ------------------------------------------------------------------ one sweep per folder
_held: dict[str, int] = {}  # real path of a folder this process holds -> the holding thread


def _refuse_links(out: Path) -> None:
    """Refuse a sweep folder where the package would write through a symbolic link (or into a non-folder)."""
    if os.path.lexists(out) and not is_real_dir(out):
        what = "a symbolic link" if out.is_symlink() else "not a folder"
        raise OutputError(f"--out {out} is {what}. Give the path of a real folder for the sweep.")
    runs = runs_dir(out)
    for path, kind in ((runs, "folder"), (runs / "quarantine", "folder"), (out / "results.csv", "file"),
                       (out / LOCK_NAME, "file")):
        if not os.path.lexists(path):
            continue
        if path.is_symlink():
            raise OutputError(f"{path} is a symbolic link; a sweep never writes through one. Remove the link (or "
                              "give another --out).")
        if (kind == "folder") != path.is_dir():
            raise OutputError(f"{path} is not a {kind}; the sweep keeps its {'run files' if path == runs else path.name} "
                              "there. Move it away (or give another --out).")


@contextlib.contextmanager
def sweep_lock(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold ``out_dir/.sweep.lock`` (creating ``out_dir`` if needed) or raise :class:`SweepBusyError`.

    The lock is ``fcntl.flock``: the operating system releases it when the process
    ends, even by SIGKILL, so a killed sweep never leaves a stale lock.  The same
    thread may take it again (the CLI holds it around ``sweep``, which takes it too).
    A symbolic link at ``out_dir``, ``runs/``, ``runs/quarantine``, ``results.csv`` or the
    lock is refused (:class:`OutputError`) before anything is written.
    """
    out = Path(out_dir)
    real = os.path.realpath(out)
    if _held.get(real) == threading.get_ident():  # this thread holds it already
        _refuse_links(out)
        yield out
        return
    _refuse_links(out)
    try:
        runs_dir(out).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the sweep folder {out}: {exc.strerror or exc}; no run had started"
                          ) from None
    _refuse_links(out)  # again: it may have changed meanwhile

    def busy(holder: str) -> Exception:
        return SweepBusyError(
            f"another sweep ({holder}) is running on {out} (it holds {out / LOCK_NAME}); wait for it to "
            f"finish or stop it, then run this one again: it skips the runs that one finished")

    try:
        lock = FolderLock.acquire(out / LOCK_NAME, f"the sweep in {out}", busy)
    except LockError as exc:
        raise OutputError(f"{exc}; no run had started") from None
    _held[real] = threading.get_ident()  # (another thread's flock on its own open file would have failed)
    try:
        yield out
    finally:
        _held.pop(real, None)
        lock.release()


def _remove_temp_files(out_dir: Path) -> int:
    """Delete the temp files killed writers of ours left in ``runs/``: only names the package makes
    (:func:`~bayesprune.runs.fileio.temp_prefix`), only regular files, only once their writer is gone."""
    n = 0
    folder = runs_dir(out_dir)
    for p in folder.iterdir():
        if parse_temp_name(p.name) is None or not temp_writer_gone(p.name):
            continue
        if not p.is_symlink() and p.is_file():
            p.unlink(missing_ok=True)
            n += 1
    return n


# ------------------------------------------------------------------ sweep
def _needs_run(rec: Optional[dict[str, Any]], retry_failed: bool) -> bool:
    if rec is None or rec["status"] == "ok":
        return rec is None
    return retry_failed or bool(rec.get("worker_lost"))


def sweep(
    configs: Iterable[RunConfig],
    out_dir: str | Path,
    executor: Optional[Executor] = None,
    progress: bool = True,
    retry_failed: bool = False,
    threads_per_run: Optional[int] = None,
    log=None,
) -> pd.DataFrame:
    """Run every config not already stored under ``out_dir``; return the results table of ``configs``.

    The returned table holds one row per requested config (stored before or trained now), never the other
    runs the folder may hold (an earlier sweep's extra sparsities or settings): a notebook that sweeps the
    same folder twice with different grids gets back what it asked for.  ``results.csv`` still lists every
    stored run.  Finished runs are skipped (failed ones too, unless ``retry_failed``; runs whose
    worker died are always run again).  ``.attrs["stats"]`` on the returned frame holds
    total/completed/skipped/failed (this call) and failed_total (stored in the folder).
    Raises :class:`SweepBusyError` if another sweep is running on ``out_dir``.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    out_dir = Path(out_dir)
    unique: dict[str, RunConfig] = {}
    for cfg in configs:
        if not isinstance(cfg, RunConfig):
            raise TypeError(f"sweep() needs RunConfig objects, got {type(cfg).__name__}")
        unique.setdefault(cfg.key(), cfg)
    with sweep_lock(out_dir):
        try:
            stale = _remove_temp_files(out_dir)
        except OSError as exc:
            raise _write_failed(runs_dir(out_dir), "removing temporary files left by a killed run", exc,
                                started=False) from None
        if stale:
            log(f"sweep: removed {stale} temporary file(s) left in {runs_dir(out_dir)} by a killed run")
        return _sweep_locked(unique, out_dir, executor, progress, retry_failed, threads_per_run, log)


def _sweep_locked(unique, out_dir, executor, progress, retry_failed, threads_per_run, log) -> pd.DataFrame:
    from tqdm.auto import tqdm

    done = load_runs(out_dir, log=log, quarantine=True)
    records = dict(done)
    todo = [cfg for key, cfg in unique.items() if _needs_run(done.get(key), retry_failed)]
    skipped = len(unique) - len(todo)
    log(f"sweep: {len(unique)} runs, {skipped} already finished (skipped), {len(todo)} to run -> {out_dir}")
    t0 = time.perf_counter()
    completed = failed = 0
    executor = executor or SequentialExecutor()
    bar = tqdm(total=len(todo), desc="sweep", unit="run", disable=not progress)
    submitted: list[Future] = []
    try:
        if isinstance(executor, SequentialExecutor):
            results: Iterable = ((executor.submit(run_one, c.to_dict(), str(out_dir), threads_per_run), c)
                                 for c in todo)
        else:
            by_future = {}
            for c in todo:
                fut = executor.submit(run_one, c.to_dict(), str(out_dir), threads_per_run, uuid.uuid4().hex)
                by_future[fut] = c
                submitted.append(fut)
            results = ((f, by_future[f]) for f in as_completed(by_future))
        for fut, cfg in results:
            try:
                info = fut.result()
            except RunStoreError as exc:  # trained, but its file could not be written: the disk is full
                raise SweepWriteError(f"could not write {exc.path} (the run file of run {cfg.key()}): {exc.reason}; "
                                      "the runs stored before are intact; free some space and run the sweep again: "
                                      "it skips the finished runs", 1) from None
            except Exception as exc:  # the worker itself failed (died, lost): record it, go on
                info = _record_lost_run(out_dir, cfg, exc)
            if info["status"] == "ok":
                completed += 1
            else:
                failed += 1
                log(f"sweep: run {info['key']} failed: {info['error']}")
            bar.update(1)
            bar.set_postfix(ok=completed, failed=failed)
            rec = load_run(out_dir, info["key"])
            if rec is not None:
                records[info["key"]] = rec
            _write_table(out_dir, records, started=True)
    finally:
        bar.close()
        for fut in submitted:  # interrupted: nothing of ours stays queued
            fut.cancel()
    everything = _write_table(out_dir, records, started=bool(todo))
    failed_total = int((everything["status"] == "failed").sum()) if len(everything) else 0
    df = everything[everything["key"].isin(unique)].reset_index(drop=True) if len(everything) else everything
    if failed_total:
        log(f"sweep: {failed_total} stored run(s) failed; see the error column of {out_dir / 'results.csv'} "
            "(--retry-failed / retry_failed=True runs them again)")
    df.attrs["stats"] = {
        "total": len(unique), "completed": completed, "skipped": skipped, "failed": failed,
        "failed_total": failed_total, "seconds": round(time.perf_counter() - t0, 3), "out": str(out_dir),
    }
    return df


def _write_table(out_dir: Path, records: dict[str, dict[str, Any]], started: bool) -> pd.DataFrame:
    try:
        return write_results(out_dir, records)
    except OSError as exc:
        raise _write_failed(Path(out_dir) / "results.csv", "the results table", exc, started) from None


def _record_lost_run(out_dir: Path, cfg: RunConfig, exc: BaseException) -> dict[str, Any]:
    """Store a run whose worker failed (unless the worker had stored it before it went)."""
    rec = load_run(out_dir, cfg.key())
    if rec is not None and rec["status"] == "ok":
        return {"key": cfg.key(), "status": "ok", "error": ""}
    error = f"{type(exc).__name__}: {exc}"
    try:
        atomic_write_json(run_path(out_dir, cfg.key()), _failure_record(cfg, error, worker_lost=True))
    except OSError as write_exc:
        raise _write_failed(run_path(out_dir, cfg.key()), f"the record of run {cfg.key()}, whose worker was lost",
                            write_exc, started=True) from None
    return {"key": cfg.key(), "status": "failed", "error": error}


# ------------------------------------------------------------------ executors
def make_executor(workers: int) -> Optional[Executor]:
    """None (in-process) for one worker, else a :class:`~bayesprune.runs.pool.WorkerPool` of ``workers`` processes."""
    if workers < 1:
        raise ValueError(f"workers={workers} is invalid: allowed an integer >= 1")
    if workers == 1:
        return None
    from .pool import WorkerPool

    return WorkerPool(workers)


def stop_executor(executor: Optional[Executor], now: bool) -> None:
    """Stop an executor: ``now`` ends its workers (queued runs cancelled), else lets it finish and close."""
    if executor is None:
        return
    if now and hasattr(executor, "terminate"):
        executor.terminate()
        return
    try:
        executor.shutdown(wait=not now, cancel_futures=now)
    except TypeError:  # executors without cancel_futures (Dask's ClientExecutor)
        executor.shutdown(wait=not now)


def sweep_local(configs: Iterable[RunConfig], out_dir: str | Path, workers: int = 1,
                threads: Optional[int] = None, **kwargs: Any) -> pd.DataFrame:
    """:func:`sweep` on ``workers`` local processes, stopped at once (workers ended) on any interrupt."""
    executor = make_executor(workers)
    try:
        df = sweep(configs, out_dir, executor=executor, threads_per_run=threads or default_threads(workers), **kwargs)
    except BaseException:
        stop_executor(executor, now=True)
        raise
    stop_executor(executor, now=False)
    return df


def default_threads(workers: int) -> int:
    """Threads per run so that ``workers`` runs share this machine's cores."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))
