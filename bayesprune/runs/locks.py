"""One writer per folder: an OS lock (``fcntl.flock``) that the kernel releases when its holder ends.

A sweep holds ``<sweep>/.sweep.lock``; ``train --out runs/x`` holds ``runs/.x.bayesprune.lock``
from the check of ``--out`` until its folder is committed (the lock file is removed then).  The
lock is released however the process ends, even by SIGKILL, so a stale file never blocks
anyone: the next writer takes it over.  A second writer is refused at once, naming the holder.

The lock file is opened with ``O_NOFOLLOW`` (a symlink there is refused, never followed), and a
file of that name that the package did not write is refused, never truncated.  A file that is
removed while someone waits on it is detected (its inode is no longer the path's) and the lock
is taken again on the path's new file.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import Callable

from .fileio import HOST, file_mode

#: What a lock file of ours holds (older versions wrote the same line without the tag).
_HOLDER = re.compile(rb"^pid \d+ on \S+")


class LockError(ValueError):
    """The lock cannot be taken (busy, a symlink, not ours, or not writable); the message says why."""


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "an unknown process"


class FolderLock:
    """An exclusive ``flock`` on ``path``, held until :meth:`release` (or the process ends)."""

    def __init__(self, path: Path, fd: int, remove: bool):
        self.path, self._fd, self._remove = path, fd, remove

    @classmethod
    def acquire(cls, path: str | os.PathLike, what: str, busy: Callable[[str], Exception],
                remove: bool = False) -> "FolderLock":
        """Take the lock or raise: ``busy(holder)`` if another process holds it, :class:`LockError` otherwise.

        ``what`` says what the lock guards (it goes into messages and the file); ``remove``: delete the
        file on release (a lock beside a run folder; a sweep's stays in its folder).
        """
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: the file is written, but nothing is locked
            fcntl = None
        path = Path(path)
        for _ in range(10):  # the file is replaced while we wait only if its holder removed it: rare
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0), file_mode())
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise LockError(f"{path} is a symbolic link; refusing to follow it ({what}). Remove the link."
                                    ) from None
                raise LockError(f"cannot create the lock file {path} ({what}): {exc.strerror or exc}") from None
            try:
                try:
                    if fcntl is not None:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise busy(_holder(fd)) from None
                mine = os.fstat(fd)
                try:
                    now = os.lstat(path)
                except FileNotFoundError:
                    now = None
                if now is None or (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino):
                    os.close(fd)  # its holder removed it after we opened it: take the new one
                    continue
                if not stat.S_ISREG(mine.st_mode):
                    raise LockError(f"{path} is not a regular file; refusing to use it as the lock ({what})")
                text = os.pread(fd, 200, 0)
                if text and not _HOLDER.match(text):
                    raise LockError(f"{path} exists and was not written by bayesprune; refusing to replace it "
                                    f"({what}). Move it away.")
                try:
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"pid {os.getpid()} on {HOST} (bayesprune: {what})\n".encode(), 0)
                except OSError as exc:
                    _unlink_if_ours(path, fd)
                    raise LockError(f"cannot write the lock file {path} ({what}): {exc.strerror or exc}") from None
            except BaseException:
                os.close(fd)
                raise
            return cls(path, fd, remove)
        raise LockError(f"cannot take the lock {path} ({what}): it keeps being replaced")

    def release(self) -> None:
        """Remove the file (if asked) while still holding it, then close it (the kernel drops the lock)."""
        if self._fd is None:
            return
        if self._remove:
            _unlink_if_ours(self.path, self._fd)
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def _unlink_if_ours(path: Path, fd: int) -> None:
    try:
        mine, now = os.fstat(fd), os.lstat(path)
        if (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
            os.unlink(path)
    except OSError:
        pass


def lock_path_beside(out: Path) -> Path:
    """The lock of a run folder ``out``: beside it, since ``out`` itself is replaced by a rename."""
    return out.with_name(f".{out.name}.bayesprune.lock")

