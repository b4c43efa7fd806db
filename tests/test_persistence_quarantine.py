"""An unreadable row is quarantined by itself (issue 9 §3, DESIGN §8): the rest of the store
loads, the row and the rows that depend on it are kept in the quarantine table, and the log
names table, key and session. Only a file SQLite itself cannot read is moved aside."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest
from conftest import ProcessGateway, free_port, write_config
from paho_helpers import V5, Client

from gateway.broker.records import (
    SESSION_NEVER_EXPIRES,
    Message,
    PutInboundQos2,
    PutMessage,
    PutQueueEntry,
    PutRetained,
    PutSession,
    PutSubscription,
    QueueEntry,
    QueuePolicy,
    SessionRecord,
    StoreOp,
    SubscriptionRecord,
)
from gateway.persistence import SqliteStore

BAD_UTF8 = "CAST(x'ff6f6f' AS TEXT)"  # what a torn write or a bit flip can leave in a TEXT column


def _message(msg_id: int, topic: str = "t") -> Message:
    return Message(msg_id, topic, f"payload {msg_id}".encode(), 1, False, created_at=1.0)


def _two_sessions() -> list[StoreOp]:
    """Sessions a and b with a subscription, queued messages 1-3 (a) and 4-6 (b), message 7
    queued for both, QoS 2 state, and a retained message."""
    ops: list[StoreOp] = []
    for cid in ("a", "b"):
        policy = QueuePolicy(coalesce=True) if cid == "a" else None
        ops.append(PutSession(SessionRecord(cid, SESSION_NEVER_EXPIRES, 5, queue_policy=policy)))
        ops.append(PutSubscription(SubscriptionRecord(cid, f"{cid}/#", 1)))
        ops.append(PutInboundQos2(cid, 9))
    for msg_id in range(1, 8):
        ops.append(PutMessage(_message(msg_id)))
    for seq, (cid, msg_id) in enumerate(
        [("a", 1), ("a", 2), ("a", 3), ("b", 4), ("b", 5), ("b", 6), ("a", 7), ("b", 7)], 1
    ):
        ops.append(PutQueueEntry(QueueEntry(cid, seq, msg_id, 1)))
    ops.append(PutRetained(Message(50, "r/x", b"on", 0, True, created_at=1.0)))
    return ops


async def _store_with(path: Path, ops: list[StoreOp]) -> None:
    store = SqliteStore(path)
    await store.open()
    await store.commit(ops)
    await store.close()


def _damage(path: Path, sql: str) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    assert db.execute(sql).rowcount == 1
    db.close()


def _quarantine(path: Path) -> list[dict[str, object]]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    rows = [dict(r) for r in db.execute("SELECT * FROM quarantine ORDER BY id")]
    db.close()
    return rows


async def test_a_bad_message_row_is_quarantined_and_every_other_message_loads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "store.db"
    await _store_with(path, _two_sessions())
    _damage(path, f"UPDATE messages SET props = {BAD_UTF8} WHERE msg_id = 2")

    store = SqliteStore(path)
    with caplog.at_level(logging.WARNING, logger="gateway.persistence"):
        snap = await store.open()
    assert store.moved_aside is None
    assert {m.msg_id for m in snap.messages} == {1, 3, 4, 5, 6, 7}
    assert [(e.client_id, e.msg_id) for e in snap.queue] == [
        ("a", 1), ("a", 3), ("b", 4), ("b", 5), ("b", 6), ("a", 7), ("b", 7)
    ]  # fmt: skip
    assert {s.client_id for s in snap.sessions} == {"a", "b"}
    assert len(snap.subscriptions) == 2 and len(snap.retained) == 1

    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "quarantined messages row msg_id=2" in line and "session 'a'" in line and "UTF-8" in line
        for line in lines
    ), lines
    assert any("queue row client_id='a', seq=2" in line for line in lines), lines
    assert any("SELECT * FROM quarantine" in line and str(path) in line for line in lines)

    await store.commit([PutMessage(_message(8))])  # the store works on
    await store.close()
    rows = _quarantine(path)
    assert [(r["source_table"], r["row_key"], r["client_id"]) for r in rows] == [
        ("messages", "msg_id=2", "a"),
        ("queue", "client_id='a', seq=2", "a"),
    ]
    data = json.loads(str(rows[0]["row_data"]))
    assert data["props"] == {"invalid_utf8_hex": "ff6f6f"}
    assert bytes.fromhex(data["payload"]["blob_hex"]) == b"payload 2"
    assert rows[1]["reason"] == "its message was quarantined"

    again = SqliteStore(path)
    with caplog.at_level(logging.WARNING, logger="gateway.persistence"):
        caplog.clear()
        snap = await again.open()
    await again.close()
    assert {m.msg_id for m in snap.messages} == {1, 3, 4, 5, 6, 7, 8}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # quarantined once
    assert len(_quarantine(path)) == 2


@pytest.mark.parametrize(
    "text",
    [
        '"coalesce"',
        '{"coalesce":"yes"}',
        '{"max_messages":-1}',
        '{"overflow":"sideways"}',
        '{"colour":"red"}',
        "not json",
    ],
)
async def test_a_bad_session_row_takes_its_own_rows_along_and_nothing_else(
    tmp_path: Path, text: str
) -> None:
    path = tmp_path / "store.db"
    await _store_with(path, _two_sessions())
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("UPDATE sessions SET queue_policy = ? WHERE client_id = 'a'", (text,))
    db.close()

    store = SqliteStore(path)
    snap = await store.open()
    await store.close()
    assert store.moved_aside is None
    assert [s.client_id for s in snap.sessions] == ["b"]
    assert [s.client_id for s in snap.subscriptions] == ["b"]
    assert snap.inbound_qos2 == [("b", 9)]
    assert [(e.client_id, e.msg_id) for e in snap.queue] == [("b", 4), ("b", 5), ("b", 6), ("b", 7)]
    # Messages 1-3 were queued for a only: kept with it, not deleted; 7 is b's too.
    assert {m.msg_id for m in snap.messages} == {4, 5, 6, 7}
    moved = {(r["source_table"], r["row_key"]) for r in _quarantine(tmp_path / "store.db")}
    assert moved == {
        ("sessions", "client_id='a'"),
        ("subscriptions", "client_id='a', topic_filter='a/#'"),
        ("inbound_qos2", "client_id='a', packet_id=9"),
        *(("queue", f"client_id='a', seq={seq}") for seq in (1, 2, 3, 7)),
        *(("messages", f"msg_id={i}") for i in (1, 2, 3)),
    }


@pytest.mark.parametrize(
    ("damage", "table", "key"),
    [
        ("UPDATE subscriptions SET subscription_id = 'x' WHERE client_id = 'b'",
         "subscriptions", "client_id='b', topic_filter='b/#'"),
        ("UPDATE queue SET subscription_ids = '1,two' WHERE seq = 5",
         "queue", "client_id='b', seq=5"),
        ("UPDATE inbound_qos2 SET packet_id = 'nine' WHERE client_id = 'b'",
         "inbound_qos2", "client_id='b', packet_id='nine'"),
        ("UPDATE retained SET props = '[1]' WHERE topic = 'r/x'", "retained", "topic='r/x'"),
        ("UPDATE messages SET payload = 'text, not a blob' WHERE msg_id = 6",
         "messages", "msg_id=6"),
        (f"UPDATE sessions SET will_props = {BAD_UTF8}, will_topic = 'w', will_payload = x'',"
         " will_qos = 0, will_retain = 0 WHERE client_id = 'b'", "sessions", "client_id='b'"),
    ],
)  # fmt: skip
async def test_each_table_quarantines_one_row(
    tmp_path: Path, damage: str, table: str, key: str
) -> None:
    path = tmp_path / "store.db"
    await _store_with(path, _two_sessions())
    _damage(path, damage)
    store = SqliteStore(path)
    snap = await store.open()
    await store.close()
    assert store.moved_aside is None
    rows = _quarantine(path)
    assert (rows[0]["source_table"], rows[0]["row_key"]) == (table, key)
    assert "a" in {s.client_id for s in snap.sessions}  # the other session is whole
    assert [e.msg_id for e in snap.queue if e.client_id == "a"] == [1, 2, 3, 7]


async def test_a_client_id_that_is_not_utf8_quarantines_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    await _store_with(path, _two_sessions())
    db = sqlite3.connect(path, isolation_level=None)
    for table in ("sessions", "subscriptions", "queue", "inbound_qos2"):
        db.execute(f"UPDATE {table} SET client_id = {BAD_UTF8} WHERE client_id = 'a'")
    db.close()
    store = SqliteStore(path)
    snap = await store.open()
    await store.close()
    assert [s.client_id for s in snap.sessions] == ["b"]
    assert {e.client_id for e in snap.queue} == {"b"}
    tables = sorted(str(r["source_table"]) for r in _quarantine(path))
    assert tables == [
        "inbound_qos2", *["messages"] * 3, *["queue"] * 4, "sessions", "subscriptions"
    ]  # fmt: skip
    db = sqlite3.connect(path)
    for table in ("sessions", "subscriptions", "queue", "inbound_qos2"):
        assert db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0
        assert db.execute(f"SELECT count(*) FROM {table} WHERE client_id != 'b'").fetchone() == (0,)
    db.close()


# --- as a user sees it -------------------------------------------------------------------------


def test_gateway_delivers_everything_but_the_unreadable_message(tmp_path: Path) -> None:
    """Two persistent sessions with queued messages; one message's properties are damaged
    while the gateway is stopped. After the restart the other session gets all of its
    messages, the damaged session all of its other ones, and the log says what was moved."""
    port = free_port()
    config = write_config(tmp_path, port)
    gw = ProcessGateway(config, port).start()
    try:
        for cid in ("alice", "bob"):
            sub = Client(port, cid, version=V5, clean=False, session_expiry=3600)
            sub.subscribe(f"to/{cid}", qos=1)
            sub.disconnect()
        pub = Client(port, "pub", version=V5)
        for i in range(5):
            for cid in ("alice", "bob"):
                pub.publish(f"to/{cid}", f"{cid} {i}".encode(), qos=1)
        pub.disconnect()
    finally:
        assert gw.terminate() == 0

    db = sqlite3.connect(tmp_path / "gw.db", isolation_level=None)
    (msg_id,) = db.execute(
        "SELECT msg_id FROM messages WHERE payload = CAST('alice 2' AS BLOB)"
    ).fetchone()
    db.execute(f"UPDATE messages SET props = {BAD_UTF8} WHERE msg_id = ?", (msg_id,))
    db.close()

    gw = ProcessGateway(config, port).start()
    try:
        got = {}
        for cid in ("alice", "bob"):
            sub = Client(port, cid, version=V5, clean=False, session_expiry=3600)
            got[cid] = [m.payload.decode() for m in sub.drain(1.0)]
            sub.disconnect()
    finally:
        assert gw.terminate() == 0
    assert got["bob"] == [f"bob {i}" for i in range(5)]
    assert got["alice"] == [f"alice {i}" for i in (0, 1, 3, 4)]
    log = gw.log_path.read_text()
    assert f"quarantined messages row msg_id={msg_id} (session 'alice')" in log
    assert "moved to its quarantine table" in log and ".corrupt-" not in log
    assert _quarantine(tmp_path / "gw.db")[0]["row_key"] == f"msg_id={msg_id}"
