"""The store's files as the operating system sees them: its directory, the lock that keeps a
second gateway off it, a corrupt file moved aside, and errors a person can act on."""

from __future__ import annotations

import errno
import fcntl
import os
import pwd
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from gateway.persistence.base import StoreError


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _os_reason(exc: OSError) -> str:
    return os.strerror(exc.errno).lower() if exc.errno else str(exc)


def _access_problem(path: Path, exc: OSError) -> str:
    """What went wrong with ``path``, and the fix, for the errors a person can fix."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied on {path}: make it writable by user {_user()}"
    if exc.errno == errno.EROFS:
        return f"{path} is on a read-only file system"
    return f"{path}: {_os_reason(exc)}"


def prepare_location(path: Path) -> None:
    """The store's directory, created if missing; StoreError naming what is in the way."""
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise StoreError(
                f"the store {path} is a directory: name a file in it, e.g. "
                f"{path / 'edge-gateway.db'}"
            )
        return
    except (FileExistsError, NotADirectoryError):
        pass  # below: which part of the path is a file
    except OSError as exc:
        blocked = _first_existing(directory)
        raise StoreError(
            f"cannot create the store {path}: {_access_problem(blocked, exc)}"
        ) from None
    blocked = _first_existing(directory)
    raise StoreError(f"cannot create the store {path}: {blocked} is a file, not a directory")


def _first_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return path


def take_lock(path: Path) -> int:
    """An exclusive flock on ``<path>.lock`` holding our pid; StoreError if another process
    has it. flock, not the POSIX locks SQLite uses on the database itself: those are dropped
    when any descriptor of the file is closed in the process, and they are per process."""
    lock_path = Path(f"{path}.lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    except OSError as exc:
        problem = _access_problem(lock_path if lock_path.exists() else path.parent, exc)
        raise StoreError(f"cannot create the store {path}: {problem}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise StoreError(f"cannot lock the store {path}: {_os_reason(exc)}") from None
        who = f" (pid {holder})" if holder.isdigit() else ""
        raise StoreError(
            f"the store {path} is in use by another edge-gateway{who}: stop it first, or give "
            "each gateway its own store"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def open_error(path: Path, exc: sqlite3.Error) -> StoreError:
    code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_CANTOPEN):
        problem = f"{exc}: make it and its directory writable by user {_user()}"
    elif code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        problem = f"{exc}: another program has it open"
    else:
        problem = str(exc)
    return StoreError(f"cannot open the store {path}: {problem}")


def _utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def move_aside(path: Path) -> Path:
    """Moves the store's files to ``<path>.corrupt-<time>``; returns that path."""
    base = f"{path}.corrupt-{_utc_stamp()}"
    target = Path(base)
    n = 1
    while target.exists():
        target = Path(f"{base}.{n}")
        n += 1
    for suffix in ("", "-wal", "-shm", "-journal"):
        src = Path(f"{path}{suffix}")
        if src.exists():
            try:
                os.replace(src, f"{target}{suffix}")
            except OSError as exc:
                raise StoreError(f"cannot move corrupt store {src} aside: {exc}") from exc
    return target
