"""One SQLite connection owned by one thread, which runs every use of it in call order.

sqlite3 blocks, so the event loop hands its work over here. A caller sends a whole unit of
work (a group's transaction, the checks and load at open) as one function: one thread round
trip and one wake-up of the event loop, where a call per statement would cost that many.
Nothing else touches the connection, so it needs no lock.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# A unit of work and the future of the caller waiting for its result.
_Call = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]"]


class DbThread:
    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped = False

    @classmethod
    async def connect(cls, path: Path, *, timeout: float) -> DbThread:
        """Open ``path`` in a new thread; sqlite3.Error if SQLite cannot (the thread is gone
        by then, so it never reports to an event loop that has closed)."""
        worker = cls()
        opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A daemon: a store never closed (a bug) must not keep the process alive at exit.
        # That is no risk to the data: what was committed is durable, and a transaction cut
        # short is rolled back by SQLite at the next open, as after a crash.
        worker._thread = threading.Thread(
            target=worker._serve, args=(path, timeout, opened), name=f"sqlite:{path}", daemon=True
        )
        worker._thread.start()
        try:
            await opened
        except BaseException:
            worker._stop_now()
            raise
        return worker

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` in the thread, after everything sent before it."""
        return await self.call(fn)

    def call(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """``fn(connection)`` handed to the thread now (not when a coroutine first runs):
        its result's future."""
        if self._stopped:
            raise sqlite3.ProgrammingError("the database thread is stopped")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._calls.put((fn, future))
        return future

    async def close(self) -> None:
        """Close the connection (after everything sent before) and end the thread."""
        if self._stopped:
            return
        try:
            await self.run(_close)
        finally:
            self._stop_now()

    def _stop_now(self) -> None:
        self._stopped = True
        self._calls.put(None)
        if self._thread is not None:
            # Its last call is done: the thread is at most returning from it.
            self._thread.join()

    def _serve(self, path: Path, timeout: float, opened: asyncio.Future[None]) -> None:
        try:
            # Autocommit mode (isolation_level None): transactions are begun explicitly.
            db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
        except BaseException as exc:
            _post(opened, None, exc)
            return
        _post(opened, None, None)
        try:
            while (call := self._calls.get()) is not None:
                fn, future = call
                try:
                    result = fn(db)
                except BaseException as exc:
                    _post(future, None, exc)
                else:
                    _post(future, result, None)
        finally:
            db.close()  # a no-op after close(); else the file is let go of all the same


def _close(db: sqlite3.Connection) -> None:
    db.close()


def _post(future: asyncio.Future[Any], result: object, exc: BaseException | None) -> None:
    try:
        future.get_loop().call_soon_threadsafe(_settle, future, result, exc)
    except RuntimeError:
        pass  # the event loop is closed: nobody is waiting any more


def _settle(future: asyncio.Future[Any], result: object, exc: BaseException | None) -> None:
    if future.done():
        return  # the caller was cancelled; the work was done all the same
    if exc is None:
        future.set_result(result)
    else:
        future.set_exception(exc)
