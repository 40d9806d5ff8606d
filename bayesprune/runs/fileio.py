"""Writing files so that a crash, a full disk or Ctrl-C never leaves half a file behind.

Every file is written to a temporary name beside its destination, flushed and
fsynced, then renamed over the destination (atomic on POSIX): a reader sees the
old file or the new one, never a mixture.  ``os.replace`` replaces a symlink at
the destination instead of following it.  Temporary files get the permissions a
plain ``open()`` would (the umask's), not ``mkstemp``'s 0600.

JSON is standard JSON: NaN and infinities are written as ``null`` (``json_safe``),
so any tool can read it.

Every temporary file or folder the package writes is named
``.<name>.bayesprune-<host>-<pid>.<random>.tmp`` (:func:`temp_prefix`): the package's
tag and the writer's machine and pid, so that a clean-up deletes only what a writer of
ours left behind, and only once that writer is gone (:func:`temp_writer_gone`).
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import stat
import tempfile
from pathlib import Path
from typing import Any

#: The tag in every temporary name the package writes.
TEMP_TAG = "bayesprune"
#: This machine, as it appears in temporary names (a shared folder may see several machines).
HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


def temp_prefix(name: str) -> str:
    """The start of this process's temporary names for ``name`` (a file or folder beside it)."""
    return f".{name}.{TEMP_TAG}-{HOST}-{os.getpid()}."


_TEMP_NAME = re.compile(rf"^\.(?P<name>.+)\.{TEMP_TAG}-(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)\.(?P<rest>[^.]+)\.tmp$")


def parse_temp_name(entry: str) -> tuple[str, str, int, str] | None:
    """``(name, host, pid, rest)`` of a temporary name the package made (:func:`temp_prefix`), else None."""
    m = _TEMP_NAME.match(entry)
    return (m["name"], m["host"], int(m["pid"]), m["rest"]) if m else None


def temp_writer(entry: str, name: str) -> tuple[str, int, str] | None:
    """``(host, pid, rest)`` if ``entry`` is a temporary name the package made for ``name``, else None."""
    parsed = parse_temp_name(entry)
    if parsed is None or parsed[0] != name:
        return None
    return parsed[1], parsed[2], parsed[3]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def temp_writer_gone(entry: str, name: str | None = None) -> bool:
    """Whether ``entry`` is our temporary name (for ``name``, if given) whose writer, a process on this
    machine, is gone: only then may a clean-up delete it."""
    parsed = parse_temp_name(entry)
    if parsed is None or (name is not None and parsed[0] != name):
        return False
    _, host, pid, _ = parsed
    return host == HOST and pid != os.getpid() and not pid_alive(pid)


def is_real_dir(path: str | os.PathLike) -> bool:
    """A folder, and not a symbolic link to one (``lstat``: never follows the last component)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def is_real_file(path: str | os.PathLike) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def read_small(path: str | os.PathLike, limit: int = 1 << 20) -> bytes | None:
    """The bytes of a regular file of at most ``limit`` bytes, opened without following a symlink; else None."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        return os.read(fd, limit + 1)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_small_json(path: str | os.PathLike) -> Any:
    """A small regular JSON file's content, or None if it is missing, a link, too big or not JSON."""
    data = read_small(path)
    if data is None:
        return None
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


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
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    except OSError as exc:  # a full disk (no inode left) or a folder that went away: say which file
        exc.filename = os.fspath(path)
        raise
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
