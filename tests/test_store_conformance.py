"""Both stores against one table of cases: what a sequence of commits leaves, after a restart.

Each case is a list of rounds; a round is a list of commit() calls submitted together, which
the SQLite store writes as one transaction (the tests check it did), reduced to its net
effect per key first. So every case runs the memory store's one-op-at-a-time path and the
SQLite store's group path, and the outcome is written out by hand, not taken from either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.broker.records import (
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
    SessionRecord,
    Snapshot,
    StoreOp,
    SubscriptionRecord,
)
from gateway.persistence import MemoryStore, SqliteStore, Store, StoreError


def session(cid: str, expiry: int = 60) -> PutSession:
    return PutSession(SessionRecord(cid, expiry, 5))


def sub(cid: str, topic_filter: str, qos: int = 1) -> PutSubscription:
    return PutSubscription(SubscriptionRecord(cid, topic_filter, qos))


def msg(msg_id: int, payload: bytes = b"m", topic: str = "t") -> Message:
    return Message(msg_id, topic, payload, 1, False)


def put_msg(msg_id: int, payload: bytes = b"m") -> PutMessage:
    return PutMessage(msg(msg_id, payload))


def entry(cid: str, seq: int, msg_id: int, state: EntryState = EntryState.QUEUED) -> PutQueueEntry:
    return PutQueueEntry(QueueEntry(cid, seq, msg_id, 1, state=state))


def new_msg(msg_id: int, payload: bytes = b"m") -> PutMessage:
    """A message no stored entry uses (the ledger puts only those)."""
    return PutMessage(msg(msg_id, payload), new=True)


def new_entry(cid: str, seq: int, msg_id: int) -> PutQueueEntry:
    """A queue entry the ledger has never stored (its seq is new)."""
    return PutQueueEntry(QueueEntry(cid, seq, msg_id, 1), new=True)


def retain(topic: str, msg_id: int, payload: bytes) -> PutRetained:
    return PutRetained(Message(msg_id, topic, payload, 1, True))


Round = list[list[StoreOp]]


@dataclass(frozen=True)
class Outcome:
    """What a reopened store holds, in values a reader can check against the case."""

    sessions: dict[str, int]  # client id: expiry interval
    subscriptions: dict[tuple[str, str], int]  # (client id, filter): qos
    messages: dict[int, bytes]  # msg id: payload
    queue: list[tuple[str, int, int, EntryState]]  # (client id, seq, msg id, state), by seq
    inbound: set[tuple[str, int]]
    retained: dict[str, bytes]  # topic: payload


def outcome(
    sessions: dict[str, int] | None = None,
    subscriptions: dict[tuple[str, str], int] | None = None,
    messages: dict[int, bytes] | None = None,
    queue: list[tuple[str, int, int, EntryState]] | None = None,
    inbound: set[tuple[str, int]] | None = None,
    retained: dict[str, bytes] | None = None,
) -> Outcome:
    return Outcome(
        sessions or {},
        subscriptions or {},
        messages or {},
        queue or [],
        inbound or set(),
        retained or {},
    )


def observed(snap: Snapshot) -> Outcome:
    return Outcome(
        {s.client_id: s.expiry_interval for s in snap.sessions},
        {(s.client_id, s.topic_filter): s.qos for s in snap.subscriptions},
        {m.msg_id: m.payload for m in snap.messages},
        [(e.client_id, e.seq, e.msg_id, e.state) for e in snap.queue],
        set(snap.inbound_qos2),
        {m.topic: m.payload for m in snap.retained},
    )


Q, S = EntryState.QUEUED, EntryState.SENT

A_WITH_ROWS: Round = [
    [session("a"), sub("a", "x"), put_msg(1), entry("a", 1, 1), PutInboundQos2("a", 7)]
]

CASES: dict[str, tuple[list[Round], Outcome]] = {
    "every put is stored": (
        [[*A_WITH_ROWS, [retain("r", 2, b"kept")]]],
        outcome(
            sessions={"a": 60},
            subscriptions={("a", "x"): 1},
            messages={1: b"m"},
            queue=[("a", 1, 1, Q)],
            inbound={("a", 7)},
            retained={"r": b"kept"},
        ),
    ),
    "a put replaces the whole row, the last call of a group winning": (
        [
            [[session("a", 10), sub("a", "x", 0)]],
            [[session("a", 20)], [sub("a", "x", 2), session("a", 30)]],
        ],
        outcome(sessions={"a": 30}, subscriptions={("a", "x"): 2}),
    ),
    "put then delete in one call leaves nothing": (
        [[[put_msg(1), entry("a", 1, 1), DeleteQueueEntry("a", 1), DeleteMessage(1)]]],
        outcome(),
    ),
    "put then delete across calls of one group leaves nothing": (
        [[[put_msg(1), retain("r", 1, b"x")], [DeleteMessage(1), DeleteRetained("r")]]],
        outcome(),
    ),
    "delete then put in one group leaves the new row": (
        [[[put_msg(1, b"old")]], [[DeleteMessage(1)], [put_msg(1, b"new")]]],
        outcome(messages={1: b"new"}),
    ),
    "a delete removes a row stored by an earlier group": (
        [
            A_WITH_ROWS,
            [
                [
                    DeleteSubscription("a", "x"),
                    DeleteQueueEntry("a", 1),
                    DeleteMessage(1),
                    DeleteInboundQos2("a", 7),
                ]
            ],
        ],
        outcome(sessions={"a": 60}),
    ),
    "deleting what is not there changes nothing": (
        [
            [[session("b"), put_msg(3)]],
            [
                [
                    DeleteSession("a"),
                    DeleteSubscription("b", "nope"),
                    DeleteMessage(9),
                    DeleteQueueEntry("b", 9),
                    DeleteInboundQos2("b", 9),
                    DeleteRetained("nope"),
                ]
            ],
        ],
        outcome(sessions={"b": 60}, messages={3: b"m"}),
    ),
    "deleting a session drops what it owns, not messages nor retained": (
        [[*A_WITH_ROWS, [retain("r", 2, b"kept")]], [[DeleteSession("a")]]],
        outcome(messages={1: b"m"}, retained={"r": b"kept"}),
    ),
    "deleting a session leaves other sessions' rows": (
        [
            [*A_WITH_ROWS, [session("b"), sub("b", "x"), entry("b", 2, 1), PutInboundQos2("b", 7)]],
            [[DeleteSession("a")]],
        ],
        outcome(
            sessions={"b": 60},
            subscriptions={("b", "x"): 1},
            messages={1: b"m"},
            queue=[("b", 2, 1, Q)],
            inbound={("b", 7)},
        ),
    ),
    "deleting a session voids its rows put earlier in the same group": (
        [[[put_msg(1)], A_WITH_ROWS[0][:2], [entry("a", 1, 1)], [DeleteSession("a")]]],
        outcome(messages={1: b"m"}),
    ),
    "rows put after a session delete in the same group stay": (
        [
            A_WITH_ROWS,
            [
                [DeleteSession("a"), session("a", 5)],
                [sub("a", "y"), entry("a", 4, 1), PutInboundQos2("a", 8)],
            ],
        ],
        outcome(
            sessions={"a": 5},
            subscriptions={("a", "y"): 1},
            messages={1: b"m"},
            queue=[("a", 4, 1, Q)],
            inbound={("a", 8)},
        ),
    ),
    "only what follows the last session delete of a group stays": (
        [
            [
                [session("a"), sub("a", "x")],
                [DeleteSession("a"), session("a", 7), sub("a", "y")],
                [DeleteSession("a"), sub("a", "z")],
            ]
        ],
        outcome(subscriptions={("a", "z"): 1}),
    ),
    "a queue entry's new state replaces the old": (
        [[[session("a"), put_msg(1), entry("a", 1, 1)]], [[entry("a", 1, 1, S)]]],
        outcome(sessions={"a": 60}, messages={1: b"m"}, queue=[("a", 1, 1, S)]),
    ),
    "the queue comes back ordered by seq across clients": (
        [[[put_msg(1), entry("b", 30, 1), entry("a", 10, 1)]], [[entry("b", 20, 1)]]],
        outcome(messages={1: b"m"}, queue=[("a", 10, 1, Q), ("b", 20, 1, Q), ("b", 30, 1, Q)]),
    ),
    "retained messages are keyed by topic, not by message id": (
        [[[retain("r", 1, b"one"), retain("s", 1, b"s")]], [[retain("r", 2, b"two")]]],
        outcome(retained={"r": b"two", "s": b"s"}),
    ),
    "a subscription is deleted by its filter only": (
        [[[session("a"), sub("a", "x"), sub("a", "y")]], [[DeleteSubscription("a", "x")]]],
        outcome(sessions={"a": 60}, subscriptions={("a", "y"): 1}),
    ),
    "a new entry and its message acknowledged in the same group leave nothing": (
        [[[new_msg(1), new_entry("a", 1, 1)], [DeleteQueueEntry("a", 1), DeleteMessage(1)]]],
        outcome(),
    ),
    "a new entry deleted in the next group is gone": (
        [[[new_msg(1), new_entry("a", 1, 1)]], [[DeleteQueueEntry("a", 1), DeleteMessage(1)]]],
        outcome(),
    ),
    "a stored message deleted, put again and deleted in one group is gone": (
        [[[new_msg(1, b"old")]], [[DeleteMessage(1)], [new_msg(1, b"new")], [DeleteMessage(1)]]],
        outcome(),
    ),
    "a new entry after its session's delete, then acknowledged, leaves the rest": (
        [
            [[session("a"), put_msg(1), new_entry("a", 1, 1), new_entry("a", 2, 1)]],
            [[DeleteSession("a"), session("a"), new_entry("a", 3, 1)], [DeleteQueueEntry("a", 3)]],
        ],
        outcome(sessions={"a": 60}, messages={1: b"m"}),
    ),
    "acknowledged runs of entries and messages are deleted, and only they": (
        [
            [[new_msg(i) for i in range(1, 8)] + [new_entry("a", i, i) for i in range(1, 8)]],
            [
                [DeleteQueueEntry("a", i) for i in (1, 2, 3, 5, 7)]
                + [DeleteMessage(i) for i in (2, 3, 4, 6)]
            ],
        ],
        outcome(messages={1: b"m", 5: b"m", 7: b"m"}, queue=[("a", 4, 4, Q), ("a", 6, 6, Q)]),
    ),
    "an inbound QoS 2 id deleted then put again is there": (
        [[[PutInboundQos2("a", 1)], [DeleteInboundQos2("a", 1)], [PutInboundQos2("a", 1)]]],
        outcome(inbound={("a", 1)}),
    ),
}


async def _memory(tmp_path: Path) -> tuple[Store, Callable[[], Store]]:
    store = MemoryStore()
    return store, lambda: store  # a restart without a crash: the same instance


async def _sqlite(tmp_path: Path) -> tuple[Store, Callable[[], Store]]:
    path = tmp_path / "store.db"
    return SqliteStore(path, synchronous="off"), lambda: SqliteStore(path)


STORES = {"memory": _memory, "sqlite": _sqlite}


async def _run_rounds(store: Store, rounds: list[Round]) -> None:
    for calls in rounds:
        before = store.stats.commits
        # Submitted without awaiting in between: the SQLite writer takes them as one group.
        futures = [store.submit(ops) for ops in calls]
        await asyncio.gather(*futures)
        if isinstance(store, SqliteStore):
            assert store.stats.commits == before + 1, "the round was not one transaction"


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("case", CASES)
async def test_store_conformance(tmp_path: Path, kind: str, case: str) -> None:
    rounds, expected = CASES[case]
    store, reopen = await STORES[kind](tmp_path)
    assert await store.open() == Snapshot()
    await _run_rounds(store, rounds)
    await store.close()
    again = reopen()
    snap = await again.open()
    await again.close()
    assert observed(snap) == expected


@pytest.mark.parametrize("kind", STORES)
async def test_a_call_with_a_bad_op_stores_nothing_of_it(tmp_path: Path, kind: str) -> None:
    store, reopen = await STORES[kind](tmp_path)
    await store.open()
    await store.commit([session("a")])
    bad: list[StoreOp] = [DeleteSession("a"), session("b"), "not an op"]  # type: ignore[list-item]
    with pytest.raises(StoreError):
        await store.commit(bad)
    await store.commit([sub("a", "x")])  # the store goes on
    await store.close()
    again = reopen()
    snap = await again.open()
    await again.close()
    assert observed(snap) == outcome(sessions={"a": 60}, subscriptions={("a", "x"): 1})


def test_a_delta_keeps_nothing_of_a_new_message_acknowledged_within_it() -> None:
    from gateway.persistence.tables import Tables, apply

    delta = Tables.delta()
    apply(delta, [new_msg(1), new_entry("a", 1, 1), entry("a", 9, 2)])  # 9 and 2: stored below
    apply(delta, [DeleteQueueEntry("a", 1), DeleteMessage(1)])
    apply(delta, [DeleteQueueEntry("a", 9), DeleteMessage(2)])
    assert delta.messages == {2: None}
    assert delta.queue == {"a": {9: None}}


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ([5], [(5, 5)]),
        ([3, 1, 2], [(1, 3)]),
        ([1, 2, 4, 7, 8, 9, 11], [(1, 2), (4, 4), (7, 9), (11, 11)]),
    ],
)
def test_deleted_keys_go_as_runs_of_consecutive_integers(
    keys: list[int], expected: list[tuple[int, int]]
) -> None:
    from gateway.persistence.sqlite_writes import runs

    assert runs(keys) == expected


@pytest.mark.parametrize(("rows", "limit"), [(1, 32766), (1000 + 3, 32766), (37, 20)])
def test_puts_go_as_multi_row_inserts_of_every_row(rows: int, limit: int) -> None:
    """_insert_rows: chunks of 256, 128, ... rows (fewer under a low parameter limit), and
    every row is written whatever the count."""
    import sqlite3

    from gateway.persistence import schema
    from gateway.persistence.codec import message_row
    from gateway.persistence.sqlite_writes import _PUT_MESSAGE, _insert_rows

    db = sqlite3.connect(":memory:", isolation_level=None)
    schema.migrate(db)
    db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit)
    _insert_rows(db, _PUT_MESSAGE, [message_row(msg(i, b"p%d" % i)) for i in range(1, rows + 1)])
    got = db.execute("SELECT msg_id, payload FROM messages ORDER BY msg_id").fetchall()
    assert got == [(i, b"p%d" % i) for i in range(1, rows + 1)]
