"""A run's output folder, written like a database commits.

``python -m bayesprune train --out runs/x`` checks the destination *before* the
first epoch (:meth:`RunFolder.open`): its parent must be a writable folder,
``runs/x`` must not be a file or a symlink, and an existing folder is replaced only
if it is a bayesprune run (:func:`is_run_folder`) and ``overwrite=True``.  The writer
then holds ``runs/.x.bayesprune.lock`` (:mod:`bayesprune.runs.locks`) until it is done,
so a second writer to the same ``--out`` is refused (exit 2, naming the holder), and
writes ``config.json`` into a private temporary sibling
(``runs/.x.bayesprune-<host>-<pid>.<random>.tmp``), which proves the location is
writable.  After training, :meth:`RunFolder.commit` writes the other files there
(fresh files, ``O_EXCL | O_NOFOLLOW``: no symlink is ever followed; ``summary.json``
last, so a temporary folder holding it is complete), fsyncs them and swaps the folder
in with renames.  Whatever happens before the swap (a NaN, a full disk, Ctrl-C,
SIGKILL) leaves ``runs/x`` exactly as it was; the temporary folder is deleted, or,
after SIGKILL, by the next writer to the same ``--out`` (once its process is gone).
The learning-curve plot (``curves.png``, the slow part) is drawn after the commit, so
the data lands first; a plot that fails leaves the saved run without it.

**What counts as a run.** ``summary.json`` carries a stamp, ``"format": {"package":
"bayesprune", "version": ..., "run_folder": 1}``; only a folder whose ``summary.json``
(a regular file, not a link) has it is a run.  Folders written before the stamp
(bayesprune <= 0.2.0) count as runs if they hold exactly the run files (config.json,
history.csv, summary.json, model.pt, optionally curves.png, all regular files), their
``config.json`` is a valid :class:`RunConfig` and their ``summary.json`` has a status
and a method.  Anything else, e.g. a project folder with a ``config.json``, is refused.

With ``overwrite=True`` the previous folder is kept whole as ``runs/x.prev`` (an
older ``.prev``, itself a run, is deleted), so an overwrite loses nothing but the run
before last.  The swap is a journal of renames: the temporary folder is first renamed
to ``...-swap.tmp`` (the intent), then ``.prev`` moves aside, ``x`` becomes ``x.prev``
and the new folder becomes ``x``.  If a step fails, the earlier ones are undone; if the
writer is killed in the middle, the next writer to ``--out`` finds the dead writer's
journal and undoes it (``x`` and ``x.prev`` as they were).  Interrupted and diverged
runs are committed too, with their finished epochs, and ``summary.json`` says
``"status": "interrupted"`` / ``"diverged"``.  If ``runs/x`` appeared while the run
trained (a process not using the lock), the run is kept as ``runs/x.new-<pid>`` and
:class:`RunConflict` says so.  Files and folders get the modes the umask gives.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

from ..core import export
from ..core.config import RunConfig
from .fileio import (
    atomic_write_bytes,
    dir_mode,
    dumps,
    fsync_dir,
    is_real_dir,
    is_real_file,
    read_small_json,
    temp_prefix,
    temp_writer,
    temp_writer_gone,
    write_new,
)
from .locks import FolderLock, LockError, lock_path_beside

RunResult = Any  # bayesprune.engine.training.RunResult (not imported: training imports this module)

RUN_FILES = ("config.json", "history.csv", "summary.json", "model.pt", export.RUN_FILE, "curves.png")
#: The files every run folder holds (curves.png is missing where the plot was not drawn; the sparse export
#: where the folder was written before it existed).
REQUIRED_RUN_FILES = ("config.json", "history.csv", "summary.json", "model.pt")
#: Version of the run folder's layout, in its stamp.
RUN_FOLDER_FORMAT = 1

#: Called between the renames of the swap (tests stop the process there); None in normal use.
SWAP_HOOK: Optional[Callable[[str], None]] = None


class OutputError(ValueError):
    """The output location cannot take this run; the message names the path and the fix."""


class RunConflict(OutputError):
    """``--out`` appeared while the run trained; the run was saved to :attr:`saved_to` instead."""

    def __init__(self, message: str, saved_to: Path):
        super().__init__(message)
        self.saved_to = saved_to


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bayesprune")
    except PackageNotFoundError:  # run from a source folder that was never installed
        return "unknown"


def run_stamp() -> dict[str, Any]:
    """The marker in every run's ``summary.json`` that says the package wrote this folder."""
    return {"package": "bayesprune", "version": package_version(), "run_folder": RUN_FOLDER_FORMAT}


def _stamped(summary: Any) -> bool:
    stamp = summary.get("format") if isinstance(summary, dict) else None
    return isinstance(stamp, dict) and stamp.get("package") == "bayesprune"


def _is_legacy_run(path: Path, summary: Any) -> bool:
    """A run folder of bayesprune <= 0.2.0 (no stamp): exactly the run files, a valid config."""
    try:
        names = set(os.listdir(path))
    except OSError:
        return False
    if not set(REQUIRED_RUN_FILES) <= names <= set(RUN_FILES):
        return False
    if not all(is_real_file(path / name) for name in names):
        return False
    if not (isinstance(summary, dict) and "status" in summary and "method" in summary):
        return False
    config = read_small_json(path / "config.json")
    try:
        RunConfig.from_dict(config)
    except (TypeError, ValueError):
        return False
    return True


def is_run_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a real folder (not a link) holding a run the package wrote (see the module doc)."""
    path = Path(path)
    if not is_real_dir(path):
        return False
    summary = read_small_json(path / "summary.json")
    return _stamped(summary) or _is_legacy_run(path, summary)


def _temp_entries(out: Path) -> list[tuple[Path, str]]:
    """The temporary folders of ``out`` whose writer (on this machine) is gone: (path, kind) with kind
    ``tmp`` (a folder being written), ``swap`` (the swap's journal) or ``prev`` (the run before last,
    moved aside)."""
    found = []
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return found
    for p in entries:
        if not temp_writer_gone(p.name, out.name):
            continue
        rest = temp_writer(p.name, out.name)[2]  # type: ignore[index]
        kind = rest.rpartition("-")[2] if "-" in rest else "tmp"
        found.append((p, kind if kind in ("swap", "prev") else "tmp"))
    return found


def recover_interrupted_saves(out: Path) -> list[str]:
    """Undo what writers of ``out`` killed during their save left (call with ``out``'s lock held).

    A swap that was cut short (its journal, a ``-swap`` folder, is there) is rolled back: ``out`` and
    ``out.prev`` return to what they were before it began.  The run before last, moved aside, goes
    back to ``out.prev`` if that is free, else it is deleted (the swap had finished).  Then the dead
    writers' temporary folders are deleted.  Returns what it did, one line each.
    """
    notes: list[str] = []
    prev = out.with_name(out.name + ".prev")
    entries = [(p, kind) for p, kind in _temp_entries(out) if is_real_dir(p)]
    if any(kind == "swap" for _, kind in entries) and not os.path.lexists(out) and is_real_dir(prev):
        os.rename(prev, out)
        notes.append(f"put the previous run back at {out} (a writer was killed while it swapped in its run)")
    for p, kind in entries:
        if kind == "prev" and not os.path.lexists(prev):
            os.rename(p, prev)
            notes.append(f"put the run before last back at {prev}")
        else:
            shutil.rmtree(p, ignore_errors=True)
            notes.append(f"removed {p}, left by a killed writer")
    if notes:
        fsync_dir(out.parent)
    return notes


def remove_stale_temp_folders(out: Path) -> list[Path]:
    """Delete temporary folders of ``out`` whose writer is gone (after undoing a cut-short swap)."""
    before = [p for p, _ in _temp_entries(out)]
    recover_interrupted_saves(out)
    return [p for p in before if not os.path.lexists(p)]


def check_destination(out: Path, overwrite: bool) -> None:
    """Refuse, before any training, a destination that would fail or destroy something."""
    if out.name in ("", ".", ".."):
        raise OutputError(f"--out {str(out)!r} names no folder; give a folder path such as runs/my-run.")
    if out.is_symlink():
        raise OutputError(f"--out {out} is a symbolic link; refusing to write through it. Give a real folder path.")
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} exists and is not a folder. Give a folder path.")
    if out.is_dir() and any(out.iterdir()):
        if not is_run_folder(out):
            raise OutputError(f"--out {out} is a non-empty folder that is not a bayesprune run (its summary.json "
                              "has no bayesprune stamp); refusing to replace it. Give a new folder path.")
        if not overwrite:
            raise OutputError(f"--out {out} already holds a run; refusing to replace it. Give a new folder, or pass "
                              f"--overwrite (the old run is then kept as {out.name}.prev).")
        prev = out.with_name(out.name + ".prev")
        if os.path.lexists(prev) and not (is_real_dir(prev) and (not any(prev.iterdir()) or is_run_folder(prev))):
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


def _busy(out: Path) -> Callable[[str], Exception]:
    def message(holder: str) -> Exception:
        return OutputError(f"another process ({holder}) is writing --out {out} (it holds {lock_path_beside(out)}); "
                           "wait for it to finish, or give another --out")

    return message


class RunFolder:
    """A run's output folder, opened (and locked) before training and committed (or discarded) after it."""

    def __init__(self, out: Path, tmp: Path, overwrite: bool, lock: Optional[FolderLock] = None):
        self.out, self.tmp, self.overwrite, self._lock = out, tmp, overwrite, lock
        self.notes: list[str] = []  # what opening it repaired (a killed writer's leftovers)
        self.plot_error: Optional[str] = None  # why curves.png is missing, where it is
        self.replaced_prev = False  # whether the swap deleted the run before last

    @classmethod
    def open(cls, out_dir: str | os.PathLike, config: RunConfig, overwrite: bool = False,
             log: Optional[Callable[[str], None]] = None) -> "RunFolder":
        """Check the destination, take its lock and start the temporary folder with ``config.json`` in it.

        ``log`` hears what was repaired first (a killed writer's leftovers), even if ``out`` is then refused.
        """
        if os.fspath(out_dir) == "":
            raise OutputError("--out '' names no folder; give a folder path such as runs/my-run.")
        out = Path(out_dir)
        check_destination(out, overwrite=True)  # the cheap refusals first (and the parent exists after it)
        try:
            lock = FolderLock.acquire(lock_path_beside(out), f"writing the run folder {out}", _busy(out),
                                      remove=True)
        except LockError as exc:
            raise OutputError(str(exc)) from None
        try:
            notes = recover_interrupted_saves(out)
            for note in notes if log is not None else ():
                log(note)
            check_destination(out, overwrite)  # again, now that it is ours and repaired
            try:
                tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out.name), suffix=".tmp", dir=out.parent))
            except OSError as exc:
                raise OutputError(f"cannot write in {out.parent} for --out {out}: {exc.strerror}") from None
        except BaseException:
            lock.release()
            raise
        folder = cls(out, tmp, overwrite, lock)
        folder.notes = notes
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

    def commit(self, result: RunResult, plot: bool = True, on_saved: Optional[Callable[[Path], None]] = None) -> Path:
        """Write the remaining files and swap the folder in; on any failure the old folder is untouched.

        Then ``on_saved(out)`` (the run has landed) and the plot, into the saved folder: a plot that
        fails is noted in :attr:`plot_error`; an interrupt during it propagates (the run stays saved).
        Raises :class:`RunConflict` (the run saved elsewhere) if ``out`` appeared meanwhile.
        """
        try:
            try:
                self._write(result)
                fsync_dir(self.tmp)
                try:
                    check_destination(self.out, self.overwrite)  # it may have appeared while we trained
                except OutputError as exc:
                    self._save_beside(exc)
                self._swap()
            except RunConflict:
                raise
            except BaseException:
                self._remove_tmp()
                raise
            if on_saved is not None:
                on_saved(self.out)
            if plot and len(result.history):
                self._plot(result)
        finally:
            self._release()
        return self.out

    def discard(self) -> None:
        """Delete the temporary folder and let the lock go (``out`` as it was)."""
        try:
            self._remove_tmp()
        finally:
            self._release()

    # ------------------------------------------------------------------ internals
    def _remove_tmp(self) -> None:
        if is_real_dir(self.tmp):
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()

    def _write(self, result: RunResult) -> None:
        import torch

        csv = io.StringIO()
        result.history.to_csv(csv, index=False)
        write_new(self.tmp / "history.csv", csv.getvalue().encode())
        buf = io.BytesIO()
        torch.save({k: v.cpu() for k, v in result.model.state_dict().items()}, buf)
        write_new(self.tmp / "model.pt", buf.getvalue())
        compact, size = export.for_run_folder(result.model)  # the sparse export beside model.pt, and both sizes
        write_new(self.tmp / export.RUN_FILE, compact)
        # last: a temporary folder that holds summary.json is complete
        summary = dict(result.summary(), layer_sparsity=result.layer_sparsity, size=size, format=run_stamp())
        write_new(self.tmp / "summary.json", (dumps(summary, indent=2) + "\n").encode())

    def _plot(self, result: RunResult) -> None:
        """curves.png, written atomically into the saved folder (a figure is seconds of matplotlib)."""
        try:
            import matplotlib.pyplot as plt

            from .plots import plot_curves

            fig = plot_curves(result.history, title=result.config.title, beta=_beta(result.config))
            png = io.BytesIO()
            fig.savefig(png, format="png", dpi=110, bbox_inches="tight")
            plt.close(fig)
            if not is_real_dir(self.out):
                raise OSError(f"{self.out} is no longer a folder")
            atomic_write_bytes(self.out / "curves.png", png.getvalue())
        except Exception as exc:  # the run is saved; only its figure is missing
            detail = f"{exc.strerror} ({exc.filename})" if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.plot_error = f"{type(exc).__name__}: {detail}"

    def _save_beside(self, why: OutputError) -> None:
        n, target = 0, self.out.with_name(f"{self.out.name}.new-{os.getpid()}")
        while os.path.lexists(target):
            n += 1
            target = self.out.with_name(f"{self.out.name}.new-{os.getpid()}-{n}")
        os.rename(self.tmp, target)
        fsync_dir(target.parent)
        raise RunConflict(f"{why} (it appeared while this run trained); the run was saved to {target} instead",
                          target)

    def _swap(self) -> None:
        """Rename the temporary folder to ``out``; an existing run moves to ``out.prev`` first.

        Every step is a rename, undone in reverse order if a later one fails; the first one renames
        the temporary folder to ``-swap.tmp``, the journal a killed writer leaves for the next one.
        """
        out, prev = self.out, self.prev
        if is_real_dir(out) and not any(out.iterdir()):
            out.rmdir()
        if not os.path.lexists(out):
            os.rename(self.tmp, out)
            fsync_dir(out.parent)
            return
        stem = self.tmp.name[: -len(".tmp")]
        journal, trash = self.tmp.with_name(stem + "-swap.tmp"), self.tmp.with_name(stem + "-prev.tmp")
        os.rename(self.tmp, journal)
        self.tmp = journal
        moved_prev = os.path.lexists(prev)
        if moved_prev:  # the run before last: out of the way, deleted at the end
            os.rename(prev, trash)
        try:
            os.rename(out, prev)
            try:
                _hook("between the renames")
                os.rename(journal, out)
            except BaseException:
                os.rename(prev, out)
                raise
        except BaseException:
            if moved_prev:
                os.rename(trash, prev)
            raise
        fsync_dir(out.parent)
        self.replaced_prev = moved_prev
        if moved_prev:
            if is_real_dir(trash):
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.unlink(trash)


def _hook(stage: str) -> None:
    if SWAP_HOOK is not None:
        SWAP_HOOK(stage)


def _beta(cfg: RunConfig) -> Optional[float]:
    return cfg.beta if cfg.is_bayesian and cfg.beta > 0 else None


def save_run(result: RunResult, out_dir: str | os.PathLike, plot: bool = True, overwrite: bool = False) -> Path:
    """Write a finished result's folder atomically (the one-call form of :class:`RunFolder`)."""
    return RunFolder.open(out_dir, result.config, overwrite).commit(result, plot)
