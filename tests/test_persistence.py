"""SqliteStore and MemoryStore: round trips, cascades, group commit, failures, recovery."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.broker.records import (
    OWNER_GATEWAY,
    SESSION_NEVER_EXPIRES,
    DeleteInboundQos2,
    DeleteMessage,
    DeleteQueueEntry,
    DeleteRetained,
    DeleteSession,
    DeleteSubscription,
    EntryState,
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
    Snapshot,
    StoreOp,
    SubscriptionRecord,
)
from gateway.broker.settings import Overflow
from gateway.mqtt.packets import NO_PROPERTIES, Properties, Will
from gateway.persistence import MemoryStore, SqliteStore, Store, StoreError, schema

# Every Properties field set, including ones a stored message never carries: the codec must
# not care which fields are "meaningful".
FULL_PROPS = Properties(
    payload_format_indicator=1,
    message_expiry_interval=3600,
    content_type="application/json; charset=ü",
    response_topic="reply/to/me",
    correlation_data=b"\x00\x01\xfe\xff",
    subscription_identifiers=(1, 268435455),
    session_expiry_interval=0xFFFFFFFF,
    assigned_client_identifier="auto-1",
    server_keep_alive=30,
    authentication_method="SCRAM-SHA-1",
    authentication_data=b"",
    request_problem_information=0,
    will_delay_interval=5,
    request_response_information=1,
    response_information="resp",
    server_reference="other:1883",
    reason_string="because",
    receive_maximum=10,
    topic_alias_maximum=5,
    topic_alias=3,
    maximum_qos=1,
    retain_available=0,
    user_properties=(("k", "v"), ("k", "v2"), ("", "日本")),
    maximum_packet_size=1 << 20,
    wildcard_subscription_available=1,
    subscription_identifier_available=0,
    shared_subscription_available=1,
)


# Every QueuePolicy field set (the notify topic with characters JSON must escape).
FULL_POLICY = QueuePolicy(
    max_messages=3,
    max_bytes=0,
    overflow=Overflow.REJECT_NEW,
    coalesce=True,
    default_expiry=86_400,
    notify_topic='gw/ç"\\/result',
    pending_topic="gw/thermo/pending",
    command_schema='{"type":"object","description":"ç\\"\\\\"}',
)


def message(msg_id: int, **kw: object) -> Message:
    base: dict[str, object] = {
        "msg_id": msg_id,
        "topic": f"sensors/{msg_id}/temp",
        "payload": bytes(range(256)) * 2 + msg_id.to_bytes(4, "big"),
        "qos": 1,
        "retain": False,
    }
    base.update(kw)
    return Message(**base)  # type: ignore[arg-type]


def rich_message(msg_id: int) -> Message:
    return Message(
        msg_id=msg_id,
        topic="a/b/ç/🙂",
        payload=b"",
        qos=2,
        retain=True,
        properties=FULL_PROPS,
        expires_at=1_700_000_000.123456,
        origin_client_id="pub-1",
        created_at=1_699_999_999.5,
    )


def session(cid: str, **kw: object) -> SessionRecord:
    base: dict[str, object] = {
        "client_id": cid,
        "expiry_interval": SESSION_NEVER_EXPIRES,
        "protocol_version": 5,
    }
    base.update(kw)
    return SessionRecord(**base)  # type: ignore[arg-type]


def entry(cid: str, seq: int, msg_id: int | None = None, **kw: object) -> QueueEntry:
    return QueueEntry(client_id=cid, seq=seq, msg_id=seq if msg_id is None else msg_id, qos=1, **kw)  # type: ignore[arg-type]


def same(a: Snapshot, b: Snapshot) -> None:
    """Snapshots equal up to the order of everything but the queue."""
    assert set(a.sessions) == set(b.sessions) and len(a.sessions) == len(b.sessions)
    assert set(a.subscriptions) == set(b.subscriptions)
    assert len(a.subscriptions) == len(b.subscriptions)
    assert set(a.messages) == set(b.messages) and len(a.messages) == len(b.messages)
    assert a.queue == b.queue
    assert sorted(a.inbound_qos2) == sorted(b.inbound_qos2)
    assert set(a.retained) == set(b.retained) and len(a.retained) == len(b.retained)


async def reopen(path: Path) -> Snapshot:
    store = SqliteStore(path)
    snap = await store.open()
    await store.close()
    return snap


ALL_PUTS: list[StoreOp] = [
    PutSession(session("plain")),
    PutSession(
        session(
            "full",
            expiry_interval=120,
            protocol_version=4,
            username="alice",
            disconnected_at=1_700_000_000.25,
            will=Will(
                topic="lwt/full", payload=b"\x00gone", qos=2, retain=True, properties=FULL_PROPS
            ),
        )
    ),
    PutSession(session("will-min", will=Will(topic="lwt", payload=b""))),
    PutSession(session("policy-full", disconnected_at=5.0, queue_policy=FULL_POLICY)),
    PutSession(session("policy-min", queue_policy=QueuePolicy(coalesce=False))),
    PutSubscription(SubscriptionRecord("full", "a/+/c", 1)),
    PutSubscription(
        SubscriptionRecord(
            "full",
            "$share/g/x/#",
            2,
            no_local=True,
            retain_as_published=True,
            retain_handling=2,
            subscription_id=268435455,
        )
    ),
    PutMessage(message(1)),
    PutMessage(rich_message(2)),
    PutQueueEntry(entry("full", 10, 1)),
    PutQueueEntry(
        entry(
            "full",
            11,
            2,
            state=EntryState.RELEASED,
            packet_id=65535,
            retain=True,
            subscription_ids=(7, 1, 268435455),
        )
    ),
    PutQueueEntry(entry("plain", 9, 1, state=EntryState.SENT, packet_id=1)),
    PutInboundQos2("full", 1),
    PutInboundQos2("full", 65535),
    PutRetained(rich_message(3)),
    PutRetained(message(4, topic="home/x", retain=True)),
]


def expected_after(ops: list[StoreOp]) -> Snapshot:
    from gateway.persistence.tables import Tables, apply

    tables = Tables()
    apply(tables, ops)
    return tables.snapshot()


async def test_every_put_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SqliteStore(path)
    assert isinstance(store, Store)
    assert await store.open() == Snapshot()
    await store.commit(ALL_PUTS)
    await store.close()

    snap = await reopen(path)
    same(snap, expected_after(ALL_PUTS))
    assert [e.seq for e in snap.queue] == [9, 10, 11]
    by_id = {m.msg_id: m for m in snap.messages}
    assert by_id[2] == rich_message(2)
    assert by_id[2].payload == b""
    assert by_id[1].properties is NO_PROPERTIES  # broker may rely on identity
    full = next(s for s in snap.sessions if s.client_id == "full")
    assert full.will is not None and full.will.properties == FULL_PROPS
    assert next(s for s in snap.sessions if s.client_id == "plain").will is None


async def test_every_delete_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SqliteStore(path)
    await store.open()
    await store.commit(ALL_PUTS)
    deletes: list[StoreOp] = [
        DeleteSubscription("full", "a/+/c"),
        DeleteMessage(1),
        DeleteQueueEntry("full", 10),
        DeleteInboundQos2("full", 1),
        DeleteRetained("home/x"),
        DeleteSession("plain"),  # cascades to its queue entry
        DeleteSession("policy-full"),  # and its queue policy with it
        DeleteSubscription("nobody", "x"),  # deleting what is not there is fine
        DeleteMessage(999),
    ]
    await store.commit(deletes)
    await store.close()
    snap = await reopen(path)
    same(snap, expected_after(ALL_PUTS + deletes))
    assert {s.client_id for s in snap.sessions} == {"full", "will-min", "policy-min"}
    assert [s.topic_filter for s in snap.subscriptions] == ["$share/g/x/#"]
    assert [m.msg_id for m in snap.messages] == [2]
    assert [(e.client_id, e.seq) for e in snap.queue] == [("full", 11)]
    assert snap.inbound_qos2 == [("full", 65535)]
    assert [m.topic for m in snap.retained] == [rich_message(3).topic]


async def test_puts_replace(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SqliteStore(path)
    await store.open()
    await store.commit([PutSession(session("c")), PutQueueEntry(entry("c", 1))])
    await store.commit(
        [
            PutSession(session("c", username="bob", disconnected_at=5.0)),
            PutQueueEntry(entry("c", 1, state=EntryState.SENT, packet_id=42)),
            PutRetained(message(1, topic="r")),
            PutRetained(message(2, topic="r")),
            PutInboundQos2("c", 5),
            PutInboundQos2("c", 5),
        ]
    )
    await store.close()
    snap = await reopen(path)
    assert snap.sessions == [session("c", username="bob", disconnected_at=5.0)]
    assert snap.queue == [entry("c", 1, state=EntryState.SENT, packet_id=42)]
    assert snap.retained == [message(2, topic="r")]
    assert snap.inbound_qos2 == [("c", 5)]


async def test_delete_session_cascades(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SqliteStore(path)
    await store.open()
    for cid in ("gone", "kept"):
        await store.commit(
            [
                PutSession(session(cid)),
                PutSubscription(SubscriptionRecord(cid, "t/#", 1)),
                PutMessage(message(len(cid))),
                PutQueueEntry(entry(cid, len(cid) * 10, len(cid))),
                PutInboundQos2(cid, 7),
            ]
        )
    await store.commit([DeleteSession("gone")])
    await store.close()
    snap = await reopen(path)
    assert [s.client_id for s in snap.sessions] == ["kept"]
    assert [s.client_id for s in snap.subscriptions] == ["kept"]
    assert [e.client_id for e in snap.queue] == ["kept"]
    assert snap.inbound_qos2 == [("kept", 7)]
    # Messages are the broker's to delete explicitly (another session may still hold them).
    assert {m.msg_id for m in snap.messages} == {4}  # len("gone") == len("kept")


async def test_delete_session_inside_a_group_keeps_later_ops(tmp_path: Path) -> None:
    """A DeleteSession wipes what came before it (stored or in the same group), not after."""
    path = tmp_path / "store.db"
    store = SqliteStore(path, group_window=0.05)
    await store.open()
    await store.commit([PutSubscription(SubscriptionRecord("c", "old", 0)), PutInboundQos2("c", 1)])
    await asyncio.gather(
        store.commit(
            [PutSubscription(SubscriptionRecord("c", "early", 0)), PutQueueEntry(entry("c", 1))]
        ),
        store.commit([DeleteSession("c")]),
        store.commit(
            [
                PutSession(session("c")),
                PutSubscription(SubscriptionRecord("c", "late", 1)),
                PutQueueEntry(entry("c", 2)),
            ]
        ),
    )
    assert store.stats.commits == 2  # the three calls above shared one transaction
    await store.close()
    snap = await reopen(path)
    assert snap.sessions == [session("c")]
    assert [s.topic_filter for s in snap.subscriptions] == ["late"]
    assert [e.seq for e in snap.queue] == [2]
    assert snap.inbound_qos2 == []


async def test_put_then_delete_in_one_group(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SqliteStore(path, group_window=0.05)
    await store.open()
    await asyncio.gather(
        store.commit([PutMessage(message(1)), PutQueueEntry(entry("c", 1))]),
        store.commit([DeleteQueueEntry("c", 1), DeleteMessage(1)]),
        store.commit([DeleteMessage(2)]),
        store.commit([PutMessage(message(2))]),
    )
    assert store.stats.commits == 1
    await store.close()
    snap = await reopen(path)
    assert snap.queue == [] and [m.msg_id for m in snap.messages] == [2]


async def test_group_commit_groups_concurrent_calls(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db")
    await store.open()
    await asyncio.gather(
        *(store.commit([PutMessage(message(i)), PutQueueEntry(entry("c", i))]) for i in range(100))
    )
    stats = store.stats
    assert stats.calls == 100 and stats.ops == 200
    assert 1 <= stats.commits <= 5
    assert stats.failures == 0 and stats.avg_commit_ms > 0 and stats.size_bytes > 0
    # Sequential commits each get their own transaction.
    for i in range(100, 103):
        await store.commit([PutMessage(message(i))])
    assert store.stats.commits == stats.commits + 3
    await store.close()
    snap = await reopen(tmp_path / "store.db")
    assert len(snap.messages) == 103 and [e.seq for e in snap.queue] == list(range(100))


async def test_lone_commit_waits_in_the_window_for_company(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db", group_window=30.0)
    await store.open()
    first = asyncio.create_task(store.commit([PutMessage(message(1))]))
    await asyncio.sleep(0.05)
    assert not first.done()  # held back so that others can share its fsync
    second = asyncio.create_task(store.commit([PutMessage(message(2))]))
    # A second arrival ends the wait long before the 30 s window (the generous timeout only
    # keeps a regression from hanging the suite).
    await asyncio.wait_for(asyncio.gather(first, second), timeout=10)
    assert store.stats.commits == 1 and store.stats.calls == 2
    await store.close()


async def test_relaxed_ops_wait_for_an_urgent_commit_or_their_window(tmp_path: Path) -> None:
    """Ops nobody waits for (urgent=False) do not cost a commit of their own: they go with
    the next urgent group, or once the relaxed window has passed, or at close."""
    path = tmp_path / "store.db"
    store = SqliteStore(path, group_window=0.0, relaxed_window=30.0)
    await store.open()
    relaxed = [store.submit([PutMessage(message(n))], urgent=False) for n in range(1, 4)]
    await asyncio.sleep(0.1)
    assert store.stats.commits == 0 and not any(f.done() for f in relaxed)
    await asyncio.wait_for(store.commit([PutMessage(message(4))]), timeout=10)
    assert store.stats.commits == 1 and all(f.done() for f in relaxed)  # all in one group
    late = store.submit([PutMessage(message(5))], urgent=False)
    await store.close()  # closing writes what was held back
    assert late.done() and late.exception() is None
    snap = await reopen(path)
    assert sorted(m.msg_id for m in snap.messages) == [1, 2, 3, 4, 5]

    quick = SqliteStore(tmp_path / "quick.db", relaxed_window=0.05)
    await quick.open()
    await asyncio.wait_for(quick.submit([PutMessage(message(1))], urgent=False), timeout=10)
    assert quick.stats.commits == 1
    await quick.close()


async def test_failed_transaction_fails_only_its_group(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "store.db"
    store = SqliteStore(path, group_window=0.05)
    await store.open()
    await store.commit([PutMessage(message(1))])

    bad = message(2, qos=7)  # violates the schema's CHECK: the transaction aborts
    with caplog.at_level(logging.ERROR, logger="gateway.persistence"):
        results = await asyncio.gather(
            store.commit([PutMessage(message(3))]),
            store.commit([PutMessage(bad)]),
            store.commit([PutSession(session("x"))]),
            return_exceptions=True,
        )
    assert all(isinstance(r, StoreError) for r in results), results
    assert any(r.levelno == logging.ERROR and "FAILED" in r.getMessage() for r in caplog.records)
    assert store.stats.failures == 1 and store.stats.failed_calls == 3

    await store.commit([PutMessage(message(4))])  # the store keeps working
    await store.close()
    snap = await reopen(path)
    assert {m.msg_id for m in snap.messages} == {1, 4}
    assert snap.sessions == []


async def test_disk_full_is_transient(tmp_path: Path) -> None:
    """SQLITE_FULL (simulated with max_page_count) fails that commit; smaller ones succeed."""
    path = tmp_path / "store.db"
    store = SqliteStore(path)
    await store.open()
    await store.commit([PutMessage(message(1))])
    pages = await store.run_in_db(lambda db: db.execute("PRAGMA page_count").fetchone()[0])
    await store.run_in_db(lambda db: db.execute(f"PRAGMA max_page_count = {pages + 4}"))
    with pytest.raises(StoreError, match="full"):
        await store.commit([PutMessage(message(2, payload=b"x" * 200_000))])
    await store.commit([PutMessage(message(3))])
    await store.close()
    assert {m.msg_id for m in (await reopen(path)).messages} == {1, 3}


async def test_not_an_op_fails_the_group_not_the_store(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db")
    await store.open()
    with pytest.raises(StoreError):
        await store.commit(["nonsense"])  # type: ignore[list-item]
    await store.commit([PutMessage(message(1))])
    await store.close()


async def test_close_flushes_pending_commits(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SqliteStore(path, group_window=0.5)  # a window far longer than the test
    await store.open()
    tasks = [asyncio.create_task(store.commit([PutMessage(message(i))])) for i in range(10)]
    await asyncio.sleep(0)  # let them queue
    await store.close()
    assert all(t.done() and t.exception() is None for t in tasks)
    with pytest.raises(StoreError):
        await store.commit([PutMessage(message(99))])
    await store.close()  # idempotent
    assert len((await reopen(path)).messages) == 10


async def test_a_free_writer_starts_at_once_and_what_came_meanwhile_follows(
    tmp_path: Path,
) -> None:
    """group_window 0 (the gateway's default): commit when the writer is free. A call on an
    idle store is handed to the database thread before the loop turns; calls made while it
    is written form the next group, which starts as soon as the first is done; a call that
    is not urgent still waits for company."""
    path = tmp_path / "store.db"
    store = SqliteStore(path, group_window=0.0, relaxed_window=0.5)
    await store.open()
    await asyncio.sleep(0.01)  # the writer is idle
    first = store.submit([PutMessage(message(1))])
    assert store.stats.pending_calls == 0  # taken already, in this turn of the loop
    later = [store.submit([PutMessage(message(i))]) for i in range(2, 6)]
    assert store.stats.pending_calls == 4
    await asyncio.gather(first, *later)
    assert store.stats.commits == 2 and store.stats.calls == 5
    await asyncio.sleep(0.01)
    relaxed = store.submit([DeleteMessage(1)], urgent=False)
    await asyncio.sleep(0.1)
    assert not relaxed.done() and store.stats.commits == 2  # waits for company
    await store.submit([PutMessage(message(9))])
    assert relaxed.done() and store.stats.commits == 3
    await store.close()
    assert sorted(m.msg_id for m in (await reopen(path)).messages) == [2, 3, 4, 5, 9]


async def test_cancelled_caller_still_commits(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SqliteStore(path, group_window=0.05)
    await store.open()
    task = asyncio.create_task(store.commit([PutMessage(message(1))]))
    await asyncio.sleep(0)
    task.cancel()
    await store.commit([PutMessage(message(2))])
    await store.close()
    assert {m.msg_id for m in (await reopen(path)).messages} == {1, 2}


async def test_commit_before_open_raises(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db")
    with pytest.raises(StoreError):
        await store.commit([DeleteMessage(1)])


def test_bad_settings_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SqliteStore(tmp_path / "x.db", synchronous="sometimes")
    with pytest.raises(ValueError):
        SqliteStore(tmp_path / "x.db", group_window=-1)
    with pytest.raises(ValueError):
        SqliteStore(tmp_path / "x.db", max_size_bytes=-1)


@pytest.mark.parametrize("synchronous", ["full", "NORMAL", "off"])
async def test_wal_and_synchronous_applied(tmp_path: Path, synchronous: str) -> None:
    path = tmp_path / "deep" / "er" / "store.db"  # parent directories are created
    store = SqliteStore(path, synchronous=synchronous, group_window=0)
    await store.open()
    mode, sync = await store.run_in_db(
        lambda db: (
            db.execute("PRAGMA journal_mode").fetchone()[0],
            db.execute("PRAGMA synchronous").fetchone()[0],
        ),
    )
    assert mode == "wal"
    assert sync == {"full": 2, "normal": 1, "off": 0}[synchronous.lower()]
    await store.commit([PutMessage(message(1))])
    await store.close()
    assert path.exists()


async def test_size_and_over_limit(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db", max_size_bytes=200_000)
    await store.open()
    empty = store.stats.size_bytes
    assert empty > 0 and not store.over_limit()
    await store.commit([PutMessage(message(i, payload=b"p" * 50_000)) for i in range(5)])
    assert store.stats.size_bytes > 250_000 and store.over_limit()
    await store.commit([DeleteMessage(i) for i in range(5)])
    assert store.stats.size_bytes < 100_000 and not store.over_limit()
    await store.close()
    unlimited = SqliteStore(tmp_path / "other.db")
    await unlimited.open()
    await unlimited.commit([PutMessage(message(1, payload=b"p" * 500_000))])
    assert not unlimited.over_limit()
    await unlimited.close()


async def test_second_gateway_on_same_file_is_refused_not_moved(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    first = SqliteStore(path)
    await first.open()
    await first.commit([PutMessage(message(1))])
    second = SqliteStore(path)
    with pytest.raises(StoreError):
        await second.open()
    assert not list(tmp_path.glob("*.corrupt-*"))
    await first.commit([PutMessage(message(2))])
    await first.close()
    assert len((await reopen(path)).messages) == 2


# --- corrupt files -------------------------------------------------------------------------


async def _make_store(path: Path, n: int = 300) -> None:
    store = SqliteStore(path)
    await store.open()
    await store.commit(
        [PutMessage(message(i, payload=os.urandom(300))) for i in range(n)]
        + [PutQueueEntry(entry("c", i)) for i in range(n)]
    )
    await store.close()


def _random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(40_000))


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _pages_scribbled(path: Path) -> None:
    """Header intact (it still opens as SQLite); b-tree pages after the first destroyed."""
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for start in range(page, len(data), page):
        data[start : start + 12] = b"\xee" * 12
    path.write_bytes(bytes(data))


def _header_garbled(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[0:16] = b"definitely no db"
    path.write_bytes(bytes(data))


def _check_violated(path: Path) -> None:
    """Structurally sound, but a row breaks the schema's CHECK: quick_check reports it."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA ignore_check_constraints = ON")
    db.execute("UPDATE queue SET state = 9 WHERE seq = 5")
    db.execute("PRAGMA ignore_check_constraints = OFF")
    assert db.execute("PRAGMA quick_check").fetchall() != [("ok",)]
    db.close()


def _newer_schema(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    db.commit()
    db.close()


def _foreign_sqlite(path: Path) -> None:
    path.unlink()
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE messages (x)")  # someone else's database, our table name
    db.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION}")
    db.commit()
    db.close()


@pytest.mark.parametrize(
    "damage",
    [
        _random_bytes,
        _truncated,
        _pages_scribbled,
        _header_garbled,
        _check_violated,
        _newer_schema,
        _foreign_sqlite,
    ],
)
async def test_corrupt_store_is_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: object
) -> None:
    path = tmp_path / "store.db"
    await _make_store(path)
    assert callable(damage)
    damage(path)
    Path(f"{path}-wal").write_bytes(b"stale wal")  # moved along with the file
    damaged = path.read_bytes()

    store = SqliteStore(path)
    with caplog.at_level(logging.ERROR, logger="gateway.persistence"):
        snap = await store.open()
    assert snap == Snapshot()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and str(path) in errors[0].getMessage()

    moved = store.moved_aside
    assert moved is not None and moved.name.startswith("store.db.corrupt-")
    assert moved.name.endswith("Z") and len(moved.name) == len("store.db.corrupt-20240101T000000Z")
    assert moved.read_bytes() == damaged
    assert Path(f"{moved}-wal").read_bytes() == b"stale wal"

    await store.commit([PutMessage(message(1))])  # the fresh store works
    await store.close()
    assert [m.msg_id for m in (await reopen(path)).messages] == [1]


async def test_corrupt_twice_in_one_second_keeps_both(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    moved = []
    for _ in range(2):
        path.write_bytes(os.urandom(5000))
        store = SqliteStore(path)
        await store.open()
        await store.close()
        moved.append(store.moved_aside)
    assert moved[0] != moved[1] and all(m is not None and m.exists() for m in moved)


async def test_empty_file_is_a_fresh_store(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    path.write_bytes(b"")
    store = SqliteStore(path)
    assert await store.open() == Snapshot()
    assert store.moved_aside is None
    await store.close()


# --- migrations ----------------------------------------------------------------------------

# The v1 layout exactly as it shipped; kept literally here so that editing MIGRATIONS can not
# silently change what this test calls "a v1 file".
V1_SQL = """
CREATE TABLE sessions (client_id TEXT PRIMARY KEY, expiry_interval INTEGER NOT NULL,
    protocol_version INTEGER NOT NULL, username TEXT, disconnected_at REAL, will_topic TEXT,
    will_payload BLOB, will_qos INTEGER, will_retain INTEGER, will_props TEXT);
CREATE TABLE subscriptions (client_id TEXT NOT NULL, topic_filter TEXT NOT NULL,
    qos INTEGER NOT NULL CHECK (qos BETWEEN 0 AND 2), no_local INTEGER NOT NULL,
    retain_as_published INTEGER NOT NULL,
    retain_handling INTEGER NOT NULL CHECK (retain_handling BETWEEN 0 AND 2),
    subscription_id INTEGER, PRIMARY KEY (client_id, topic_filter)) WITHOUT ROWID;
CREATE TABLE messages (msg_id INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL,
    qos INTEGER NOT NULL CHECK (qos BETWEEN 0 AND 2), retain INTEGER NOT NULL, props TEXT,
    expires_at REAL, origin TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE queue (client_id TEXT NOT NULL, seq INTEGER NOT NULL, msg_id INTEGER NOT NULL,
    qos INTEGER NOT NULL CHECK (qos BETWEEN 0 AND 2),
    state INTEGER NOT NULL CHECK (state BETWEEN 0 AND 2), packet_id INTEGER,
    retain INTEGER NOT NULL, PRIMARY KEY (client_id, seq)) WITHOUT ROWID;
CREATE TABLE retained (topic TEXT PRIMARY KEY, msg_id INTEGER NOT NULL, payload BLOB NOT NULL,
    qos INTEGER NOT NULL CHECK (qos BETWEEN 0 AND 2), retain INTEGER NOT NULL, props TEXT,
    expires_at REAL, origin TEXT NOT NULL, created_at REAL NOT NULL);
INSERT INTO sessions VALUES ('c1', 60, 5, 'u', NULL, 'lwt', x'00ff', 1, 1,
    '{"will_delay_interval":9}');
INSERT INTO subscriptions VALUES ('c1', 'a/#', 2, 1, 0, 1, 12);
INSERT INTO messages VALUES (5, 'a/b', x'68690a', 1, 0,
    '{"user_properties":[["k","v"]]}', NULL, 'p', 1.5);
INSERT INTO queue VALUES ('c1', 3, 5, 1, 1, 77, 0);
INSERT INTO queue VALUES ('c1', 2, 5, 1, 0, NULL, 1);
INSERT INTO retained VALUES ('a/b', 5, x'', 0, 1, NULL, 99.0, '', 2.0);
PRAGMA user_version = 1;
"""


async def test_migrates_a_v1_file(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    db = sqlite3.connect(path)
    db.executescript(V1_SQL)
    db.close()

    store = SqliteStore(path)
    snap = await store.open()
    assert store.moved_aside is None
    assert snap.sessions == [
        session(
            "c1",
            expiry_interval=60,
            username="u",
            will=Will("lwt", b"\x00\xff", 1, True, Properties(will_delay_interval=9)),
            owner="u",  # v4: the user it recorded
        )
    ]
    assert snap.subscriptions == [
        SubscriptionRecord("c1", "a/#", 2, no_local=True, retain_handling=1, subscription_id=12)
    ]
    assert snap.messages == [
        Message(
            5, "a/b", b"hi\n", 1, False, Properties(user_properties=(("k", "v"),)), None, "p", 1.5
        )
    ]
    assert snap.queue == [
        QueueEntry("c1", 2, 5, 1, EntryState.QUEUED, None, True, ()),
        QueueEntry("c1", 3, 5, 1, EntryState.SENT, 77, False, ()),
    ]
    assert snap.retained == [Message(5, "a/b", b"", 0, True, NO_PROPERTIES, 99.0, "", 2.0)]
    assert snap.inbound_qos2 == []
    # What v2 added works on the migrated file.
    await store.commit(
        [PutInboundQos2("c1", 4), PutQueueEntry(entry("c1", 9, 5, subscription_ids=(12,)))]
    )
    await store.close()

    snap = await reopen(path)
    assert snap.inbound_qos2 == [("c1", 4)]
    assert snap.queue[-1].subscription_ids == (12,)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION == 5
    db.close()


# What v2 added, exactly as it shipped (see V1_SQL).
V2_SQL = """
ALTER TABLE queue ADD COLUMN subscription_ids TEXT NOT NULL DEFAULT '';
CREATE TABLE inbound_qos2 (client_id TEXT NOT NULL, packet_id INTEGER NOT NULL,
    PRIMARY KEY (client_id, packet_id)) WITHOUT ROWID;
INSERT INTO inbound_qos2 VALUES ('c1', 8);
UPDATE queue SET subscription_ids = '12' WHERE seq = 3;
PRAGMA user_version = 2;
"""


async def test_migrates_a_v2_file(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    db = sqlite3.connect(path)
    db.executescript(V1_SQL + V2_SQL)
    db.close()

    store = SqliteStore(path)
    snap = await store.open()
    assert store.moved_aside is None
    (rec,) = snap.sessions
    assert rec.client_id == "c1" and rec.will is not None and rec.queue_policy is None
    assert snap.inbound_qos2 == [("c1", 8)]
    assert [e.subscription_ids for e in snap.queue] == [(), (12,)]
    # What v3 added works on the migrated file: a policy is stored, replaced and cleared.
    await store.commit(
        [PutSession(replace(rec, queue_policy=FULL_POLICY)), PutSession(session("c2"))]
    )
    await store.close()
    snap = await reopen(path)
    policies = {s.client_id: s.queue_policy for s in snap.sessions}
    assert policies == {"c1": FULL_POLICY, "c2": None}
    assert snap.inbound_qos2 == [("c1", 8)]

    store = SqliteStore(path)
    await store.open()
    await store.commit([PutSession(rec)])
    await store.close()
    assert [s.queue_policy for s in (await reopen(path)).sessions if s.client_id == "c1"] == [None]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION == 5
    db.close()


# What v3 added, exactly as it shipped (see V1_SQL, V2_SQL): a device session whose user name
# an outside client overwrote by taking it over, and an anonymous one.
V3_SQL = """
ALTER TABLE sessions ADD COLUMN queue_policy TEXT;
INSERT INTO sessions VALUES ('dev-thermo', 60, 5, 'mallory', NULL, NULL, NULL, NULL, NULL,
    NULL, '{"coalesce":true}');
INSERT INTO sessions VALUES ('anon', 60, 4, NULL, 5.0, NULL, NULL, NULL, NULL, NULL, NULL);
PRAGMA user_version = 3;
"""


async def test_migrates_a_v3_file_giving_sessions_their_owner(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    db = sqlite3.connect(path)
    db.executescript(V1_SQL + V2_SQL + V3_SQL)
    db.close()

    store = SqliteStore(path)
    snap = await store.open()
    assert store.moved_aside is None
    owners = {s.client_id: s.owner for s in snap.sessions}
    # A device session is the gateway's whoever last took it over; the others keep the user
    # they recorded (None: anonymous).
    assert owners == {"c1": "u", "dev-thermo": OWNER_GATEWAY, "anon": None}
    await store.commit([PutSession(session("c2", owner="alice"))])
    await store.close()
    snap = await reopen(path)
    assert {s.client_id: s.owner for s in snap.sessions}["c2"] == "alice"


@pytest.mark.parametrize(
    "text",
    [
        '"coalesce"',
        '{"coalesce":"yes"}',
        '{"max_messages":-1}',
        '{"max_messages":true}',
        '{"overflow":"sideways"}',
        '{"overflow":["drop-oldest"]}',
        '{"notify_topic":1}',
        '{"command_schema":{"type":"object"}}',
        '{"colour":"red"}',
    ],
)
async def test_undecodable_queue_policy_quarantines_its_session(tmp_path: Path, text: str) -> None:
    # Only that session goes (tests/test_persistence_quarantine.py has the details): the
    # file is not moved aside for one row.
    path = tmp_path / "store.db"
    store = SqliteStore(path)
    await store.open()
    await store.commit(
        [PutSession(session("c1", queue_policy=FULL_POLICY)), PutSession(session("c2"))]
    )
    await store.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE sessions SET queue_policy = ? WHERE client_id = 'c1'", (text,))
    db.commit()
    db.close()
    store = SqliteStore(path)
    assert (await store.open()).sessions == [session("c2")]
    assert store.moved_aside is None
    await store.close()


def test_failed_migration_step_is_rolled_back(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    schema.migrate(db, target=1)
    db.execute("CREATE TABLE inbound_qos2 (x)")  # makes step 2 fail half way
    with pytest.raises(sqlite3.OperationalError):
        schema.migrate(db)
    assert schema.user_version(db) == 1
    columns = [r[1] for r in db.execute("PRAGMA table_info(queue)")]
    assert "subscription_ids" not in columns  # step 2's first statement was undone too
    db.close()


# --- MemoryStore ---------------------------------------------------------------------------


async def test_memory_store_applies_ops_like_sqlite(tmp_path: Path) -> None:
    mem = MemoryStore()
    assert isinstance(mem, Store)
    assert await mem.open() == Snapshot()
    await mem.commit(ALL_PUTS)
    await mem.commit([DeleteSession("full"), DeleteRetained("home/x")])
    await mem.close()
    again = await mem.open()  # same instance: what was committed is still there
    same(again, expected_after([*ALL_PUTS, DeleteSession("full"), DeleteRetained("home/x")]))
    assert {s.client_id for s in again.sessions} == {
        "plain",
        "will-min",
        "policy-full",
        "policy-min",
    }
    assert {s.queue_policy for s in again.sessions} == {
        None,
        FULL_POLICY,
        QueuePolicy(coalesce=False),
    }
    assert [e.client_id for e in again.queue] == ["plain"]
    assert await MemoryStore().open() == Snapshot()  # nothing survives a new process


async def test_memory_store_failures_and_limits() -> None:
    mem = MemoryStore(max_size_bytes=10_000)
    with pytest.raises(StoreError):
        await mem.commit([DeleteMessage(1)])  # not open
    await mem.open()
    mem.fail_next_commits(1)
    with pytest.raises(StoreError):
        await mem.commit([PutMessage(message(1))])
    with pytest.raises(StoreError):
        await mem.commit([PutMessage(message(1)), "bad"])  # type: ignore[list-item]
    assert (await mem.open()).messages == []  # neither failed commit stored anything
    await mem.commit([PutMessage(message(1, payload=b"x" * 20_000))])
    assert mem.over_limit() and mem.stats.size_bytes > 20_000
    await mem.commit([DeleteMessage(1)])
    assert not mem.over_limit() and mem.stats.size_bytes == 0
    assert mem.stats.failures == 2 and mem.stats.commits == 2
