"""Back-pressure for every packet a client provokes (issue 9 §2): a client that sends
requests without reading the answers is paused (not read from) while its send buffer is full,
costs a bounded buffer, does not slow anyone else down, loses nothing once it reads again,
and is dropped if it reads nothing at all for limits.send_stall_timeout.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

import pytest
from abuse_tools import (
    PINGREQ,
    NonReader,
    Observer,
    connect_packet,
    median_ms,
    qos1_publish_packet,
    subscribe_packet,
)
from conftest import ThreadGateway, wait_for
from paho_helpers import V5, Client

from gateway.mqtt.codec import encode
from gateway.mqtt.packets import PROTOCOL_V311, Publish, Will
from gateway.server.connection import (
    DRAIN_BATCH,
    SLOW_CONSUMER_BYTES,
    WRITE_HIGH_WATER,
    MQTTConnection,
)

GatewayFactory = Callable[..., tuple[ThreadGateway, int]]

# What may wait for a paused client: the transport's high-water mark plus the answers to one
# read of its requests (asyncio reads up to 256 KiB at a time; no answer here is larger than
# its request). Without back-pressure the buffer grows as long as the flood lasts.
BUFFER_BOUND = WRITE_HIGH_WATER + 256 * 1024 + 64 * 1024


def _requests(kind: str) -> tuple[bytes, int]:
    """A request of this kind, and the size of the broker's answer to it."""
    if kind == "pingreq":
        return PINGREQ, 2
    if kind == "subscribe":
        return subscribe_packet(7, "some/filter"), 5  # SUBACK
    return qos1_publish_packet(7, "nobody/listens"), 4  # PUBACK


def _connection_of(gw: ThreadGateway, local_port: int) -> MQTTConnection:
    def find() -> MQTTConnection:
        for conn in gw.gateway.server.connections.values():
            if conn.info is not None and conn.info.peer == f"127.0.0.1:{local_port}":
                return cast(MQTTConnection, conn)
        raise LookupError(local_port)

    return cast(MQTTConnection, gw.call(find))


def _buffered(gw: ThreadGateway, conn: MQTTConnection) -> int:
    assert conn.transport is not None
    transport = conn.transport
    return cast(int, gw.call(lambda: transport.get_write_buffer_size()))


def _fill_the_pipe(gw: ThreadGateway, client: NonReader, conn: MQTTConnection) -> int:
    """Have the gateway send ``client`` QoS 0 messages (it subscribes to itself) until the
    kernel's socket buffers are full and the gateway's own buffer starts to fill; returns
    the bytes sent to it. On loopback the kernel takes megabytes first: without this, a test
    flood would need millions of PINGREQs before the gateway's buffer saw any of them."""
    topic = f"self/{client.local_port}"
    client.sock.sendall(subscribe_packet(1, topic))
    publish = encode(Publish(topic, b"p" * 16384, qos=0), PROTOCOL_V311)
    sent = 5  # the SUBACK
    for _ in range(2000):  # 32 MiB at most
        if _buffered(gw, conn) > 0:
            return sent
        client.sock.sendall(publish)
        sent += len(publish)
        gw.call(lambda: None)  # let the gateway handle it
    raise AssertionError("the gateway's send buffer never filled")


@pytest.mark.parametrize("kind", ["pingreq", "subscribe", "qos1-publish"])
def test_a_client_that_does_not_read_is_paused(gateway_factory: GatewayFactory, kind: str) -> None:
    gw, port = gateway_factory()
    observer = Observer(port)
    baseline = observer.round_trips(20)
    flooder = NonReader(port, f"flood-{kind}")
    conn = _connection_of(gw, flooder.local_port)
    primed = _fill_the_pipe(gw, flooder, conn)
    assert gw.call(lambda: conn.stalled_since) is None  # the requests below make it pause
    request, answer = _requests(kind)
    flooder.flood(request, seconds=5, max_requests=2_000_000, stall=1.0)
    during = observer.round_trips(20)  # within its timeout: nobody else is held up
    buffered = _buffered(gw, conn)
    print(
        f"{kind}: {flooder.sent} requests sent, {buffered} bytes buffered; observer round "
        f"trip p50 {median_ms(baseline):.2f} ms before, {median_ms(during):.2f} ms during"
    )
    assert buffered <= BUFFER_BOUND, f"{buffered} bytes wait for a client that does not read"
    assert gw.call(lambda: gw.gateway.server.stats.write_pauses) >= 1
    assert conn.stalled_since is not None  # paused right now
    # Once it reads, everything it asked for arrives (nothing was dropped) and it goes on.
    reading = threading.Thread(target=flooder.finish)
    reading.start()
    expected = primed + flooder.sent * answer
    got = flooder.read_all(expected, timeout=30)
    reading.join(10)
    expected = primed + flooder.sent * answer
    got += flooder.read_all(expected - got, timeout=5)
    assert got == expected
    assert wait_for(lambda: gw.call(lambda: conn.stalled_since) is None)
    flooder.sock.sendall(PINGREQ)
    assert flooder.read_all(2) == 2
    assert not conn.closed
    flooder.close()
    observer.close()


def test_a_client_that_reads_nothing_is_dropped_after_the_stall_timeout(
    gateway_factory: GatewayFactory,
) -> None:
    gw, port = gateway_factory({"limits": {"send_stall_timeout": 1}})
    watcher = Client(port, "will-watcher", version=V5)
    assert watcher.subscribe("wills/#", qos=1) == [1]
    flooder = NonReader(port, "stalled", will=Will("wills/stalled", b"gone", qos=1))
    conn = _connection_of(gw, flooder.local_port)
    _fill_the_pipe(gw, flooder, conn)
    flooder.flood(PINGREQ, seconds=5, max_requests=1_000_000, stall=1.0)
    assert wait_for(lambda: gw.call(lambda: conn.stalled_since) is not None)
    started = time.monotonic()
    message = watcher.get(timeout=10)
    print(f"dropped {time.monotonic() - started:.1f} s after it was paused")
    assert (message.topic, message.payload) == ("wills/stalled", b"gone")
    assert gw.call(lambda: gw.gateway.server.stats.send_stalls) == 1
    assert flooder.closed_by_server(timeout=5)
    watcher.disconnect()
    flooder.close()


def test_a_slow_reader_is_neither_stalled_nor_timed_out(gateway_factory: GatewayFactory) -> None:
    """Paused most of the time, yet reading: neither the stall timeout nor its keep-alive
    (which cannot be checked while the gateway does not read it) drops it."""
    gw, port = gateway_factory({"limits": {"send_stall_timeout": 1.5}})
    reader = NonReader(port, "slow", keep_alive=1)
    conn = _connection_of(gw, reader.local_port)
    primed = _fill_the_pipe(gw, reader, conn)
    reader.flood(PINGREQ, seconds=5, max_requests=1_000_000, stall=1.0)
    assert wait_for(lambda: gw.call(lambda: conn.stalled_since) is not None)
    deadline = time.monotonic() + 4.0
    got = 0
    reader.sock.settimeout(1)
    while time.monotonic() < deadline:
        data = reader.sock.recv(2048)
        assert data, "closed by the gateway"
        got += len(data)
        time.sleep(0.1)
    assert 0 < got < primed + reader.sent * 2  # still behind: paused all along
    assert not gw.call(lambda: conn.closed)
    stats = gw.call(lambda: gw.gateway.server.stats)
    assert (stats.send_stalls, stats.keepalive_timeouts) == (0, 0)
    reader.close()


def test_qos0_to_a_slow_consumer_is_still_dropped_and_bounded(
    gateway_factory: GatewayFactory,
) -> None:
    gw, port = gateway_factory()
    consumer = NonReader(port, "slow-consumer")
    consumer.sock.sendall(subscribe_packet(1, "big/#"))
    conn = _connection_of(gw, consumer.local_port)
    publisher = Observer(port, "big-publisher")
    payload = b"x" * 65536
    message = encode(Publish("big/x", payload, qos=0), PROTOCOL_V311)
    for _ in range(120):  # 7.5 MiB for a consumer that reads nothing
        publisher.sock.sendall(message)
    assert publisher.round_trip() < 5  # the publisher itself is not held up
    assert wait_for(lambda: gw.call(lambda: gw.gateway.server.stats.dropped_slow_consumer) > 0)
    assert _buffered(gw, conn) <= SLOW_CONSUMER_BYTES + 2 * len(message)
    publisher.close()
    consumer.close()


# ------------------------------------------------------------------ the two reasons to pause


class FakeTransport:
    def __init__(self) -> None:
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> None:
        return None


class CountingBroker:
    def __init__(self) -> None:
        self.handled = 0
        self.stats = SimpleNamespace(bytes_received=0)

    def handle(self, conn_id: int, packet: object, now: float) -> None:
        self.handled += 1


def _bare_connection() -> tuple[MQTTConnection, FakeTransport]:
    server: Any = SimpleNamespace(
        next_conn_id=lambda: 1,
        max_packet_size=1 << 20,
        stats=SimpleNamespace(write_pauses=0),
        broker=CountingBroker(),
        flush_effects=lambda origin=None: None,
        write_stalled=lambda conn, stalled: None,
    )
    conn = MQTTConnection(server, "tcp", True)
    transport = FakeTransport()
    conn.transport = cast(Any, transport)
    return conn, transport


async def test_a_long_run_of_packets_lets_other_connections_go_first() -> None:
    """One read can hold 100,000 PINGREQs: they are handled DRAIN_BATCH at a time, with a
    turn of the event loop (other connections' reads) in between, and not read further
    meanwhile."""
    conn, transport = _bare_connection()
    conn.decoder.feed(connect_packet("c", None, None, PROTOCOL_V311))  # as if connected
    conn.connected = True
    broker = conn.server.broker
    conn.data_received(PINGREQ * (3 * DRAIN_BATCH + 5))
    assert broker.handled == DRAIN_BATCH
    assert not transport.reading
    for batch in (2, 3):
        await asyncio.sleep(0)
        assert broker.handled == batch * DRAIN_BATCH
        assert not transport.reading
    await asyncio.sleep(0)
    assert broker.handled == 3 * DRAIN_BATCH + 5
    assert transport.reading


def test_a_finished_commit_does_not_resume_a_client_whose_buffer_is_full() -> None:
    conn, transport = _bare_connection()
    conn.mark_busy()  # a durable commit is under way
    conn.pause_writing()  # and the client does not read
    conn.continue_after_wait()  # the commit is done ...
    assert not transport.reading  # ... but the buffer is still full
    conn.resume_writing()
    assert transport.reading


def test_a_drained_buffer_does_not_resume_a_client_whose_commit_is_under_way() -> None:
    conn, transport = _bare_connection()
    conn.pause_writing()
    conn.mark_busy()
    conn.resume_writing()
    assert not transport.reading
    conn.continue_after_wait()
    assert transport.reading
