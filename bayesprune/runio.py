"""A run's output folder, written like a database commits.

``python -m bayesprune train --out runs/x`` checks the destination *before* the
first epoch (:meth:`RunFolder.open`): its parent must be a writable folder,
``runs/x`` must not be a file or a symlink, and an existing run folder is refused
unless ``overwrite=True``.  It then writes ``config.json`` into a private
temporary sibling (``runs/.x.<random>.tmp``), which proves the location is
writable.  After training, :meth:`RunFolder.commit` writes the other files there,
fsyncs them and swaps the folder in with a rename.  Whatever happens before the
swap (a NaN, a full disk, Ctrl-C, SIGKILL) leaves ``runs/x`` exactly as it was.

With ``overwrite=True`` the previous folder is kept as ``runs/x.prev`` (an older
``.prev`` is deleted), so even an overwrite loses nothing but the run before last.
Interrupted and diverged runs are committed too, with their finished epochs, and
``summary.json`` says ``"status": "interrupted"`` / ``"diverged"``.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

from .config import RunConfig
from .fileio import dir_mode, dumps, fsync_dir, write_new

RunResult = Any  # bayesprune.training.RunResult (not imported: training imports this module)

RUN_FILES = ("config.json", "history.csv", "summary.json", "model.pt", "curves.png")


class OutputError(ValueError):
    """The output location cannot take this run; the message names the path and the fix."""


def _is_run_folder(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in ("config.json", "summary.json"))


def check_destination(out: Path, overwrite: bool) -> None:
    """Refuse, before any training, a destination that would fail or destroy something."""
    if out.is_symlink():
        raise OutputError(f"--out {out} is a symbolic link; refusing to write through it. Give a real folder path.")
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} exists and is not a folder. Give a folder path.")
    if out.is_dir() and any(out.iterdir()):
        if not _is_run_folder(out):
            raise OutputError(f"--out {out} is a non-empty folder that is not a bayesprune run; refusing to replace "
                              "it. Give a new folder path.")
        if not overwrite:
            raise OutputError(f"--out {out} already holds a run; refusing to replace it. Give a new folder, or pass "
                              f"--overwrite (the old run is then kept as {out.name}.prev).")
    parent = out.parent
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the folder {parent} for --out {out}: {exc.strerror}") from None
    if not parent.is_dir():
        raise OutputError(f"--out {out}: {parent} is not a folder.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"--out {out}: no permission to write in {parent}.")


class RunFolder:
    """A run's output folder, opened before training and committed (or discarded) after it."""

    def __init__(self, out: Path, tmp: Path, overwrite: bool):
        self.out, self.tmp, self.overwrite = out, tmp, overwrite

    @classmethod
    def open(cls, out_dir: str | os.PathLike, config: RunConfig, overwrite: bool = False) -> "RunFolder":
        """Check the destination and start the temporary folder with ``config.json`` in it."""
        out = Path(out_dir)
        check_destination(out, overwrite)
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        except OSError as exc:
            raise OutputError(f"cannot write in {out.parent} for --out {out}: {exc.strerror}") from None
        folder = cls(out, tmp, overwrite)
        try:
            os.chmod(tmp, dir_mode())
            write_new(tmp / "config.json", (dumps(config.to_dict(), indent=2) + "\n").encode())
        except BaseException as exc:
            folder.discard()
            if isinstance(exc, OSError):
                raise OutputError(f"cannot write in {out.parent} for --out {out}: {exc.strerror}") from None
            raise
        return folder

    def commit(self, result: RunResult, plot: bool = True) -> Path:
        """Write the remaining files, then swap the folder in; on any failure the old folder is untouched."""
        try:
            self._write(result, plot)
            fsync_dir(self.tmp)
            self._swap()
        except BaseException:
            self.discard()
            raise
        return self.out

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------------ internals
    def _write(self, result: RunResult, plot: bool) -> None:
        import torch

        csv = io.StringIO()
        result.history.to_csv(csv, index=False)
        write_new(self.tmp / "history.csv", csv.getvalue().encode())
        summary = dict(result.summary(), layer_sparsity=result.layer_sparsity)
        write_new(self.tmp / "summary.json", (dumps(summary, indent=2) + "\n").encode())
        buf = io.BytesIO()
        torch.save({k: v.cpu() for k, v in result.model.state_dict().items()}, buf)
        write_new(self.tmp / "model.pt", buf.getvalue())
        if plot and len(result.history):
            import matplotlib.pyplot as plt

            from .plots import plot_curves

            fig = plot_curves(result.history, title=_title(result.config), beta=_beta(result.config))
            png = io.BytesIO()
            fig.savefig(png, format="png", dpi=110, bbox_inches="tight")
            plt.close(fig)
            write_new(self.tmp / "curves.png", png.getvalue())

    def _swap(self) -> None:
        out = self.out
        if out.exists() or out.is_symlink():
            check_destination(out, self.overwrite)  # it may have appeared while we trained
            if out.is_dir() and not any(out.iterdir()):
                out.rmdir()
            else:
                prev = out.with_name(out.name + ".prev")
                if prev.is_dir() and not prev.is_symlink():
                    shutil.rmtree(prev)
                elif prev.exists() or prev.is_symlink():
                    prev.unlink()
                os.rename(out, prev)
        os.rename(self.tmp, out)
        fsync_dir(out.parent)


def _title(cfg: RunConfig) -> str:
    return f"{cfg.dataset} / {cfg.model} / {cfg.method} @ {cfg.sparsity:.0%}"


def _beta(cfg: RunConfig) -> Optional[float]:
    return cfg.beta if cfg.is_bayesian and cfg.beta > 0 else None


def save_run(result: RunResult, out_dir: str | os.PathLike, plot: bool = True, overwrite: bool = False) -> Path:
    """Write a finished result's folder atomically (the one-call form of :class:`RunFolder`)."""
    return RunFolder.open(out_dir, result.config, overwrite).commit(result, plot)
