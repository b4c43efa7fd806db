"""Durable store: SQLite in WAL mode, one connection in its own thread, with group commit.

Every commit() call queues its ops and a future. One writer task takes everything queued
(waiting up to ``group_window`` after the first arrival so that concurrent publishers share a
transaction), reduces it to one ``Tables.delta()`` (tables.py: what each op means), writes
that in one transaction with one fsync (sqlite_writes.py), and then resolves all the futures
of that group together (DESIGN §4). The store's files and lock: store_files.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from gateway.broker.records import Snapshot, StoreOp
from gateway.persistence import loader, schema
from gateway.persistence.base import StoreError, StoreStats
from gateway.persistence.dbthread import DbThread
from gateway.persistence.limit import Notify, SizeLimit, growth
from gateway.persistence.sqlite_writes import commit_delta, used_bytes
from gateway.persistence.store_files import move_aside, open_error, prepare_location, take_lock
from gateway.persistence.tables import Tables, apply

log = logging.getLogger(__name__)

T = TypeVar("T")

_SYNCHRONOUS = ("full", "normal", "off")

# The commit() calls of a group: their ops and the futures of those waiting for them.
_Calls = list[tuple[Sequence[StoreOp], asyncio.Future[None]]]
# The group the database thread is writing: its calls, its job, its start time, its ops.
_Running = tuple[_Calls, "asyncio.Future[int | None]", float, int]
# KiB of SQLite page cache. The store is read in full once, at start-up, and then written
# (appends, deletes by key): the B-tree's inner pages and the pages being changed fit easily,
# and the default 2 MiB stayed in the gateway's RSS holding pages read once at start-up.
_CACHE_KIB = 512

# Error codes that say nothing about the file's contents: moving the file aside for one of
# these would throw away a healthy store (e.g. "database is locked" by a second gateway).
_TRANSIENT_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_INTERRUPT,
        sqlite3.SQLITE_AUTH,
    }
)


class _Corrupt(Exception):
    """The file is not a store we can read; it is moved aside and a fresh one is made."""


def _is_transient(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        # Errors raised by the sqlite3 module itself (no SQLite result code) are ours.
        return False
    return (code & 0xFF) in _TRANSIENT_CODES


def _prepare(db: sqlite3.Connection, synchronous: str) -> tuple[int, Snapshot, int]:
    """Runs in the connection's thread: check, migrate and load. Returns (found version,
    snapshot, used bytes). Raises _Corrupt for a file that is not a healthy store of ours."""
    try:
        # Exclusive locking: a second gateway on the same file fails to open it instead of
        # interleaving writes, and WAL then keeps its index in memory (no -shm mapping).
        db.execute("PRAGMA locking_mode = EXCLUSIVE")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("SQLite refused WAL mode (journal_mode is %s); continuing", mode)
        db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        db.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
        # Without a limit the WAL file keeps its largest size forever after a burst.
        db.execute("PRAGMA journal_size_limit = 67108864")
        problems = [str(r[0]) for r in db.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise _Corrupt("quick_check failed: " + "; ".join(problems[:5]))
        found = schema.migrate(db)
        snapshot = _load(db)
        return found, snapshot, used_bytes(db)
    except schema.SchemaTooNew as exc:
        raise _Corrupt(str(exc)) from exc
    except sqlite3.Error as exc:
        if _is_transient(exc):
            raise
        raise _Corrupt(f"{type(exc).__name__}: {exc}") from exc
    except (ValueError, TypeError, KeyError) as exc:  # loader.py quarantines rows: a bug
        raise _Corrupt(f"undecodable store: {exc}") from exc


def _load(db: sqlite3.Connection) -> Snapshot:
    """Everything, with a row that does not decode quarantined by itself (loader.py)."""
    where = str(db.execute("PRAGMA database_list").fetchone()[2])
    return loader.load(db, where).snapshot


async def _connect(path: Path) -> DbThread:
    try:
        return await DbThread.connect(path, timeout=1.0)
    except sqlite3.Error as exc:
        raise open_error(path, exc) from exc


class SqliteStore:
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "full",
        group_window: float = 0.002,
        relaxed_window: float = 1.0,
        max_size_bytes: int = 0,
    ) -> None:
        sync = synchronous.lower()
        if sync not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}")
        if group_window < 0:
            raise ValueError("group_window must be >= 0")
        if relaxed_window < 0:
            raise ValueError("relaxed_window must be >= 0")
        if max_size_bytes < 0:
            raise ValueError("max_size_bytes must be >= 0 (0 = unlimited)")
        self.path = Path(path)
        self._synchronous = sync
        self._window = group_window
        # Ops nobody waits for (submit(urgent=False): delivery progress, QoS 0 retained
        # state) are committed with the next urgent group, or this long after they came:
        # a sensor stream must not cost an fsync per reading (an SD card wears out).
        self._relaxed = relaxed_window
        self._first_urgent: float | None = None
        self._max_size = max_size_bytes
        self._limit = SizeLimit(max_size_bytes) if max_size_bytes else None
        # Estimated bytes of calls not yet committed: queued, and in the group being written.
        self._queued_bytes = 0
        self._writing_bytes = 0
        self._conn: DbThread | None = None
        self._queue: _Calls = []
        self._first_arrival = 0.0
        self._wake: asyncio.Event | None = None
        # While the writer waits out the window: resolved early once this many calls queued.
        self._window_waiter: asyncio.Future[None] | None = None
        self._enough = 2
        self._writer: asyncio.Task[None] | None = None
        self._idle = False  # the writer waits for work (nothing queued, nothing written)
        # The group the database thread is writing: (calls, its job, start time, ops).
        self._running: _Running | None = None
        self._closing = False
        self._opened = False
        # counters behind .stats
        self._commits = 0
        self._calls = 0
        self._ops = 0
        self._failures = 0
        self._failed_calls = 0
        self._last_ms = 0.0
        self._total_ms = 0.0
        self._max_ms = 0.0
        self._size = 0
        self.moved_aside: Path | None = None  # where a corrupt file went, if open() moved one
        self._lock_fd: int | None = None  # <path>.lock, flocked while the store is open

    # --- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> Snapshot:
        if self._opened:
            raise RuntimeError("SqliteStore.open() called twice")
        prepare_location(self.path)
        # Taken before SQLite touches the file: a second gateway on the same store stops here
        # with a clear reason, and never reads, migrates or moves aside the first one's data.
        self._lock_fd = take_lock(self.path)
        try:
            snapshot = await self._open_checked()
        except BaseException:
            self._release_lock()
            raise
        self._opened = True
        self._wake = asyncio.Event()
        self._writer = asyncio.create_task(self._write_loop(), name=f"store-writer:{self.path}")
        return snapshot

    async def _open_checked(self) -> Snapshot:
        try:
            return await self._open_file()
        except _Corrupt as exc:
            log.error(
                "persistence store %s is unreadable (%s); moved it to %s and starting with an "
                "empty store",
                self.path,
                exc,
                self.moved_aside,
            )
            try:
                return await self._open_file()
            except _Corrupt as again:
                raise StoreError(f"fresh store {self.path} is unusable: {again}") from again

    async def _open_file(self) -> Snapshot:
        conn = await _connect(self.path)
        sync = self._synchronous
        try:
            found, snapshot, size = await conn.run(lambda db: _prepare(db, sync))
        except _Corrupt:
            # Move the files while SQLite still holds them: closing first would let it delete
            # a -wal it could not use, destroying evidence (and maybe data) of the bad file.
            try:
                self.moved_aside = move_aside(self.path)
            finally:
                await conn.close()
            raise
        except BaseException as exc:
            await conn.close()
            if isinstance(exc, sqlite3.Error):
                raise open_error(self.path, exc) from exc
            raise
        if found != schema.SCHEMA_VERSION:
            log.info(
                "persistence store %s: schema %d -> %d", self.path, found, schema.SCHEMA_VERSION
            )
        self._conn = conn
        self._size = size
        log.info(
            "persistence store %s opened: %d sessions, %d subscriptions, %d messages, "
            "%d queued, %d retained",
            self.path,
            len(snapshot.sessions),
            len(snapshot.subscriptions),
            len(snapshot.messages),
            len(snapshot.queue),
            len(snapshot.retained),
        )
        return snapshot

    def _release_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # releases the flock; the file stays (removing it would race)

    async def close(self) -> None:
        if self._closing:
            if self._writer is not None:
                await asyncio.shield(self._writer)
            return
        self._closing = True
        if self._writer is not None:
            assert self._wake is not None
            self._wake.set()
            if self._window_waiter is not None and not self._window_waiter.done():
                self._window_waiter.set_result(None)
            await asyncio.shield(self._writer)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()
        self._release_lock()

    # --- commits -----------------------------------------------------------------------------

    async def commit(self, ops: Sequence[StoreOp]) -> None:
        # A cancelled caller does not withdraw its ops: they are committed with their group.
        await self.submit(ops)

    def submit(self, ops: Sequence[StoreOp], *, urgent: bool = True) -> asyncio.Future[None]:
        if self._closing or self._wake is None:
            raise StoreError("store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if not self._queue:
            self._first_arrival = loop.time()
            self._wake.set()
        self._queue.append((ops, future))
        if self._limit is not None:
            # Now, not after the commit: the broker must stop storing before more comes.
            self._queued_bytes += growth(ops)
            self._limit.update(self._size + self._writing_bytes + self._queued_bytes)
        waiter = self._window_waiter
        if urgent and self._idle and not self._window and self._running is None:
            # Commit when the writer is free, from here rather than a loop turn later in
            # the writer task: the thread writes this while the loop handles the other
            # clients' packets that came in the same turn (they make the next group).
            self._first_urgent = loop.time()
            self._begin_group()
            return future
        if urgent and self._first_urgent is None:
            self._first_urgent = loop.time()
            if waiter is not None and not waiter.done():
                waiter.set_result(None)  # the writer waits for relaxed ops: wait less
        elif (
            self._first_urgent is not None
            and waiter is not None
            and len(self._queue) >= self._enough
            and not waiter.done()
        ):
            waiter.set_result(None)
        return future

    async def _write_loop(self) -> None:
        assert self._wake is not None
        wake = self._wake
        loop = asyncio.get_running_loop()
        while True:
            if self._running is not None:
                await self._finish_group(*self._running)
                continue
            if not self._queue:
                if self._closing:
                    return
                wake.clear()
                self._idle = True
                try:
                    await wake.wait()
                finally:
                    self._idle = False
                continue
            urgent_at = self._first_urgent
            if urgent_at is None:
                delay = self._first_arrival + self._relaxed - loop.time()
                if delay > 0 and not self._closing:
                    await self._wait_window(loop, delay)
                    continue  # an urgent call may have come, or started a group itself
            else:
                delay = urgent_at + self._window - loop.time()
                if delay > 0 and not self._closing and len(self._queue) < self._enough:
                    await self._wait_window(loop, delay)
                    continue
            self._begin_group()

    def _begin_group(self) -> None:
        """Hand everything queued to the database thread as one transaction, now: while
        the thread writes it, the event loop goes on with what the next group gathers (the
        writer task only waits for the outcome: _finish_group)."""
        conn = self._conn
        assert conn is not None and self._wake is not None
        group, self._queue = self._queue, []
        self._writing_bytes, self._queued_bytes = self._queued_bytes, 0
        self._first_urgent = None
        # The window is cut short once a group as large as this one has gathered: when
        # as many callers as last time are already back (e.g. all publishers waiting on
        # their acks), waiting longer only leaves the disk idle. A lone call still waits
        # for company, which is what saves fsyncs at moderate load.
        self._enough = max(2, len(group))
        started = time.perf_counter()
        plan = Tables.delta()
        n_ops = 0
        wal = None
        if self._limit is not None:
            wal = (f"{self.path}-wal", self._limit.wal_budget, not self._commits)
        job: asyncio.Future[int | None]
        try:
            for ops, _ in group:
                apply(plan, ops)
                n_ops += len(ops)
            job = conn.call(lambda db: commit_delta(db, plan, wal))
        except Exception as exc:  # a bad op (apply's TypeError): nothing of it is written
            job = asyncio.get_running_loop().create_future()
            job.set_exception(exc)
        self._running = (group, job, started, n_ops)
        self._wake.set()

    async def _finish_group(
        self,
        group: _Calls,
        job: asyncio.Future[int | None],
        started: float,
        n_ops: int,
    ) -> None:
        try:
            size = await job
        except asyncio.CancelledError:
            self._running = None
            self._fail(group, StoreError("store writer cancelled; outcome unknown"))
            raise
        except Exception as exc:
            self._running = None
            self._failures += 1
            self._failed_calls += len(group)
            self._measured(None)  # rolled back: the store did not grow
            log.error(
                "persistence commit FAILED for %d calls / %d ops, rolled back: %s",
                len(group),
                n_ops,
                exc,
                exc_info=exc,
            )
            self._fail(group, exc)
            return
        self._running = None
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        self._commits += 1
        self._calls += len(group)
        self._ops += n_ops
        self._last_ms = elapsed_ms
        self._total_ms += elapsed_ms
        if elapsed_ms > self._max_ms:
            self._max_ms = elapsed_ms
        self._measured(size)
        for _, future in group:
            if not future.done():
                future.set_result(None)
        if self._queue and self._first_urgent is not None and not self._window:
            self._begin_group()  # what came meanwhile goes now, not a loop turn later

    async def _wait_window(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        waiter: asyncio.Future[None] = loop.create_future()
        self._window_waiter = waiter
        timer = loop.call_later(delay, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._window_waiter = None

    @staticmethod
    def _fail(group: _Calls, cause: BaseException) -> None:
        message = f"commit failed: {cause}"
        for _, future in group:
            if not future.done():
                # One instance per waiter: a shared exception would collect every
                # waiter's traceback.
                err = StoreError(message)
                err.__cause__ = cause
                future.set_exception(err)

    # --- observation -------------------------------------------------------------------------

    async def run_in_db(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` in the store's database thread, between two groups'
        transactions: for diagnostics and tests (a PRAGMA to read or set)."""
        if self._conn is None:
            raise StoreError("store is not open")
        return await self._conn.run(fn)

    @property
    def stats(self) -> StoreStats:
        return StoreStats(
            commits=self._commits,
            calls=self._calls,
            ops=self._ops,
            failures=self._failures,
            failed_calls=self._failed_calls,
            last_commit_ms=self._last_ms,
            avg_commit_ms=self._total_ms / self._commits if self._commits else 0.0,
            max_commit_ms=self._max_ms,
            size_bytes=self._size,
            pending_calls=len(self._queue),
        )

    def over_limit(self) -> bool:
        """Full (persistence.max_size_mb, see limit.py): from reaching the limit until the
        store is back under it by a margin."""
        if self._limit is None:
            return False
        return self._limit.update(self._size + self._writing_bytes + self._queued_bytes)

    @property
    def on_limit(self) -> Notify | None:
        """Called with (full, detail) whenever over_limit() changes."""
        return None if self._limit is None else self._limit.on_change

    @on_limit.setter
    def on_limit(self, notify: Notify | None) -> None:
        if self._limit is not None:
            self._limit.on_change = notify

    def _measured(self, size: int | None) -> None:
        """After a group's transaction: its ops are in the measured size (or rolled back)."""
        if size is not None:
            self._size = size
        self._writing_bytes = 0
        if self._limit is not None:
            self._limit.update(self._size + self._queued_bytes)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
