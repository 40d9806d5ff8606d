"""``python -m bayesprune train|sweep``: flags generated from :class:`RunConfig`.

Every RunConfig field is a ``--flag`` (underscores become dashes); booleans get
``--flag/--no-flag``; optional integers accept ``none``.  Bad values exit with
status 2 and the validation message, no traceback.  The last stdout line is a
one-line JSON summary, so scripts can ``tail -1``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from typing import Any, Optional, Sequence

from .config import CHOICES, RunConfig, config_fields


def _optional_int(text: str) -> Optional[int]:
    if text.lower() in ("none", "all", "null"):
        return None
    return int(text)


def add_config_arguments(parser: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    """One flag per RunConfig field; defaults are left unset so RunConfig's own apply."""
    hints = typing.get_type_hints(RunConfig)
    for f in config_fields():
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else "$BAYESPRUNE_DATA or ./data"
        help_text = f"{f.metadata.get('help', '')} (default: {default})"
        hint = hints[f.name]
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if hint is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif f.name in CHOICES:
            parser.add_argument(flag, choices=CHOICES[f.name], **kwargs)
        elif hint is int:
            parser.add_argument(flag, type=int, **kwargs)
        elif hint is float:
            parser.add_argument(flag, type=float, **kwargs)
        elif hint == Optional[int]:
            parser.add_argument(flag, type=_optional_int, metavar="INT|none", **kwargs)
        elif f.name == "fcn_hidden":
            parser.add_argument(flag, type=int, nargs="+", metavar="WIDTH", **kwargs)
        else:
            parser.add_argument(flag, type=str, **kwargs)


def config_from_args(ns: argparse.Namespace, skip: Sequence[str] = ()) -> RunConfig:
    names = {f.name for f in config_fields()} - set(skip)
    values = {k: v for k, v in vars(ns).items() if k in names}
    if "fcn_hidden" in values:
        values["fcn_hidden"] = tuple(values["fcn_hidden"])
    return RunConfig(**values)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bayesprune",
        description="Bayes-factor-gated neural network pruning (Mathew & Rowe, 2023).",
    )
    sub = parser.add_subparsers(dest="command", metavar="{train,sweep}")
    p_train = sub.add_parser("train", help="train one run (default: digits, fcn, bayes-magnitude, 90%%)")
    add_config_arguments(p_train)
    p_train.add_argument("--out", default=None, help="write config.json, history.csv, summary.json, curves.png here")
    p_train.add_argument("--quiet", action="store_true", help="no per-epoch lines")

    from .sweep import add_sweep_parser

    add_sweep_parser(sub)
    return parser


def _epoch_printer(cfg: RunConfig):
    width = len(str(cfg.epochs))

    def show(row: dict[str, Any]) -> None:
        gate = ""
        if row["gate_open"] or row["pruned"]:
            gate = f"  log BF {row['log_bf']:+.1f} {'pruned' if row['pruned'] else 'rejected'}"
            gate += " (final)" if row["forced"] else ""
        elif cfg.method != "none" and row["epoch"] >= cfg.prune_start_epoch:
            gate = "  gate closed"
        print(
            f"epoch {row['epoch']:>{width}}/{cfg.epochs}  train loss {row['train_loss']:.4f}  "
            f"test acc {row['test_acc']:.4f}  sparsity {row['sparsity']:.3f}{gate}  "
            f"[{row['seconds']:.2f}s]",
            flush=True,
        )

    return show


def run_train(ns: argparse.Namespace) -> int:
    from .training import TrainingDiverged, train

    cfg = config_from_args(ns)
    callbacks = [] if ns.quiet else [_epoch_printer(cfg)]
    try:
        result = train(cfg, callbacks=callbacks, progress=False)
    except TrainingDiverged as exc:
        if ns.out:
            from pathlib import Path

            Path(ns.out).mkdir(parents=True, exist_ok=True)
            exc.history.to_csv(Path(ns.out) / "history.csv", index=False)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if ns.out:
        result.save(ns.out)
    print(json.dumps(result.summary()))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .data import DatasetNotFoundError

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["train"]
    ns = parser.parse_args(argv)
    if ns.command is None:
        parser.print_help()
        return 2
    try:
        if ns.command == "train":
            return run_train(ns)
        from .sweep import run_sweep_cli

        return run_sweep_cli(ns)
    except (ValueError, DatasetNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
