"""Writing files so that a crash, a full disk or Ctrl-C never leaves half a file behind.

Every file is written to a temporary name beside its destination, flushed and
fsynced, then renamed over the destination (atomic on POSIX): a reader sees the
old file or the new one, never a mixture.  ``os.replace`` replaces a symlink at
the destination instead of following it.  Temporary files get the permissions a
plain ``open()`` would (the umask's), not ``mkstemp``'s 0600.

JSON is standard JSON: NaN and infinities are written as ``null`` (``json_safe``),
so any tool can read it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def umask() -> int:
    """The process umask (read without changing it for longer than a moment)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    return 0o666 & ~umask()


def dir_mode() -> int:
    return 0o777 & ~umask()


def json_safe(obj: Any) -> Any:
    """A copy with every NaN/inf float replaced by None (and numpy scalars made plain)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "shape", None) == ():  # numpy/torch scalar
        return json_safe(obj.item())
    return obj


def dumps(obj: Any, indent: int | None = None) -> str:
    """Standard JSON (NaN -> null); raises rather than writing a non-standard token."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync, then rename over it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:  # a full disk: say which file
            exc.filename = os.fspath(path)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, payload: Any, indent: int | None = None) -> None:
    """Standard JSON written atomically (the parent folder must exist)."""
    atomic_write_text(path, dumps(payload, indent=indent) + ("\n" if indent else ""))


def write_new(path: str | os.PathLike, data: bytes) -> None:
    """Write a file that must not exist yet (inside a fresh private folder): O_EXCL, no symlink followed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), file_mode())
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:  # a full disk: say which file
        if exc.filename is None:
            exc.filename = os.fspath(path)
        raise
