"""``python -m bayesprune train|sweep``: flags generated from :class:`RunConfig`.

Every RunConfig field is a ``--flag`` (underscores become dashes); booleans get
``--flag/--no-flag``; optional integers accept ``none``.  Bad values exit with
status 2 and the validation message, no traceback; every input (config, data
files, the output location) is checked before the first epoch.  The last stdout
line is a one-line JSON summary, so scripts can ``tail -1``.

Exit status:

* 0: done.
* 1: a run did not succeed: it diverged, could not be saved (disk full, ...), or a
  sweep holds failed runs (its JSON line counts them).
* 2: bad input, named in the message: a flag, a data file, ``--out`` (a file, not
  writable, an existing run without ``--overwrite``), or a sweep folder that
  another sweep is using.
* 130 (Ctrl-C, SIGINT) / 143 (SIGTERM): stopped.  ``train --out`` saves the finished
  epochs first, marked ``interrupted``; a sweep cancels its queued runs and ends its
  workers within seconds (the finished runs are kept; run it again to go on).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import signal
import sys
import threading
from typing import Any, Optional, Sequence

from ..core.config import PAPER_METHODS, RunConfig, config_fields, field_choices, field_type, is_optional
from ..core.registry import methods


def _optional_int(text: str) -> Optional[int]:
    if text.lower() in ("none", "all", "null"):
        return None
    return int(text)


def add_config_arguments(parser: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    """One flag per RunConfig field; defaults are left unset so RunConfig's own apply."""
    for f in config_fields():
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else "$BAYESPRUNE_DATA or ./data"
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS,
                                  "help": f"{f.metadata['help']} (default: {default})"}
        kind = field_type(f.name)
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif "choices" in f.metadata:
            parser.add_argument(flag, choices=field_choices(f.name), **kwargs)
        elif kind is int and is_optional(f.name):
            parser.add_argument(flag, type=_optional_int, metavar="INT|none", **kwargs)
        elif kind in (int, float):
            parser.add_argument(flag, type=kind, **kwargs)
        elif kind == tuple[int, ...]:
            parser.add_argument(flag, type=int, nargs="+", metavar="WIDTH", **kwargs)
        else:
            parser.add_argument(flag, type=str, **kwargs)


def config_from_args(ns: argparse.Namespace, skip: Sequence[str] = ()) -> RunConfig:
    names = {f.name for f in config_fields()} - set(skip)
    values = {k: v for k, v in vars(ns).items() if k in names}
    if "fcn_hidden" in values:
        values["fcn_hidden"] = tuple(values["fcn_hidden"])
    return RunConfig(**values)


def parse_sparsity(text: str) -> float:
    """A fraction 0 <= r < 1 ('0.9'), or a percentage written with '%' ('90%'); anything else is an error."""
    try:
        value = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is invalid: allowed a fraction 0 <= r < 1 (0.9) or a percentage below 100 % (90%)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bayesprune",
        description="Bayes-factor-gated neural network pruning (Mathew & Rowe, 2023).",
    )
    sub = parser.add_subparsers(dest="command", metavar="{train,sweep}")
    p = sub.add_parser("train", help="train one run (default: digits, fcn, bayes-magnitude, 90%%)")
    add_config_arguments(p)
    p.add_argument("--out", default=None, help="write config.json, history.csv, summary.json, model.pt and "
                   "curves.png to this new folder (written atomically)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing run folder at --out, keeping the old one as <out>.prev")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")

    s = sub.add_parser("sweep", help="run a resumable grid of methods x sparsities x seeds")
    add_config_arguments(s, skip=("method", "sparsity", "seed"))
    s.add_argument("--methods", nargs="+", choices=methods(), default=list(PAPER_METHODS),
                   help="methods (default: the paper's five)")
    s.add_argument("--sparsities", nargs="+", type=parse_sparsity, default=[0.25, 0.5, 0.75, 0.9, 0.99],
                   help="target sparsities as fractions (0.9) or percentages with %% (90%%) (default: 0.25 0.5 "
                        "0.75 0.9 0.99)")
    s.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds (default: 0)")
    s.add_argument("--out", required=True, help="sweep folder (runs/, results.csv, table1.md, plots)")
    s.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1: in-process)")
    s.add_argument("--retry-failed", action="store_true", help="run again the runs stored as failed")
    s.add_argument("--no-report", action="store_true", help="skip the Table 1 and plots at the end")
    return parser


# ------------------------------------------------------------------ train
def _epoch_printer(cfg: RunConfig):
    width = len(str(cfg.epochs))

    def show(row: dict[str, Any]) -> None:
        gate = ""
        if row["gate_open"] or row["pruned"]:
            gate = (f"  step to {row['candidate_sparsity']:.3f}: log BF {row['log_bf']:+.1f} "
                    f"{'accepted' if row['pruned'] else 'refused'}")
            gate += " (final, forced)" if row["forced"] else ""
        elif row["candidate_sparsity"] == row["candidate_sparsity"]:  # a step was proposed: not NaN
            gate = "  gate closed"
        print(
            f"epoch {row['epoch']:>{width}}/{cfg.epochs}  train loss {row['train_loss']:.4f}  "
            f"test acc {row['test_acc']:.4f}  sparsity {row['sparsity']:.3f}{gate}  "
            f"[{row['seconds']:.2f}s]",
            flush=True,
        )

    return show


def run_train(ns: argparse.Namespace) -> int:
    from ..core.data import load_dataset
    from ..engine.training import TrainingDiverged, TrainingInterrupted, train
    from ..runs.runio import RunFolder

    cfg = config_from_args(ns)
    cfg.resolved_device()  # a missing cuda/mps is a bad input: exit 2 before anything else
    folder = RunFolder.open(ns.out, cfg, ns.overwrite) if ns.out else None
    try:
        load_dataset(cfg)  # files checked (and cached) before the first epoch
        callbacks = [] if ns.quiet else [_epoch_printer(cfg)]
        try:
            result = train(cfg, callbacks=callbacks, progress=False)
            code = 0
        except TrainingDiverged as exc:
            print(f"error: {exc}", file=sys.stderr)
            result, code = exc.result, 1
        except TrainingInterrupted as exc:
            print(f"interrupted: {exc}", file=sys.stderr)
            result, code = exc.result, _STOP.exit_code
        if folder is not None:
            code = _save(folder, result, code)
            folder = None
    finally:
        if folder is not None:  # an error before a result existed: nothing half-written is left
            folder.discard()
    print(json.dumps(result.summary()))
    return code


def _save(folder, result, code: int) -> int:
    """Commit the run folder; a run with no finished epoch is not saved (``--out`` stays as it was)."""
    from ..runs.runio import RunConflict

    if len(result.history) == 0:
        folder.discard()
        print(f"nothing saved: no epoch finished; {folder.out} is unchanged", file=sys.stderr)
        return code
    try:
        where = folder.commit(result)
    except RunConflict as exc:
        print(f"error: {exc}", file=sys.stderr)
        return code or 1
    except OSError as exc:
        print(f"error: could not save the run to {folder.out}: {exc.strerror or exc}"
              f"{f' ({exc.filename})' if exc.filename else ''}. Nothing was changed there; free some space or "
              "choose another --out and run it again.", file=sys.stderr)
        return code or 1
    kept = f"; the previous run is kept as {folder.prev}" if folder.overwrite and folder.prev.is_dir() else ""
    print(f"saved {result.status} run ({len(result.history)} epochs) to {where}{kept}", file=sys.stderr)
    return code


# ------------------------------------------------------------------ sweep
def run_sweep(ns: argparse.Namespace) -> int:
    from ..core.data import load_dataset
    from ..runs.sweeps import default_threads, grid, make_executor, stop_executor, sweep, sweep_lock

    base = config_from_args(ns, skip=("method", "sparsity", "seed"))
    if ns.workers < 1:
        raise ValueError(f"--workers={ns.workers} is invalid: allowed an integer >= 1")
    configs = grid(base, ns.methods, ns.sparsities, ns.seeds)  # each config validated here
    base.resolved_device()
    with sweep_lock(ns.out):  # the folder is writable and ours before anything starts
        load_dataset(base)  # fail fast, with the clear message, before any worker starts
        executor = make_executor(ns.workers)
        threads = default_threads(ns.workers) if executor is not None else None
        try:
            df = sweep(configs, ns.out, executor=executor, progress=True, retry_failed=ns.retry_failed,
                       threads_per_run=threads)
        except BaseException:
            stop_executor(executor, now=True)  # queued runs cancelled, workers ended within seconds
            raise
        stop_executor(executor, now=False)
        stats = df.attrs["stats"]
        if not ns.no_report and len(df) and (df["status"] == "ok").any():
            from ..analysis.report import write_report

            try:
                write_report(ns.out)
            except ValueError as exc:  # e.g. runs of different settings in one folder
                print(f"note: no Table 1 report: {exc}", file=sys.stderr)
    print(json.dumps(stats))
    return 1 if stats["failed_total"] else 0


# ------------------------------------------------------------------ signals
class _StopSignals:
    """SIGINT and SIGTERM stop the command: the first one raises KeyboardInterrupt, later ones are ignored
    while the command cleans up (saves finished epochs, ends workers); the exit status is 128 + its number."""

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._old: dict[int, Any] = {}

    @property
    def exit_code(self) -> int:
        return 128 + (self.received or signal.SIGINT)

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            self.received = signum
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self):
        self.received = None
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        self._old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in self._old:
            signal.signal(s, self._handle)
        try:
            yield self
        finally:
            for s, old in self._old.items():
                signal.signal(s, old)


_STOP = _StopSignals()


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ..core.data import DatasetNotFoundError

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["train"]
    ns = parser.parse_args(argv)
    if ns.command is None:
        parser.print_help()
        return 2
    with _STOP.installed():
        try:
            return run_train(ns) if ns.command == "train" else run_sweep(ns)
        except (ValueError, DatasetNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            name = signal.Signals(_STOP.received or signal.SIGINT).name
            print(f"interrupted ({name})", file=sys.stderr)
            return _STOP.exit_code
