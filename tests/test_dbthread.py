"""The store's database thread: one connection, one thread, work done in call order."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.persistence.dbthread import DbThread


def _threads_named(path: Path) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"sqlite:{path}"]


async def test_work_runs_in_one_thread_in_call_order(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    db = await DbThread.connect(path, timeout=1.0)
    seen: list[tuple[int, int]] = []

    def step(n: int) -> int:
        seen.append((n, threading.get_ident()))
        return n * 10

    def call(n: int) -> Callable[[sqlite3.Connection], int]:
        return lambda _: step(n)

    results = await asyncio.gather(*(db.run(call(n)) for n in range(20)))
    assert results == [n * 10 for n in range(20)]
    assert [n for n, _ in seen] == list(range(20))
    assert len({ident for _, ident in seen}) == 1
    assert seen[0][1] != threading.get_ident()  # not the event loop's thread
    await db.close()


async def test_an_error_goes_to_its_caller_and_the_thread_goes_on(tmp_path: Path) -> None:
    db = await DbThread.connect(tmp_path / "x.db", timeout=1.0)
    with pytest.raises(sqlite3.OperationalError, match="syntax"):
        await db.run(lambda c: c.execute("NOT SQL"))
    assert await db.run(lambda c: c.execute("SELECT 7").fetchone()[0]) == 7
    await db.close()


async def test_a_cancelled_caller_does_not_undo_its_work(tmp_path: Path) -> None:
    db = await DbThread.connect(tmp_path / "x.db", timeout=1.0)
    await db.run(lambda c: c.execute("CREATE TABLE t (v)"))
    release = threading.Event()

    def slow_insert(c: sqlite3.Connection) -> None:
        release.wait(5)
        c.execute("INSERT INTO t VALUES (1)")

    task = asyncio.create_task(db.run(slow_insert))
    await asyncio.sleep(0.01)
    task.cancel()
    release.set()
    assert await db.run(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0]) == 1
    await db.close()


async def test_close_ends_the_thread_and_later_work_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    db = await DbThread.connect(path, timeout=1.0)
    assert len(_threads_named(path)) == 1
    await db.close()
    assert _threads_named(path) == []
    with pytest.raises(sqlite3.ProgrammingError):
        await db.run(lambda c: None)
    await db.close()  # twice is fine


async def test_a_file_sqlite_cannot_open_leaves_no_thread(tmp_path: Path) -> None:
    path = tmp_path / "missing-dir" / "x.db"
    with pytest.raises(sqlite3.OperationalError):
        await DbThread.connect(path, timeout=1.0)
    assert _threads_named(path) == []
