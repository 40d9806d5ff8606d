"""A sweep's stored runs: one JSON file per run, and the tables read from them.

``<sweep>/runs/<config key>.json`` holds one run: ``version``, ``key``, the full
``config``, ``status`` (``ok``/``failed``), ``error``, final accuracy and sparsity,
the full ``history`` and ``seconds``.  Files are written atomically
(:mod:`bayesprune.runs.fileio`), as standard JSON (NaN is ``null``).

Reading is strict: a file whose version is not :data:`RUN_FILE_VERSION`, whose
key does not match its config, whose config does not validate, or whose fields
have the wrong types is *reported*, by its path, and never mixed into a table.
``sweep`` also moves such files aside (``runs/quarantine/<name>``, never
overwriting an earlier one) so that their runs are computed again; a symbolic link
is reported and left where it is (never followed, never moved).  Every path
the package derives from a record comes from its validated config (the key is a
hash, method names are checked against :data:`~bayesprune.core.config.METHODS`), so a
crafted file cannot direct a write outside the sweep folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Optional

import pandas as pd

from ..core.config import RunConfig
from .fileio import atomic_write_json, atomic_write_text

RUN_FILE_VERSION = 2
Log = Callable[[str], None]


def runs_dir(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / "runs"


def run_path(out_dir: str | os.PathLike, key: str) -> Path:
    return runs_dir(out_dir) / f"{key}.json"


def check_record(path: Path, rec: Any) -> Optional[str]:
    """Why this record must not be used (None if it is good)."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    version = rec.get("version")
    if version != RUN_FILE_VERSION:
        hint = " (written with the old key scheme: bayesprune.runs.results.migrate() re-keys it)" if version == 1 else ""
        return f"run file version {version!r}, expected {RUN_FILE_VERSION}{hint}"
    try:
        cfg = RunConfig.from_dict(rec["config"])
    except (KeyError, TypeError, ValueError) as exc:
        return f"its config is invalid: {exc}"
    if rec.get("key") != path.stem or cfg.key() != path.stem:
        return f"its key {rec.get('key')!r} / config key {cfg.key()!r} do not match the file name"
    if rec.get("status") not in ("ok", "failed"):
        return f"unknown status {rec.get('status')!r}"
    history = rec.get("history", [])
    if not isinstance(history, list) or not all(isinstance(row, dict) for row in history):
        return "its history is not a list of rows"
    for name in ("test_accuracy", "test_loss", "final_sparsity", "seconds"):
        value = rec.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"its {name} {value!r} is not a number"
    if not isinstance(rec.get("error", ""), str):
        return "its error is not a string"
    return None


def _read(path: Path) -> Any:
    """A run file's JSON; a symbolic link raises OSError (ELOOP) instead of being followed."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fh:
        return json.loads(fh.read().decode())


#: What reading a damaged run file can raise (RecursionError: absurdly nested JSON).
_READ_ERRORS = (OSError, UnicodeDecodeError, ValueError, RecursionError)


def _quarantine(folder: Path, path: Path) -> Path:
    """Move a bad run file to ``runs/quarantine/`` under a name not yet taken; returns where."""
    qdir = folder / "quarantine"
    if qdir.is_symlink() or (os.path.lexists(qdir) and not qdir.is_dir()):
        raise OSError(f"{qdir} is not a real folder; refusing to move {path} into it")
    qdir.mkdir(exist_ok=True)
    target = qdir / path.name
    n = 1
    while target.exists() or target.is_symlink():
        target = qdir / f"{path.name}.{n}"
        n += 1
    os.replace(path, target)
    return target


def load_runs(out_dir: str | os.PathLike, log: Optional[Log] = None, quarantine: bool = False) -> dict[str, dict]:
    """``{key: run record}`` for every good run file; bad ones are reported (and moved aside if asked)."""
    records: dict[str, dict[str, Any]] = {}
    folder = runs_dir(out_dir)
    if not folder.is_dir():
        return records
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith("."):  # a writer's temporary file
            continue
        linked = path.is_symlink() or not path.is_file()
        try:
            if linked:
                problem = "not a regular file (a symbolic link?); left where it is, not followed"
            else:
                rec = _read(path)
                problem = check_record(path, rec)
        except _READ_ERRORS as exc:
            problem = f"unreadable ({type(exc).__name__}: {str(exc)[:200]})"
        if problem is None:
            records[path.stem] = rec
            continue
        if quarantine and not linked and not problem.startswith("run file version 1"):
            try:
                problem += f"; moved to {_quarantine(folder, path)}, its run will be computed again"
            except OSError as exc:
                problem += f"; could not move it aside ({exc})"
        if log is not None:
            log(f"sweep: ignoring {path}: {problem}")
    return records


def load_run(out_dir: str | os.PathLike, key: str) -> Optional[dict[str, Any]]:
    """The good record stored for ``key``, or None (missing, unreadable or not valid)."""
    path = run_path(out_dir, key)
    try:
        rec = _read(path)
    except _READ_ERRORS:
        return None
    return rec if check_record(path, rec) is None else None


def migrate(out_dir: str | os.PathLike, log: Optional[Log] = print) -> int:
    """Re-key version-1 run files (every config field hashed) to version 2 (non-default fields); returns the count."""
    n = 0
    folder = runs_dir(out_dir)
    for path in sorted(folder.glob("*.json")):
        try:
            rec = _read(path)
            if not isinstance(rec, dict) or rec.get("version") != 1:
                continue
            cfg = RunConfig.from_dict(rec["config"])
        except (*_READ_ERRORS, KeyError, TypeError) as exc:
            if log is not None:
                log(f"migrate: skipping {path}: {type(exc).__name__}: {exc}")
            continue
        rec.update(version=RUN_FILE_VERSION, key=cfg.key(), config=cfg.to_dict())
        atomic_write_json(run_path(out_dir, cfg.key()), rec)
        if path != run_path(out_dir, cfg.key()):
            path.unlink()
        n += 1
    if log is not None:
        log(f"migrate: re-keyed {n} run files in {folder}")
    return n


def results_table(records: dict[str, dict[str, Any]] | str | os.PathLike) -> pd.DataFrame:
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


def histories_table(records: dict[str, dict[str, Any]] | str | os.PathLike) -> pd.DataFrame:
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


def write_results(out_dir: str | os.PathLike, records: Optional[dict[str, dict[str, Any]]] = None) -> pd.DataFrame:
    """Rebuild ``results.csv`` from the run files (or records already read), atomically."""
    df = results_table(records if records is not None else out_dir)
    atomic_write_text(Path(out_dir) / "results.csv", df.to_csv(index=False))
    return df
