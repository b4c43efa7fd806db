"""Loading the store at start-up, with a row that does not decode quarantined by itself
(DESIGN §8: one unreadable row must not cost every other session its messages).

Each table is read in one fast pass. Only when a row of it fails to decode (bytes that are
not UTF-8 in a TEXT column, JSON that is not ours, a state code we do not know ...) is that
table read again, row by row: the rows that decode are kept and the others are moved to the
``quarantine`` table (schema v5) with their table, key, session and the error. Rows that
depend on a quarantined one follow it, so that what loads is consistent: the subscriptions,
queue entries and QoS 2 state of a quarantined session, the queue entries of a quarantined
message, and a message that only quarantined queue entries referenced.

Errors that are not about one row's content (a missing table or column, I/O, a damaged page)
are not handled here: they propagate, and the caller moves such a file aside.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from gateway.broker.records import Message, Snapshot
from gateway.persistence import codec

log = logging.getLogger(__name__)

R = TypeVar("R")

# Quarantined rows logged one by one; beyond this a damaged store would flood the log.
LOGGED_ROWS = 20

# What a row that does not decode raises (json's errors and UnicodeDecodeError are
# ValueErrors, codec.RowError too).
_DECODE_ERRORS = (ValueError, TypeError, KeyError, IndexError)


class _BadText:
    """A TEXT value that is not valid UTF-8, as read by the careful pass."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw


def _tolerant_text(raw: bytes) -> str | _BadText:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return _BadText(raw)


@dataclass(frozen=True, slots=True)
class Table(Generic[R]):
    name: str
    columns: tuple[str, ...]
    keys: tuple[str, ...]  # the primary key's columns, all of them in `columns`
    decode: Callable[[tuple[Any, ...]], R]
    order: str = ""

    def select(self) -> str:
        return f"SELECT {', '.join(self.columns)} FROM {self.name}{self.order}"


def _columns(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(","))


def _inbound_from_row(row: tuple[Any, ...]) -> tuple[str, int]:
    client_id, packet_id = row
    if not isinstance(client_id, str):
        raise codec.RowError(f"client id {client_id!r} is not text")
    return client_id, int(packet_id)


def _retained_from_row(row: tuple[Any, ...]) -> Message:
    return codec.message_from_row(row[1:])


SESSIONS = Table("sessions", _columns(codec.SESSION_COLUMNS), ("client_id",),
                 codec.session_from_row)  # fmt: skip
SUBSCRIPTIONS = Table("subscriptions", _columns(codec.SUBSCRIPTION_COLUMNS),
                      ("client_id", "topic_filter"), codec.subscription_from_row)  # fmt: skip
MESSAGES = Table("messages", _columns(codec.MESSAGE_COLUMNS), ("msg_id",),
                 codec.message_from_row)  # fmt: skip
QUEUE = Table("queue", _columns(codec.QUEUE_COLUMNS), ("client_id", "seq"),
              codec.queue_entry_from_row, " ORDER BY seq")  # fmt: skip
INBOUND_QOS2 = Table("inbound_qos2", ("client_id", "packet_id"), ("client_id", "packet_id"),
                     _inbound_from_row)  # fmt: skip
RETAINED = Table("retained", ("topic", *_columns(codec.MESSAGE_COLUMNS)), ("topic",),
                 _retained_from_row)  # fmt: skip


@dataclass(slots=True)
class BadRow:
    table: Table[Any]
    values: tuple[Any, ...]  # as read (or, for a row that follows another, as encoded)
    reason: str
    sessions: tuple[str, ...] = ()  # the session(s) it belonged to, where known

    def value(self, column: str) -> Any:
        return self.values[self.table.columns.index(column)]

    def key_text(self) -> str:
        return ", ".join(f"{k}={_shown(self.value(k))}" for k in self.table.keys)


@dataclass(slots=True)
class Loaded:
    snapshot: Snapshot
    quarantined: list[BadRow] = field(default_factory=list)


def load(db: sqlite3.Connection, where: str = "") -> Loaded:
    """Read every table into a Snapshot; move rows that do not decode (and the rows that
    depend on them) to the quarantine table, in one transaction. ``where`` names the store
    in log lines. ``db`` must be in autocommit mode."""
    bad: list[BadRow] = []
    snap = Snapshot(
        sessions=read(db, SESSIONS, bad),
        subscriptions=read(db, SUBSCRIPTIONS, bad),
        messages=read(db, MESSAGES, bad),
        queue=read(db, QUEUE, bad),
        inbound_qos2=read(db, INBOUND_QOS2, bad),
        retained=read(db, RETAINED, bad),
    )
    if not bad:
        return Loaded(snap)
    _follow(snap, bad)
    _move(db, bad, time.time())
    _log(bad, where)
    return Loaded(snap, bad)


def read(db: sqlite3.Connection, table: Table[R], bad: list[BadRow]) -> list[R]:
    """The table's rows that decode; the others are appended to ``bad``."""
    cursor = db.execute(table.select())  # a missing table or column is not a row's fault
    try:
        return [table.decode(row) for row in cursor]
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorcode", None) is not None:
            raise  # I/O or a damaged page: SQLite's own error, not a row's content
    except _DECODE_ERRORS:
        pass
    finally:
        cursor.close()
    return _read_carefully(db, table, bad)


def _read_carefully(db: sqlite3.Connection, table: Table[R], bad: list[BadRow]) -> list[R]:
    previous = db.text_factory
    db.text_factory = _tolerant_text
    try:
        rows = db.execute(table.select()).fetchall()
    finally:
        db.text_factory = previous
    good: list[R] = []
    for row in rows:
        try:
            for column, value in zip(table.columns, row, strict=True):
                if isinstance(value, _BadText):
                    raise codec.RowError(f"{column} is not valid UTF-8 text")
            good.append(table.decode(row))
        except _DECODE_ERRORS as exc:
            reason = f"{type(exc).__name__}: {exc}"
            b = BadRow(table, tuple(row), reason)
            if "client_id" in table.columns:
                b.sessions = (_client_text(b.value("client_id")),)
            bad.append(b)
    return good


def _follow(snap: Snapshot, bad: list[BadRow]) -> None:
    """Quarantine, and take out of ``snap``, the rows that depend on a quarantined one."""
    lost_sessions = {b.value("client_id") for b in bad if b.table is SESSIONS}
    lost_messages = {b.value("msg_id") for b in bad if b.table is MESSAGES}
    # Whose queue held each message, for the log line of a quarantined message.
    holders: dict[object, set[str]] = {}
    for e in snap.queue:
        holders.setdefault(e.msg_id, set()).add(e.client_id)
    for b in bad:
        if b.table is QUEUE:
            holders.setdefault(b.value("msg_id"), set()).add(_client_text(b.value("client_id")))
    for b in bad:
        if b.table is MESSAGES:
            b.sessions = tuple(sorted(holders.get(b.value("msg_id"), ())))

    snap.subscriptions = _keep(
        snap.subscriptions, bad, SUBSCRIPTIONS, codec.subscription_row,
        lambda s: "its session was quarantined" if s.client_id in lost_sessions else None,
    )  # fmt: skip
    snap.queue = _keep(
        snap.queue, bad, QUEUE, codec.queue_row,
        lambda e: "its session was quarantined" if e.client_id in lost_sessions
        else "its message was quarantined" if e.msg_id in lost_messages else None,
    )  # fmt: skip
    snap.inbound_qos2 = _keep(
        snap.inbound_qos2, bad, INBOUND_QOS2, lambda pair: pair,
        lambda pair: "its session was quarantined" if pair[0] in lost_sessions else None,
    )  # fmt: skip
    # A message whose every queue entry is quarantined goes with them: kept where an operator
    # can see it, rather than deleted as unreferenced by the broker's restore.
    referenced = {e.msg_id for e in snap.queue}
    orphaned = {b.value("msg_id") for b in bad if b.table is QUEUE} - referenced
    snap.messages = _keep(
        snap.messages, bad, MESSAGES, codec.message_row,
        lambda m: "only quarantined queue entries held it" if m.msg_id in orphaned else None,
    )  # fmt: skip


def _keep(
    records: Iterable[R],
    bad: list[BadRow],
    table: Table[Any],
    encode: Callable[[R], tuple[Any, ...]],
    why_not: Callable[[R], str | None],
) -> list[R]:
    kept: list[R] = []
    for record in records:
        reason = why_not(record)
        if reason is None:
            kept.append(record)
            continue
        row = tuple(encode(record))
        b = BadRow(table, row, reason)
        if "client_id" in table.columns:
            b.sessions = (_client_text(b.value("client_id")),)
        elif table is MESSAGES:
            b.sessions = _holders_of(bad, b.value("msg_id"))
        bad.append(b)
    return kept


def _holders_of(bad: list[BadRow], msg_id: object) -> tuple[str, ...]:
    return tuple(
        sorted({_client_text(b.value("client_id")) for b in bad if b.table is QUEUE
                and b.value("msg_id") == msg_id})
    )  # fmt: skip


def _move(db: sqlite3.Connection, bad: list[BadRow], now: float) -> None:
    """Copy the rows to the quarantine table and delete them where they were, atomically."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for b in bad:
            db.execute(
                "INSERT INTO quarantine (quarantined_at, source_table, row_key, client_id, "
                "reason, row_data) VALUES (?, ?, ?, ?, ?, ?)",
                (now, b.table.name, b.key_text(), ", ".join(b.sessions) or None, b.reason,
                 _row_json(b)),
            )  # fmt: skip
            conditions, params = [], []
            for k in b.table.keys:
                value = b.value(k)
                if isinstance(value, _BadText):
                    # Compares equal to the stored TEXT whatever its bytes are.
                    conditions.append(f"{k} = CAST(? AS TEXT)")
                    params.append(value.raw)
                else:
                    conditions.append(f"{k} = ?")
                    params.append(value)
            db.execute(f"DELETE FROM {b.table.name} WHERE {' AND '.join(conditions)}", params)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _row_json(b: BadRow) -> str:
    return json.dumps(
        {c: _json_value(v) for c, v in zip(b.table.columns, b.values, strict=True)},
        ensure_ascii=False,
    )


def _json_value(value: object) -> object:
    if isinstance(value, _BadText):
        return {"invalid_utf8_hex": value.raw.hex()}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"blob_hex": bytes(value).hex()}
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return repr(value)


def _client_text(value: object) -> str:
    """A client id for the log and the quarantine table, readable whatever its bytes."""
    if isinstance(value, str):
        return value
    return _shown(value) if isinstance(value, _BadText) else repr(value)


def _shown(value: object) -> str:
    if isinstance(value, _BadText):
        return f"<not UTF-8: {value.raw[:40].hex()}>"
    return repr(value)


def _log(bad: list[BadRow], where: str) -> None:
    store = f" {where}" if where else ""
    for b in bad[:LOGGED_ROWS]:
        whose = f" (session {', '.join(map(repr, b.sessions))})" if b.sessions else ""
        log.warning(
            "store%s: quarantined %s row %s%s: %s",
            store,
            b.table.name,
            b.key_text(),
            whose,
            b.reason,
        )
    if len(bad) > LOGGED_ROWS:
        log.warning("store%s: ... and %d more rows quarantined", store, len(bad) - LOGGED_ROWS)
    log.warning(
        "store%s: %d unreadable row(s) moved to its quarantine table, the rest loaded; "
        "with the gateway stopped (it keeps the file locked), see them with: "
        "sqlite3 %s 'SELECT * FROM quarantine'",
        store,
        len(bad),
        where or "<store>",
    )
