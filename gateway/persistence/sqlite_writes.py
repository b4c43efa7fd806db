"""A group of commits as SQL: one transaction that writes a ``Tables.delta()`` (tables.py).

Runs in the store's database thread. The delta already holds the final state of each key the
group touched, so every table gets at most one executemany for its deletes and one for its
upserts: a key put then deleted in the same group costs one DELETE (or nothing, for a key the
group created: tables.py), and the per-op Python work was a dict assignment. Deletes by integer
key go as runs (``BETWEEN``): a drain acknowledges consecutive seqs of consecutive messages,
and one range statement per run costs SQLite a fraction of a lookup per row. Sessions dropped
in the group lose their stored rows first; the rows the group put after dropping them are in
the delta and are written after.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
from collections.abc import Callable
from typing import Literal, TypeVar

from gateway.broker.records import Message, QueueEntry
from gateway.persistence import codec
from gateway.persistence.tables import Tables

log = logging.getLogger(__name__)

K = TypeVar("K")
R = TypeVar("R")
Row = tuple[object, ...]

_PUT_SESSION = (
    f"INSERT OR REPLACE INTO sessions ({codec.SESSION_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_PUT_SUBSCRIPTION = (
    f"INSERT OR REPLACE INTO subscriptions ({codec.SUBSCRIPTION_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_PUT_MESSAGE = (
    f"INSERT OR REPLACE INTO messages ({codec.MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_PUT_QUEUE_ENTRY = (
    f"INSERT OR REPLACE INTO queue ({codec.QUEUE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_PUT_INBOUND = "INSERT OR IGNORE INTO inbound_qos2 (client_id, packet_id) VALUES (?, ?)"
_PUT_RETAINED = (
    f"INSERT OR REPLACE INTO retained (topic, {codec.MESSAGE_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_DELETE_SESSION = "DELETE FROM sessions WHERE client_id = ?"
_DELETE_SUBSCRIPTION = "DELETE FROM subscriptions WHERE client_id = ? AND topic_filter = ?"
_DELETE_MESSAGES = "DELETE FROM messages WHERE msg_id BETWEEN ? AND ?"
_DELETE_QUEUE_ENTRIES = "DELETE FROM queue WHERE client_id = ? AND seq BETWEEN ? AND ?"
_DELETE_INBOUND = "DELETE FROM inbound_qos2 WHERE client_id = ? AND packet_id = ?"
_DELETE_RETAINED = "DELETE FROM retained WHERE topic = ?"
_DROP_SESSION_ROWS = (
    "DELETE FROM subscriptions WHERE client_id = ?",
    "DELETE FROM queue WHERE client_id = ?",
    "DELETE FROM inbound_qos2 WHERE client_id = ?",
)


def commit_delta(
    db: sqlite3.Connection, delta: Tables, wal: tuple[str, int, bool] | None = None
) -> int | None:
    """Write and commit; then keep the WAL within its share of a size limit (``wal``: its
    path, its budget, and whether this is the store's first commit), and measure the data
    (None if that failed: the transaction is committed all the same)."""
    write_delta(db, delta)
    try:
        if wal is not None:
            _limit_wal(db, *wal)
        return used_bytes(db)
    except sqlite3.Error:
        # The transaction is committed; failing to measure must not report it as failed.
        log.exception("could not measure the store size")
        return None


def write_delta(db: sqlite3.Connection, delta: Tables) -> None:
    """One transaction for the whole group: all of it is stored, or none of it."""
    db.execute("BEGIN")
    try:
        _write_rows(db, delta)
        db.execute("COMMIT")
    except BaseException:
        # SQLite rolls some failures back by itself (e.g. SQLITE_FULL during COMMIT).
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("rollback failed")
        raise


def _write_rows(db: sqlite3.Connection, d: Tables) -> None:
    if d.dropped:
        client_ids = [(cid,) for cid in d.dropped]
        for sql in _DROP_SESSION_ROWS:
            db.executemany(sql, client_ids)
    if d.sessions:
        _write(db, d.sessions, _DELETE_SESSION, _PUT_SESSION, codec.session_row)
    if d.subscriptions:
        _write_owned(
            db, d.subscriptions, _DELETE_SUBSCRIPTION, _PUT_SUBSCRIPTION, codec.subscription_row
        )
    if d.messages:
        _write_messages(db, d.messages)
    if d.queue:
        _write_queue(db, d.queue)
    if d.inbound_qos2:
        _write_inbound(db, d.inbound_qos2)
    if d.retained:
        _write(db, d.retained, _DELETE_RETAINED, _PUT_RETAINED, codec.retained_row)


def _write(
    db: sqlite3.Connection,
    rows: dict[K, R | None],
    delete: str,
    put: str,
    to_row: Callable[[R], Row],
) -> None:
    """A table keyed by one column: ``None`` rows are deleted, the others upserted."""
    puts: list[Row] = []
    deletes: list[tuple[K]] = []
    for key, r in rows.items():
        if r is None:
            deletes.append((key,))
        else:
            puts.append(to_row(r))
    if deletes:
        db.executemany(delete, deletes)
    if puts:
        db.executemany(put, puts)


def _write_owned(
    db: sqlite3.Connection,
    table: dict[str, dict[K, R | None]],
    delete: str,
    put: str,
    to_row: Callable[[R], Row],
) -> None:
    """A table of rows a session owns, keyed by (client id, key)."""
    puts: list[Row] = []
    deletes: list[tuple[str, K]] = []
    for cid, rows in table.items():
        for key, r in rows.items():
            if r is None:
                deletes.append((cid, key))
            else:
                puts.append(to_row(r))
    if deletes:
        db.executemany(delete, deletes)
    if puts:
        db.executemany(put, puts)


def _write_messages(db: sqlite3.Connection, rows: dict[int, Message | None]) -> None:
    puts: list[Row] = []
    deleted: list[int] = []
    message_row = codec.message_row
    for msg_id, m in rows.items():
        if m is None:
            deleted.append(msg_id)
        else:
            puts.append(message_row(m))
    if deleted:
        db.executemany(_DELETE_MESSAGES, runs(deleted))
    if puts:
        _insert_rows(db, _PUT_MESSAGE, puts)


def _write_queue(db: sqlite3.Connection, table: dict[str, dict[int, QueueEntry | None]]) -> None:
    puts: list[Row] = []
    deletes: list[tuple[str, int, int]] = []
    queue_row = codec.queue_row
    for cid, rows in table.items():
        deleted: list[int] = []
        for seq, e in rows.items():
            if e is None:
                deleted.append(seq)
            else:
                puts.append(queue_row(e))
        if deleted:
            deletes.extend((cid, first, last) for first, last in runs(deleted))
    if deletes:
        db.executemany(_DELETE_QUEUE_ENTRIES, deletes)
    if puts:
        _insert_rows(db, _PUT_QUEUE_ENTRY, puts)


# Rows per INSERT statement, at most: VALUES (...), (...), ... with 256 rows of 9 columns is
# 2,304 parameters, within SQLite's limit (32,766 since 3.32; 999 before: see _chunk_rows).
_MAX_CHUNK = 256


def _insert_rows(db: sqlite3.Connection, put: str, rows: list[Row]) -> None:
    """``executemany(put, rows)`` as multi-row INSERTs. executemany binds and steps one row
    at a time, releasing the GIL around every step: with the event loop busy, each row then
    waited for the GIL again, and the group's commit with it. Chunks are powers of two, so
    that the statement cache holds a handful of statements per table."""
    width = len(rows[0])
    chunk = _chunk_rows(db, width)
    i, n = 0, len(rows)
    while i < n:
        size = chunk
        while size > n - i:
            size //= 2
        db.execute(_multi_row_sql(put, width, size), [v for row in rows[i : i + size] for v in row])
        i += size


@functools.cache
def _multi_row_sql(put: str, width: int, rows: int) -> str:
    head, _, _ = put.rpartition(" VALUES ")
    one = "(" + ", ".join("?" * width) + ")"
    return f"{head} VALUES " + ", ".join([one] * rows)


def _chunk_rows(db: sqlite3.Connection, width: int) -> int:
    limit = db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    chunk = _MAX_CHUNK
    while chunk > 1 and chunk * width > limit:
        chunk //= 2
    return chunk


def runs(keys: list[int]) -> list[tuple[int, int]]:
    """``keys`` (distinct) as (first, last) runs of consecutive integers, ascending."""
    keys.sort()
    out: list[tuple[int, int]] = []
    first = last = keys[0]
    for k in keys[1:]:
        if k != last + 1:
            out.append((first, last))
            first = k
        last = k
    out.append((first, last))
    return out


def _write_inbound(
    db: sqlite3.Connection, table: dict[str, dict[int, Literal[True] | None]]
) -> None:
    """The key is the whole row here."""
    puts: list[tuple[str, int]] = []
    deletes: list[tuple[str, int]] = []
    for cid, packet_ids in table.items():
        for packet_id, present in packet_ids.items():
            (puts if present else deletes).append((cid, packet_id))
    if deletes:
        db.executemany(_DELETE_INBOUND, deletes)
    if puts:
        db.executemany(_PUT_INBOUND, puts)


def used_bytes(db: sqlite3.Connection) -> int:
    """Bytes of pages in use: unlike the file size it shrinks again when data is deleted."""
    row = db.execute(
        "SELECT (p.page_count - f.freelist_count) * s.page_size "
        "FROM pragma_page_count() AS p, pragma_freelist_count() AS f, pragma_page_size() AS s"
    ).fetchone()
    return int(row[0])


def _limit_wal(db: sqlite3.Connection, path: str, budget: int, first: bool) -> None:
    """Keep the WAL file within ``budget``. SQLite checkpoints it when it holds this many
    pages and then writes it again from the start; a commit larger than what is left makes
    the file grow past it (and SQLite never shrinks it): then it is checkpointed and
    truncated here. With the exclusive lock there is no reader to wait for."""
    if first:
        page = int(db.execute("PRAGMA page_size").fetchone()[0])
        pages = max(8, budget // (page + 24) * 3 // 4)  # a frame is a page and a header
        db.execute(f"PRAGMA wal_autocheckpoint = {pages}").fetchall()
    try:
        size = os.path.getsize(path)
    except OSError:
        return  # no WAL file (yet): nothing to limit
    if size > budget:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
