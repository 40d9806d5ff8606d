"""A run's output folder, written like a database commits.

``python -m bayesprune train --out runs/x`` checks the destination *before* the
first epoch (:meth:`RunFolder.open`): its parent must be a writable folder,
``runs/x`` must not be a file or a symlink, and an existing run folder is refused
unless ``overwrite=True``.  It then writes ``config.json`` into a private
temporary sibling (``runs/.x.<host>-<pid>.<random>.tmp``), which proves the
location is writable.  After training, :meth:`RunFolder.commit` writes the other
files there (fresh files, ``O_EXCL | O_NOFOLLOW``: no symlink is ever followed),
fsyncs them and swaps the folder in with a rename.  Whatever happens before the
swap (a NaN, a full disk, Ctrl-C, SIGKILL) leaves ``runs/x`` exactly as it was;
the temporary folder is deleted, or, after SIGKILL, by the next run to the same
``--out`` (once its process is gone).

With ``overwrite=True`` the previous folder is kept whole as ``runs/x.prev`` (an
older ``.prev`` is deleted), so an overwrite loses nothing but the run before last.
If the swap itself fails, the previous folder is put back.  Interrupted and
diverged runs are committed too, with their finished epochs, and ``summary.json``
says ``"status": "interrupted"`` / ``"diverged"``.  If ``runs/x`` appeared while
the run trained (another process), the run is kept as ``runs/x.new-<pid>`` and
:class:`RunConflict` says so.  Files and folders get the modes the umask gives.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Optional

from ..core import export
from ..core.config import RunConfig
from .fileio import dir_mode, dumps, fsync_dir, write_new

RunResult = Any  # bayesprune.engine.training.RunResult (not imported: training imports this module)

RUN_FILES = ("config.json", "history.csv", "summary.json", "model.pt", "curves.png")


class OutputError(ValueError):
    """The output location cannot take this run; the message names the path and the fix."""


class RunConflict(OutputError):
    """``--out`` appeared while the run trained; the run was saved to :attr:`saved_to` instead."""

    def __init__(self, message: str, saved_to: Path):
        super().__init__(message)
        self.saved_to = saved_to


#: This machine, as it appears in temporary folder names (a shared folder may see several machines).
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


def _temp_prefix(out: Path) -> str:
    return f".{out.name}.{_HOST}-{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def remove_stale_temp_folders(out: Path) -> list[Path]:
    """Delete temporary folders of ``out`` whose writer (a process on this machine) is gone."""
    removed = []
    prefix = f".{out.name}."
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return removed
    for p in entries:
        if not (p.name.startswith(prefix) and p.name.endswith(".tmp")):
            continue
        host_pid = p.name[len(prefix):-len(".tmp")].rpartition(".")[0]
        host, _, pid = host_pid.rpartition("-")
        if host != _HOST or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _is_run_folder(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in ("config.json", "summary.json"))


def check_destination(out: Path, overwrite: bool) -> None:
    """Refuse, before any training, a destination that would fail or destroy something."""
    if out.name in ("", ".", ".."):
        raise OutputError(f"--out {str(out)!r} names no folder; give a folder path such as runs/my-run.")
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
        prev = out.with_name(out.name + ".prev")
        if not prev.is_symlink() and (prev.is_file() or (prev.is_dir() and any(prev.iterdir())
                                                          and not _is_run_folder(prev))):
            raise OutputError(f"--overwrite would replace {prev}, which is not a bayesprune run; move it away first.")
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
        remove_stale_temp_folders(out)
        try:
            tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(out), suffix=".tmp", dir=out.parent))
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

    @property
    def prev(self) -> Path:
        return self.out.with_name(self.out.name + ".prev")

    def commit(self, result: RunResult, plot: bool = True) -> Path:
        """Write the remaining files, then swap the folder in; on any failure the old folder is untouched.

        Raises :class:`RunConflict` (the run saved elsewhere) if ``out`` appeared meanwhile.
        """
        try:
            self._write(result, plot)
            fsync_dir(self.tmp)
            try:
                check_destination(self.out, self.overwrite)  # it may have appeared while we trained
            except OutputError as exc:
                self._save_beside(exc)
            self._swap()
        except RunConflict:
            raise
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
        compact, summary["size"] = export.for_run_folder(result.model)  # the sparse export beside model.pt
        write_new(self.tmp / "summary.json", (dumps(summary, indent=2) + "\n").encode())
        buf = io.BytesIO()
        torch.save({k: v.cpu() for k, v in result.model.state_dict().items()}, buf)
        write_new(self.tmp / "model.pt", buf.getvalue())
        write_new(self.tmp / export.RUN_FILE, compact)
        if plot and len(result.history):
            import matplotlib.pyplot as plt

            from ..analysis.plots import plot_curves

            fig = plot_curves(result.history, title=_title(result.config), beta=_beta(result.config))
            png = io.BytesIO()
            fig.savefig(png, format="png", dpi=110, bbox_inches="tight")
            plt.close(fig)
            write_new(self.tmp / "curves.png", png.getvalue())

    def _save_beside(self, why: OutputError) -> None:
        n, target = 0, self.out.with_name(f"{self.out.name}.new-{os.getpid()}")
        while target.exists() or target.is_symlink():
            n += 1
            target = self.out.with_name(f"{self.out.name}.new-{os.getpid()}-{n}")
        os.rename(self.tmp, target)
        fsync_dir(target.parent)
        raise RunConflict(f"{why} (it appeared while this run trained); the run was saved to {target} instead",
                          target)

    def _swap(self) -> None:
        """Rename the temporary folder to ``out``; an existing run moves to ``out.prev`` first.

        Every step is a rename, undone in reverse order if a later one fails.
        """
        out, prev, tmp = self.out, self.prev, self.tmp
        if out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
            out.rmdir()
        if not (out.exists() or out.is_symlink()):
            os.rename(tmp, out)
            fsync_dir(out.parent)
            return
        trash = None
        if prev.exists() or prev.is_symlink():  # the run before last: out of the way, deleted at the end
            trash = tmp.with_name(tmp.name[: -len(".tmp")] + "-prev.tmp")
            os.rename(prev, trash)
        try:
            os.rename(out, prev)
            try:
                os.rename(tmp, out)
            except BaseException:
                os.rename(prev, out)
                raise
        except BaseException:
            if trash is not None:
                os.rename(trash, prev)
            raise
        fsync_dir(out.parent)
        if trash is not None:
            if trash.is_dir() and not trash.is_symlink():
                shutil.rmtree(trash, ignore_errors=True)
            else:
                trash.unlink(missing_ok=True)


def _title(cfg: RunConfig) -> str:
    return f"{cfg.dataset} / {cfg.model} / {cfg.method} @ {cfg.sparsity:.0%}"


def _beta(cfg: RunConfig) -> Optional[float]:
    return cfg.beta if cfg.is_bayesian and cfg.beta > 0 else None


def save_run(result: RunResult, out_dir: str | os.PathLike, plot: bool = True, overwrite: bool = False) -> Path:
    """Write a finished result's folder atomically (the one-call form of :class:`RunFolder`)."""
    return RunFolder.open(out_dir, result.config, overwrite).commit(result, plot)
