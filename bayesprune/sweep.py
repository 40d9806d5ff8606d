"""Resumable grids of runs: nothing lost on interruption, nothing computed twice.

Each finished run is one JSON file ``out_dir/runs/<config key>.json`` (config,
full history, final accuracy and sparsity, seconds, status), written to a
temporary file in the same folder and then renamed, so a reader sees either
nothing or a whole file, even if the process is killed with SIGKILL.
``out_dir/results.csv`` is rebuilt from those files after every run.

``executor`` is anything with the :class:`concurrent.futures.Executor`
interface (``submit`` returning futures): ``None`` runs in-process one after the
other; ``ProcessPoolExecutor`` uses local cores; Dask's
``Client.get_executor()`` or Ray's ``ray.util.concurrent.futures`` executor hand
the same sweep to a cluster.  Workers write their own run files, so the
run folder must be on storage every worker can see.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from concurrent.futures import Executor, Future, as_completed
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import pandas as pd

from .config import METHODS, RunConfig

RUN_FILE_VERSION = 1


# ------------------------------------------------------------------ grid
def grid(
    base: RunConfig,
    methods: Optional[Sequence[str]] = None,
    sparsities: Optional[Sequence[float]] = None,
    seeds: Optional[Sequence[int]] = None,
) -> list[RunConfig]:
    """methods x sparsities x seeds as configs; ``none`` gets one run per seed (sparsity 0)."""
    methods = list(methods) if methods is not None else list(METHODS)
    sparsities = list(sparsities) if sparsities is not None else [base.sparsity]
    seeds = list(seeds) if seeds is not None else [base.seed]
    out: dict[str, RunConfig] = {}
    for seed in seeds:
        for method in methods:
            for r in [0.0] if method == "none" else sparsities:
                cfg = base.replace(method=method, sparsity=float(r), seed=int(seed))
                out.setdefault(cfg.key(), cfg)
    return list(out.values())


# ------------------------------------------------------------------ files
def _runs_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "runs"


def atomic_write_json(path: str | Path, payload: Any) -> None:
    """Write JSON to a temp file beside ``path``, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_runs(out_dir: str | Path) -> dict[str, dict[str, Any]]:
    """``{key: run record}`` for every complete run file (temp files are never read)."""
    records: dict[str, dict[str, Any]] = {}
    folder = _runs_dir(out_dir)
    if not folder.is_dir():
        return records
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # not ours, or damaged by hand: treated as not finished
        if isinstance(rec, dict) and rec.get("key") == path.stem:
            records[path.stem] = rec
    return records


def results_table(records: dict[str, dict[str, Any]] | str | Path) -> pd.DataFrame:
    """One row per stored run: its config fields, status, accuracy, sparsity, seconds."""
    if not isinstance(records, dict):
        records = load_runs(records)
    rows = []
    for key, rec in records.items():
        row = {"key": key, "status": rec["status"], "error": rec.get("error", "")}
        row.update({k: v for k, v in rec["config"].items() if k != "fcn_hidden"})
        row["fcn_hidden"] = "x".join(str(h) for h in rec["config"].get("fcn_hidden", []))
        row.update(
            test_accuracy=rec.get("test_accuracy"),
            final_sparsity=rec.get("final_sparsity"),
            seconds=rec.get("seconds"),
            epochs_run=len(rec.get("history", [])),
        )
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        df = df.sort_values(["dataset", "model", "method", "sparsity", "seed"], kind="stable").reset_index(drop=True)
    return df


def histories_table(records: dict[str, dict[str, Any]] | str | Path) -> pd.DataFrame:
    """Long table of every stored history row, tagged with method/sparsity/seed/key."""
    if not isinstance(records, dict):
        records = load_runs(records)
    frames = []
    for key, rec in records.items():
        h = pd.DataFrame(rec.get("history", []))
        if len(h) == 0:
            continue
        c = rec["config"]
        h = h.assign(key=key, dataset=c["dataset"], model=c["model"], method=c["method"],
                     target_sparsity=c["sparsity"], seed=c["seed"])
        frames.append(h)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_results(out_dir: str | Path, records: Optional[dict[str, dict[str, Any]]] = None) -> pd.DataFrame:
    """Rebuild ``results.csv`` from the run files (or records already read), atomically."""
    df = results_table(records if records is not None else out_dir)
    path = Path(out_dir) / "results.csv"
    fd, tmp = tempfile.mkstemp(prefix=".results.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return df


# ------------------------------------------------------------------ one run
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
    atomic_write_json(_runs_dir(out_dir) / f"{cfg.key()}.json", record)
    return {k: record.get(k) for k in ("key", "status", "error", "test_accuracy", "final_sparsity", "seconds")}


class SequentialExecutor(Executor):
    """The default: runs each task in-process at submit time."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        fut: Future = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # pragma: no cover - run_one catches its own errors
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
    ``.stats`` on the returned frame's ``attrs`` holds completed/skipped/failed.
    """
    from tqdm.auto import tqdm

    log = log or (lambda msg: print(msg, file=sys.stderr))
    out_dir = Path(out_dir)
    _runs_dir(out_dir).mkdir(parents=True, exist_ok=True)
    unique: dict[str, RunConfig] = {}
    for cfg in configs:
        if not isinstance(cfg, RunConfig):
            raise TypeError(f"sweep() needs RunConfig objects, got {type(cfg).__name__}")
        unique.setdefault(cfg.key(), cfg)
    done = load_runs(out_dir)
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
            results = (executor.submit(run_one, c.to_dict(), str(out_dir), threads_per_run) for c in todo)
        else:
            results = as_completed([executor.submit(run_one, c.to_dict(), str(out_dir), threads_per_run) for c in todo])
        for fut in results:
            info = fut.result()
            if info["status"] == "ok":
                completed += 1
            else:
                failed += 1
                log(f"sweep: run {info['key']} failed: {info['error']}")
            bar.update(1)
            bar.set_postfix(ok=completed, failed=failed)
            path = _runs_dir(out_dir) / f"{info['key']}.json"
            records[info["key"]] = json.loads(path.read_text())
            write_results(out_dir, records)
    finally:
        bar.close()
    df = write_results(out_dir)
    df.attrs["stats"] = {
        "total": len(unique), "completed": completed, "skipped": skipped, "failed": failed,
        "failed_total": int((df["status"] == "failed").sum()) if len(df) else 0,
        "seconds": round(time.perf_counter() - t0, 3), "out": str(out_dir),
    }
    return df


# ------------------------------------------------------------------ CLI
def _parse_sparsity(text: str) -> float:
    """Accept fractions (0.9) or percents as in the paper (90)."""
    value = float(text)
    return value / 100.0 if value >= 1.0 else value


def add_sweep_parser(sub) -> None:
    from .cli import add_config_arguments

    p = sub.add_parser("sweep", help="run a resumable grid of methods x sparsities x seeds")
    add_config_arguments(p, skip=("method", "sparsity", "seed"))
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="methods (default: all five)")
    p.add_argument("--sparsities", nargs="+", type=_parse_sparsity, default=[0.25, 0.5, 0.75, 0.9, 0.99],
                   help="target sparsities as fractions or percents (default: 25 50 75 90 99)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds (default: 0)")
    p.add_argument("--out", required=True, help="sweep folder (runs/, results.csv, table1.md, plots)")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1: in-process)")
    p.add_argument("--retry-failed", action="store_true", help="run again the runs stored as failed")
    p.add_argument("--no-report", action="store_true", help="skip the Table 1 and plots at the end")


def run_sweep_cli(ns: argparse.Namespace) -> int:
    from .cli import config_from_args

    base = config_from_args(ns, skip=("method", "sparsity", "seed"))
    for r in ns.sparsities:
        base.replace(sparsity=r)  # validates each sparsity with the usual message
    if ns.workers < 1:
        raise ValueError(f"--workers={ns.workers} is invalid: allowed an integer >= 1")
    configs = grid(base, ns.methods, ns.sparsities, ns.seeds)
    executor = None
    threads = None
    if ns.workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        executor = ProcessPoolExecutor(max_workers=ns.workers, mp_context=multiprocessing.get_context("spawn"))
        threads = max(1, (os.cpu_count() or 1) // ns.workers)
    try:
        df = sweep(configs, ns.out, executor=executor, progress=True, retry_failed=ns.retry_failed,
                   threads_per_run=threads)
    finally:
        if executor is not None:
            executor.shutdown()
    stats = df.attrs["stats"]
    if not ns.no_report and len(df) and (df["status"] == "ok").any():
        from .report import write_report

        write_report(ns.out)
    print(json.dumps(stats))
    return 0
