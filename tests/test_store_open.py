"""Opening the SQLite store: its lock, and the errors a person can act on (one line each)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from gateway.broker.records import Message, PutMessage
from gateway.persistence import SqliteStore, StoreError


def _message(msg_id: int) -> Message:
    return Message(msg_id=msg_id, topic="t", payload=b"x", qos=1, retain=False)


async def test_the_lock_names_its_holder_and_goes_with_close(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    first = SqliteStore(path)
    await first.open()
    await first.commit([PutMessage(_message(1))])
    with pytest.raises(StoreError) as caught:
        await SqliteStore(path).open()
    assert str(caught.value) == (
        f"the store {path} is in use by another edge-gateway (pid {os.getpid()}): stop it "
        "first, or give each gateway its own store"
    )
    await first.commit([PutMessage(_message(2))])  # the first one is untouched
    await first.close()
    again = SqliteStore(path)
    snapshot = await again.open()
    assert sorted(m.msg_id for m in snapshot.messages) == [1, 2]
    await again.close()
    assert not list(tmp_path.glob("*.corrupt-*"))


async def test_a_failed_open_releases_the_lock(tmp_path: Path) -> None:
    """Another program (here the sqlite3 module) holds the database: the open fails with a
    clear reason, and the store's own lock does not outlive the failure."""
    path = tmp_path / "gw.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("PRAGMA locking_mode = EXCLUSIVE")
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError) as caught:
            await SqliteStore(path).open()
        assert str(caught.value).startswith(f"cannot open the store {path}: database is locked")
        assert "another program has it open" in str(caught.value)
    finally:
        other.execute("COMMIT")
        other.close()
    store = SqliteStore(path)
    await store.open()
    await store.close()
    assert not list(tmp_path.glob("*.corrupt-*"))


async def test_a_path_below_a_file(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    for path in (tmp_path / "state" / "gw.db", tmp_path / "state" / "sub" / "gw.db"):
        with pytest.raises(StoreError) as caught:
            await SqliteStore(path).open()
        assert str(caught.value) == (
            f"cannot create the store {path}: {tmp_path / 'state'} is a file, not a directory"
        )


async def test_a_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as caught:
        await SqliteStore(tmp_path).open()
    assert str(caught.value) == (
        f"the store {tmp_path} is a directory: name a file in it, e.g. "
        f"{tmp_path / 'edge-gateway.db'}"
    )
