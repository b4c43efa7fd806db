"""Property test: any sequence of ops, however grouped, leaves SQLite exactly as the model.

The model (tables.Tables as the memory store keeps it) applies ops one by one; SqliteStore
reduces each group to its net effect per key (a delta) before it runs any SQL. Committing the
same ops both ways and reopening the file must give the same snapshot.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    QueuePolicy,
    SessionRecord,
    StoreOp,
    SubscriptionRecord,
)
from gateway.broker.settings import Overflow
from gateway.mqtt.packets import NO_PROPERTIES, Properties, Will
from gateway.persistence import SqliteStore
from gateway.persistence.tables import Tables, apply

# Few keys, so that puts, deletes and cascades collide often.
client_ids = st.sampled_from(["a", "b", "ç"])
msg_ids = st.integers(0, 5)
seqs = st.integers(0, 6)
topics = st.sampled_from(["x", "y/z", "€/#"])
# MQTT strings are UTF-8 and carry no surrogates (the codec rejects them).
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
small_ints = st.integers(0, 2**32 - 1)

properties = st.one_of(
    st.just(NO_PROPERTIES),
    st.builds(
        Properties,
        payload_format_indicator=st.none() | st.integers(0, 1),
        message_expiry_interval=st.none() | small_ints,
        content_type=st.none() | texts,
        response_topic=st.none() | texts,
        correlation_data=st.none() | st.binary(max_size=8),
        subscription_identifiers=st.lists(st.integers(1, 268435455), max_size=3).map(tuple),
        user_properties=st.lists(st.tuples(texts, texts), max_size=3).map(tuple),
        authentication_data=st.none() | st.binary(max_size=4),
        reason_string=st.none() | texts,
    ),
)

messages = st.builds(
    Message,
    msg_id=msg_ids,
    topic=topics,
    payload=st.binary(max_size=32),
    qos=st.integers(0, 2),
    retain=st.booleans(),
    properties=properties,
    expires_at=st.none() | st.floats(0, 2e9),
    origin_client_id=texts,
    created_at=st.floats(0, 2e9),
)

wills = st.none() | st.builds(
    Will,
    topic=topics,
    payload=st.binary(max_size=8),
    qos=st.integers(0, 2),
    retain=st.booleans(),
    properties=properties,
)

queue_policies = st.none() | st.builds(
    QueuePolicy,
    max_messages=st.none() | small_ints,
    max_bytes=st.none() | small_ints,
    overflow=st.none() | st.sampled_from(Overflow),
    coalesce=st.none() | st.booleans(),
    default_expiry=st.none() | small_ints,
    notify_topic=st.none() | texts,
    pending_topic=st.none() | texts,
    command_schema=st.none() | texts,
)

ops: st.SearchStrategy[StoreOp] = st.one_of(
    st.builds(
        PutSession,
        st.builds(
            SessionRecord,
            client_id=client_ids,
            expiry_interval=small_ints,
            protocol_version=st.sampled_from([4, 5]),
            username=st.none() | texts,
            disconnected_at=st.none() | st.floats(0, 2e9),
            will=wills,
            queue_policy=queue_policies,
        ),
    ),
    st.builds(DeleteSession, client_ids),
    st.builds(
        PutSubscription,
        st.builds(
            SubscriptionRecord,
            client_id=client_ids,
            topic_filter=topics,
            qos=st.integers(0, 2),
            no_local=st.booleans(),
            retain_as_published=st.booleans(),
            retain_handling=st.integers(0, 2),
            subscription_id=st.none() | st.integers(1, 268435455),
        ),
    ),
    st.builds(DeleteSubscription, client_ids, topics),
    st.builds(PutMessage, messages),
    st.builds(DeleteMessage, msg_ids),
    st.builds(
        PutQueueEntry,
        st.builds(
            QueueEntry,
            client_id=client_ids,
            seq=seqs,
            msg_id=msg_ids,
            qos=st.integers(0, 2),
            state=st.sampled_from(EntryState),
            packet_id=st.none() | st.integers(1, 65535),
            retain=st.booleans(),
            subscription_ids=st.lists(st.integers(1, 268435455), max_size=3).map(tuple),
        ),
    ),
    st.builds(DeleteQueueEntry, client_ids, seqs),
    st.builds(PutInboundQos2, client_ids, st.integers(1, 4)),
    st.builds(DeleteInboundQos2, client_ids, st.integers(1, 4)),
    st.builds(PutRetained, messages),
    st.builds(DeleteRetained, topics),
)

# A list of rounds; each round is a list of commit() calls issued concurrently (one group).
rounds = st.lists(st.lists(st.lists(ops, max_size=6), min_size=1, max_size=5), max_size=4)


async def _run(path: Path, plan: list[list[list[StoreOp]]]) -> None:
    store = SqliteStore(path, synchronous="off", group_window=0.001)
    await store.open()
    for group in plan:
        await asyncio.gather(*(store.commit(call) for call in group))
    await store.close()


async def _load(path: Path) -> tuple[object, ...]:
    """Reopens the file; checks the queue comes back ordered by seq."""
    store = SqliteStore(path)
    snap = await store.open()
    await store.close()
    seq_order = [e.seq for e in snap.queue]
    assert seq_order == sorted(seq_order)
    return _canonical(snap)


def _canonical(snap: object) -> tuple[object, ...]:
    from gateway.broker.records import Snapshot

    assert isinstance(snap, Snapshot)
    return (
        sorted(snap.sessions, key=lambda s: s.client_id),
        sorted(snap.subscriptions, key=lambda s: (s.client_id, s.topic_filter)),
        sorted(snap.messages, key=lambda m: m.msg_id),
        # Seqs repeat across clients here (the broker's are global); tie-break by client.
        sorted(snap.queue, key=lambda e: (e.seq, e.client_id)),
        sorted(snap.inbound_qos2),
        sorted(snap.retained, key=lambda m: m.topic),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds)
def test_sqlite_matches_model(plan: list[list[list[StoreOp]]]) -> None:
    model = Tables()
    for group in plan:
        for call in group:
            for op in call:
                apply(model, (op,))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.db"
        asyncio.run(_run(path, plan))
        got = asyncio.run(_load(path))
    assert got == _canonical(model.snapshot())
