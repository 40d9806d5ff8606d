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

Signals during ``train --out``: while the run folder is opened and while it is saved
(after the last epoch, or after an interrupt), a SIGINT/SIGTERM waits until the save
is done, then the command exits with its status: a finished run always lands.  Only
the plot, drawn after the save, is skipped.  During training, the first signal stops
the run (its finished epochs are saved); later ones are ignored while it saves.
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

from ..core.config import PAPER_METHODS, PRESETS, RunConfig, config_fields, field_choices, field_type, is_optional
from ..core.registry import methods

#: ``sweep``'s targets where the preset names none: the paper's Table 1 columns.
PAPER_SPARSITIES = (0.25, 0.5, 0.75, 0.9, 0.99)


def _optional_int(text: str) -> Optional[int]:
    if text.lower() in ("none", "all", "null"):
        return None
    return int(text)


def parse_fraction(text: str, name: str = "sparsity") -> float:
    """A fraction 0 <= r < 1 ('0.9'), or a percentage written with '%' ('90%'); anything else is an error.

    The one parser of sparsities: ``train --sparsity`` and ``sweep --sparsities``.
    """
    allowed = "allowed a fraction 0 <= r < 1 (0.9) or a percentage below 100 % (90%)"
    try:
        value = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number: {allowed}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid (RunConfig.{name}={value!r}): {allowed}")
    return value + 0.0  # -0% is 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: allowed an integer >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: allowed an integer >= 1")
    return value


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
        elif kind is float and f.metadata.get("bounds") == (0.0, 1.0, True, False):  # a fraction: 0.9 or 90%
            parser.add_argument(flag, type=lambda text, name=f.name: parse_fraction(text, name), metavar="R|N%",
                                **kwargs)
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
    return RunConfig.preset(getattr(ns, "preset", "paper"), **values)


def _add_preset(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=list(PRESETS), default="paper",
                        help="a named recipe the other flags change: paper (RunConfig's defaults) or bayesian "
                             "(MAP training, gradual, the posterior criterion, the Laplace evidence as an immediate "
                             "gate that chooses the final sparsity) (default: paper)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bayesprune",
        description="Bayes-factor-gated neural network pruning (Mathew & Rowe, 2023).",
    )
    sub = parser.add_subparsers(dest="command", metavar="{train,sweep}")
    p = sub.add_parser("train", help="train one run (default: digits, fcn, bayes-magnitude, 90%%)")
    add_config_arguments(p)
    _add_preset(p)
    p.add_argument("--out", default=None, help="write config.json, history.csv, summary.json, model.pt and "
                   "curves.png to this new folder (written atomically)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing run folder at --out, keeping the old one as <out>.prev")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")

    s = sub.add_parser("sweep", help="run a resumable grid of methods x sparsities x seeds")
    add_config_arguments(s, skip=("method", "sparsity", "seed"))
    _add_preset(s)
    s.add_argument("--methods", nargs="+", choices=methods(), default=None,
                   help="methods (default: the preset's method, so the paper's five with --preset paper and "
                        "bayes-obs with --preset bayesian)")
    s.add_argument("--sparsities", nargs="+", type=parse_fraction, default=None,
                   help="target sparsities as fractions (0.9) or percentages with %% (90%%) (default: 0.25 0.5 "
                        "0.75 0.9 0.99 with --preset paper; the preset's ceiling, 0.99, with --preset bayesian)")
    s.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds (default: 0)")
    s.add_argument("--out", required=True, help="sweep folder (runs/, results.csv, table1.md, plots)")
    s.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1: in-process)")
    s.add_argument("--threads", type=_positive_int, default=None,
                   help="torch threads per run (default: the cores shared among the workers)")
    s.add_argument("--lockstep", type=_positive_int, default=1, metavar="K",
                   help="train up to K compatible runs at a time as one stacked model (default 1: one at a time; "
                        "see docs/results/performance.md for where it wins)")
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
    from ..runs.runio import RunFolder

    cfg = config_from_args(ns)
    cfg.resolved_device()  # a missing cuda/mps is a bad input: exit 2 before anything else
    if ns.out is None:
        load_dataset(cfg)
        result, code = _train(cfg, ns)
        print(json.dumps(result.summary()))
        return _STOP.exit_code if _STOP.pending else code
    _STOP.armed = False  # opening the folder is one unit: a signal waits until it is open (or refused)
    folder = RunFolder.open(ns.out, cfg, ns.overwrite, log=lambda note: print(f"note: {note}", file=sys.stderr))
    try:
        _STOP.arm()  # a signal that came meanwhile stops the command here (the folder is discarded)
        load_dataset(cfg)  # files checked (and cached) before the first epoch
        result, code = _train(cfg, ns)  # signals wait from the end of the last epoch on
        code = _save(folder, result, code)
        folder = None
    finally:
        if folder is not None:  # an error before a result existed: nothing half-written is left
            folder.discard()
    print(json.dumps(result.summary()))
    return code


def _train(cfg: RunConfig, ns: argparse.Namespace):
    """Train; returns (result, exit status).  From the end of the last epoch on, signals wait (the save)."""
    from ..engine.training import TrainingDiverged, TrainingInterrupted, train

    show = None if ns.quiet else _epoch_printer(cfg)

    def on_epoch(row: dict[str, Any]) -> None:
        if show is not None:
            show(row)
        if row["epoch"] == cfg.epochs:
            _STOP.armed = False  # the run is finished: a signal from now on waits for the save

    try:
        return train(cfg, callbacks=[on_epoch], progress=False), 0
    except TrainingDiverged as exc:
        _STOP.armed = False
        print(f"error: {exc}", file=sys.stderr)
        return exc.result, 1
    except TrainingInterrupted as exc:
        _STOP.armed = False
        print(f"interrupted: {exc}", file=sys.stderr)
        return exc.result, _STOP.exit_code
    finally:
        _STOP.armed = False


def _save(folder, result, code: int) -> int:
    """Commit the run folder with signals held back; a run with no finished epoch is not saved.

    A SIGINT/SIGTERM that arrives during the save waits until the run has landed, then skips the
    plot and sets the exit status (130/143).
    """
    from ..runs.runio import RunConflict

    _STOP.armed = False
    if len(result.history) == 0:
        folder.discard()
        print(f"nothing saved: no epoch finished; {folder.out} is unchanged", file=sys.stderr)
        return _STOP.exit_code if _STOP.pending else code
    saved = []

    def landed(where) -> None:
        saved.append(where)
        kept = f"; the previous run is kept as {folder.prev}" if folder.overwrite and folder.prev.is_dir() else ""
        kept += " (the run before last, which was there, is deleted)" if folder.replaced_prev else ""
        print(f"saved {result.status} run ({len(result.history)} epochs) to {where}{kept}", file=sys.stderr)
        _STOP.arm()  # a signal that waited stops here (no plot); one during the plot stops the plot

    try:
        folder.commit(result, on_saved=landed)
    except RunConflict as exc:
        print(f"error: {exc}", file=sys.stderr)
        return _STOP.exit_code if _STOP.pending else (code or 1)
    except OSError as exc:
        print(f"error: could not save the run to {folder.out}: {exc.strerror or exc}"
              f"{f' ({exc.filename})' if exc.filename else ''}. Nothing was changed there; free some space or "
              "choose another --out and run it again.", file=sys.stderr)
        return _STOP.exit_code if _STOP.pending else (code or 1)
    except KeyboardInterrupt:
        if not saved:  # pragma: no cover - signals wait until the run has landed
            raise
        name = signal.Signals(_STOP.received or signal.SIGINT).name
        print(f"interrupted ({name}) during the save: the run is saved, its plot (curves.png) was not drawn",
              file=sys.stderr)
        return _STOP.exit_code
    finally:
        _STOP.armed = False
    if folder.plot_error:
        print(f"note: the run is saved without its plot (curves.png): {folder.plot_error}", file=sys.stderr)
    return _STOP.exit_code if _STOP.pending else code


# ------------------------------------------------------------------ sweep
def run_sweep(ns: argparse.Namespace) -> int:
    from ..core.data import load_dataset
    from ..runs.sweeps import SweepWriteError, default_threads, grid, make_executor, stop_executor, sweep, sweep_lock

    base = config_from_args(ns, skip=("method", "sparsity", "seed"))
    if ns.workers < 1:
        raise ValueError(f"--workers={ns.workers} is invalid: allowed an integer >= 1")
    recipe = PRESETS[ns.preset]
    methods_ = ns.methods or ([recipe["method"]] if "method" in recipe else list(PAPER_METHODS))
    sparsities = ns.sparsities or ([recipe["sparsity"]] if "sparsity" in recipe else list(PAPER_SPARSITIES))
    configs = grid(base, methods_, sparsities, ns.seeds)  # each config validated here
    base.resolved_device()
    with sweep_lock(ns.out):  # the folder is writable and ours before anything starts
        load_dataset(base)  # fail fast, with the clear message, before any worker starts
        try:
            executor = make_executor(ns.workers)
        except OSError as exc:
            print(f"error: could not start {ns.workers} worker processes: {exc.strerror or exc}; no run had started",
                  file=sys.stderr)
            return 2
        threads = ns.threads or (default_threads(ns.workers) if executor is not None else None)
        try:
            df = sweep(configs, ns.out, executor=executor, progress=True, retry_failed=ns.retry_failed,
                       threads_per_run=threads, lockstep=ns.lockstep)
        except SweepWriteError as exc:
            stop_executor(executor, now=True)
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
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
            except OSError as exc:
                print(f"error: could not write the report (table1.md and its figures) in {ns.out}: "
                      f"{exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}; the runs and "
                      "results.csv are stored", file=sys.stderr)
                print(json.dumps(stats))
                return 1
    print(json.dumps(stats))
    return 1 if stats["failed_total"] else 0


# ------------------------------------------------------------------ signals
class _StopSignals:
    """SIGINT and SIGTERM stop the command; the exit status is 128 + the signal's number.

    While ``armed``, the first signal raises KeyboardInterrupt; later ones are ignored while the
    command cleans up (saves finished epochs, ends workers).  While not armed (a run folder being
    opened or saved), the first signal is only recorded (``pending``): :meth:`arm` raises it once
    the unit of work is done.
    """

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self.pending = False
        self.armed = True
        self._old: dict[int, Any] = {}

    @property
    def exit_code(self) -> int:
        return 128 + (self.received or signal.SIGINT)

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            return
        self.received = signum
        if self.armed:
            raise KeyboardInterrupt
        self.pending = True

    def arm(self) -> None:
        """Let signals stop the command again; one that waited meanwhile stops it now."""
        self.armed = True
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self):
        self.received, self.pending, self.armed = None, False, True
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
            self.armed = True


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
