"""Resumable grids of runs: nothing lost on interruption, nothing computed twice.

Each finished run is one JSON file ``out_dir/runs/<config key>.json`` (see
:mod:`bayesprune.results`), written atomically, so a reader sees either nothing
or a whole file, even if the process is killed with SIGKILL.
``out_dir/results.csv`` is rebuilt from those files after every run.

``executor`` is anything with the :class:`concurrent.futures.Executor`
interface (``submit`` returning futures): ``None`` runs in-process one after the
other; ``ProcessPoolExecutor`` uses local cores; Dask's
``Client.get_executor()`` or Ray's ``ray.util.concurrent.futures`` executor hand
the same sweep to a cluster.  Workers write their own run files, so the
run folder must be on storage every worker can see.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from concurrent.futures import Executor, Future, as_completed
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import pandas as pd

from .config import PAPER_METHODS, RunConfig
from .fileio import atomic_write_json
from .results import RUN_FILE_VERSION, load_run, load_runs, run_path, runs_dir, write_results


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


def run_one(config: dict[str, Any], out_dir: str, threads: Optional[int] = None) -> dict[str, Any]:
    """Train one config and store its record; failures are stored, not raised.

    A module-level function taking plain data, so any executor can pickle it.
    """
    import torch

    from .training import TrainingDiverged, train

    if threads:
        torch.set_num_threads(threads)
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
    atomic_write_json(run_path(out_dir, cfg.key()), record)
    return {k: record.get(k) for k in ("key", "status", "error", "test_accuracy", "final_sparsity", "seconds")}


class SequentialExecutor(Executor):
    """The default: runs each task in-process at submit time."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        fut: Future = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except Exception as exc:  # pragma: no cover - run_one catches its own errors
            fut.set_exception(exc)
        return fut


# ------------------------------------------------------------------ sweep
def sweep(
    configs: Iterable[RunConfig],
    out_dir: str | Path,
    executor: Optional[Executor] = None,
    progress: bool = True,
    retry_failed: bool = False,
    threads_per_run: Optional[int] = None,
    log=None,
) -> pd.DataFrame:
    """Run every config not already stored under ``out_dir``; return the results table.

    Finished runs are skipped (failed ones too, unless ``retry_failed``);
    ``.attrs["stats"]`` on the returned frame holds completed/skipped/failed.
    """
    from tqdm.auto import tqdm

    log = log or (lambda msg: print(msg, file=sys.stderr))
    out_dir = Path(out_dir)
    runs_dir(out_dir).mkdir(parents=True, exist_ok=True)
    unique: dict[str, RunConfig] = {}
    for cfg in configs:
        if not isinstance(cfg, RunConfig):
            raise TypeError(f"sweep() needs RunConfig objects, got {type(cfg).__name__}")
        unique.setdefault(cfg.key(), cfg)
    done = load_runs(out_dir, log=log, quarantine=True)
    records = dict(done)
    todo, skipped = [], 0
    for key, cfg in unique.items():
        rec = done.get(key)
        if rec is not None and (rec["status"] == "ok" or not retry_failed):
            skipped += 1
        else:
            todo.append(cfg)
    log(f"sweep: {len(unique)} runs, {skipped} already finished (skipped), {len(todo)} to run -> {out_dir}")
    t0 = time.perf_counter()
    completed = failed = 0
    executor = executor or SequentialExecutor()
    bar = tqdm(total=len(todo), desc="sweep", unit="run", disable=not progress)
    try:
        if isinstance(executor, SequentialExecutor):
            futures = ((executor.submit(run_one, c.to_dict(), str(out_dir), threads_per_run), c) for c in todo)
            results: Iterable = futures
        else:
            by_future = {executor.submit(run_one, c.to_dict(), str(out_dir), threads_per_run): c for c in todo}
            results = ((f, by_future[f]) for f in as_completed(by_future))
        for fut, cfg in results:
            try:
                info = fut.result()
            except Exception as exc:  # the worker itself failed (died, lost): record it, go on
                info = {"key": cfg.key(), "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
                atomic_write_json(run_path(out_dir, cfg.key()), _failure_record(cfg, info["error"]))
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
            write_results(out_dir, records)
    finally:
        bar.close()
    df = write_results(out_dir, records)
    df.attrs["stats"] = {
        "total": len(unique), "completed": completed, "skipped": skipped, "failed": failed,
        "failed_total": int((df["status"] == "failed").sum()) if len(df) else 0,
        "seconds": round(time.perf_counter() - t0, 3), "out": str(out_dir),
    }
    return df


def make_executor(workers: int) -> Optional[Executor]:
    """None (in-process) for one worker, else a pool of ``workers`` local processes."""
    if workers < 1:
        raise ValueError(f"workers={workers} is invalid: allowed an integer >= 1")
    if workers == 1:
        return None
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def default_threads(workers: int) -> int:
    """Threads per run so that ``workers`` runs share this machine's cores."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))
