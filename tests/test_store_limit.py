"""persistence.max_size_mb is enforced (issue 9 §2): a real gateway with a 1 MiB store,
real paho clients, and the files on disk measured after every acknowledged publish."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from conftest import ProcessGateway, free_port, wait_for, write_config
from paho.mqtt.enums import CallbackAPIVersion
from paho_helpers import V5, V311, Client
from test_persistence import message

from gateway.broker.records import DeleteMessage, PutMessage
from gateway.persistence import SqliteStore
from gateway.persistence.limit import MIB, SizeLimit

LIMIT = MIB
# The data stops at `high` plus one broker step (one publish here), the WAL is truncated to
# its share after each commit: between commits the files stay within the limit.
MARGIN = 0
PAYLOAD = 2000


def store_files(directory: Path) -> int:
    return sum(
        os.path.getsize(p) for p in (directory / "gw.db", directory / "gw.db-wal") if p.exists()
    )


class Publisher:
    """A paho client that records the reason code and reason string of every PUBACK."""

    def __init__(self, port: int, version: int, client_id: str) -> None:
        self.acks: dict[int, tuple[int, str | None]] = {}
        self._done = threading.Condition()
        kwargs: dict[str, Any] = {"client_id": client_id, "protocol": version}
        self.c = paho.Client(CallbackAPIVersion.VERSION2, **kwargs)
        self.c.on_publish = self._on_publish
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert wait_for(self.c.is_connected, 5)

    def _on_publish(self, c: Any, u: Any, mid: int, rc: Any, props: Any) -> None:
        reason = getattr(props, "ReasonString", None) if props is not None else None
        with self._done:
            self.acks[mid] = (int(getattr(rc, "value", rc)), reason)
            self._done.notify_all()

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> tuple[int, str | None]:
        mid = self.c.publish(topic, payload, qos=qos).mid
        with self._done:
            assert self._done.wait_for(lambda: mid in self.acks, 5), "no PUBACK"
            return self.acks[mid]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def small_store(tmp_path: Path) -> Any:
    port = free_port()
    config = write_config(tmp_path, port, {"persistence": {"max_size_mb": 1}, "sys_interval": 1})
    gw = ProcessGateway(config, port).start()
    yield gw, port
    gw.stop_if_running()


def _offline_subscriber(port: int, client_id: str, version: int = V5) -> None:
    if version == V5:
        sub = Client(port, client_id, version=V5, clean=False, session_expiry=3600)
    else:
        sub = Client(port, client_id, version=V311, clean=False)
    sub.subscribe("fill/#", qos=1)
    sub.disconnect()


def test_v5_publisher_is_refused_with_0x97_files_stay_bounded_and_draining_makes_room(
    small_store: Any, tmp_path: Path
) -> None:
    gw, port = small_store
    _offline_subscriber(port, "keeper")
    pub = Publisher(port, V5, "filler")
    accepted = 0
    peak = 0
    refusal: tuple[int, str | None] | None = None
    for i in range(2 * LIMIT // PAYLOAD):  # twice what fits: it must stop well before
        rc, reason = pub.publish(f"fill/{i}", os.urandom(PAYLOAD))
        peak = max(peak, store_files(tmp_path))
        if rc >= 0x80:
            refusal = (rc, reason)
            break
        accepted += 1
    assert refusal is not None, f"never refused; files at {peak} bytes"
    assert refusal[0] == 0x97 and refusal[1] is not None and "full" in refusal[1]
    assert peak <= LIMIT + MARGIN, f"store files reached {peak} bytes"
    # Most of the limit is usable: the WAL share and the headroom are an eighth and a 16th.
    assert accepted * PAYLOAD > LIMIT // 2

    # Refused again while full, and visible in $SYS.
    assert pub.publish("fill/more", os.urandom(PAYLOAD))[0] == 0x97
    watcher = Client(port, "watcher", version=V5)
    watcher.subscribe("$SYS/broker/publish/messages/dropped/store_full", qos=0)
    # The retained figure may predate the refusals: $SYS is refreshed every second.
    assert wait_for(lambda: int(watcher.get(timeout=5).payload) >= 2, 10, 0)
    watcher.disconnect()

    # QoS 0 and clean sessions are still served.
    live = Client(port, "live", version=V5)
    live.subscribe("chat/#", qos=1)
    assert pub.publish("chat/x", b"hello")[0] == 0x00
    assert live.get().payload == b"hello"
    live.disconnect()

    # Nothing acknowledged was lost: the subscriber gets every accepted message.
    sub = Client(port, "keeper", version=V5, clean=False, session_expiry=3600)
    got = [m.topic for m in sub.drain(2.0)]
    assert got == [f"fill/{i}" for i in range(accepted)]
    sub.disconnect()

    # The store drained: publishing works again.
    assert wait_for(lambda: pub.publish("fill/again", b"x" * PAYLOAD)[0] == 0x00, 10, 0.2)
    pub.close()
    assert gw.terminate() == 0
    log = gw.log_path.read_text()
    assert "store full (" in log and "store has room again" in log
    assert store_files(tmp_path) <= LIMIT + MARGIN


@pytest.mark.parametrize("overflow", ["drop-oldest", "reject-new"])
def test_v311_publisher_is_acknowledged_and_the_session_policy_decides(
    tmp_path: Path, overflow: str
) -> None:
    port = free_port()
    config = write_config(
        tmp_path,
        port,
        {"persistence": {"max_size_mb": 1}, "limits": {"queue": {"overflow": overflow}}},
    )
    gw = ProcessGateway(config, port).start()
    try:
        _offline_subscriber(port, "keeper", V311)
        pub = Publisher(port, V311, "old-client")
        n = 2 * LIMIT // PAYLOAD
        peak = 0
        for i in range(n):
            # 3.1.1 has no way to refuse: every PUBACK is a plain one.
            assert pub.publish(f"fill/{i}", os.urandom(PAYLOAD)) == (0, None)
            peak = max(peak, store_files(tmp_path))
        pub.close()
        assert peak <= LIMIT + MARGIN, f"store files reached {peak} bytes"
        sub = Client(port, "keeper", version=V311, clean=False)
        got = [int(m.topic.split("/")[1]) for m in sub.drain(2.0)]
        sub.disconnect()
    finally:
        gw.stop_if_running()
    assert LIMIT // 2 < len(got) * PAYLOAD < LIMIT
    if overflow == "drop-oldest":
        assert got[-1] == n - 1 and got == list(range(got[0], n))  # the newest, in order
    else:
        assert got == list(range(len(got)))  # the oldest: the new ones were dropped
    assert "store full (" in gw.log_path.read_text()


async def test_store_says_full_when_ops_are_submitted_and_room_again_after_the_commit(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "s.db", max_size_bytes=LIMIT)
    told: list[tuple[bool, str]] = []
    store.on_limit = lambda full, detail: told.append((full, detail))
    await store.open()
    limit = SizeLimit(LIMIT)
    big = [PutMessage(message(i, payload=b"x" * 50_000)) for i in range(20)]
    future = store.submit(big)
    assert told and told[0][0] is True and not future.done()  # before the commit
    assert "MiB of data" in told[0][1]
    await future
    assert store.over_limit() and len(told) == 1  # no flapping
    seen = []
    for i in range(20):
        await store.commit([DeleteMessage(i)])
        seen.append((store.stats.size_bytes, store.over_limit()))
    await store.close()
    assert [full for full, _ in told] == [True, False]
    # Full down to `low`, below `high` too (hysteresis); not full from `low` on.
    assert all(full == (size > limit.low) for size, full in seen), seen
    assert any(limit.low < size < limit.high for size, _ in seen), seen


async def test_wal_is_kept_within_its_share(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(path, max_size_bytes=LIMIT)
    await store.open()
    budget = SizeLimit(LIMIT).wal_budget
    biggest = 0
    for i in range(200):  # ~2 MB through the WAL, the data itself stays small
        await store.commit([PutMessage(message(i, payload=b"w" * 10_000))])
        await store.commit([DeleteMessage(i)])
        biggest = max(biggest, os.path.getsize(f"{path}-wal"))
    await store.close()
    assert biggest <= budget


def test_size_limit_hysteresis() -> None:
    limit = SizeLimit(8 * MIB)
    changes: list[bool] = []
    limit.on_change = lambda full, detail: changes.append(full)
    assert limit.wal_budget == MIB and limit.low < limit.high < 8 * MIB - MIB
    for used in (0, limit.high - 1, limit.high, limit.high + 10, limit.low + 1, limit.low):
        limit.update(used)
    assert changes == [True, False]
