"""A subscriber draining its queue: the messages its PUBACKs make room for are written every
ACK_PIPELINE acknowledgements, not once after the whole read, so that the client works on
them while the broker handles the rest (gateway/server/connection.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conftest import ThreadGateway, wait_for
from raw_client import RawClient

from gateway.mqtt.codec import encode
from gateway.mqtt.packets import (
    PROTOCOL_V311,
    ConnAck,
    Connect,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
)
from gateway.server.connection import ACK_PIPELINE

GatewayFactory = Callable[..., tuple[ThreadGateway, int]]
WINDOW = 100


class CountingTransport:
    """The connection's transport, counting the writes made to it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.inner.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _connect(port: int, client_id: str, clean: bool) -> RawClient:
    c = RawClient(port)
    ack = c.connect(Connect(client_id=client_id, clean_start=clean, keep_alive=60))
    assert isinstance(ack, ConnAck)
    return c


def _publishes(c: RawClient, n: int) -> list[Publish]:
    got = []
    while len(got) < n:
        p = c.recv()
        assert isinstance(p, Publish), p
        got.append(p)
    return got


def test_a_read_of_pubacks_is_answered_in_several_writes(gateway_factory: GatewayFactory) -> None:
    gw, port = gateway_factory({"limits": {"max_inflight_messages": WINDOW}})
    sub = _connect(port, "drainer", clean=False)
    sub.send(Subscribe(1, (Subscription("pipe/#", 1),)))
    assert isinstance(sub.recv(), SubAck)
    sub.close()
    pub = _connect(port, "filler", clean=True)
    pub.send(*(Publish("pipe/t", b"m%d" % i, qos=1, packet_id=i + 1) for i in range(3 * WINDOW)))
    acked = [pub.recv() for _ in range(3 * WINDOW)]
    assert all(isinstance(a, PubAck) for a in acked)

    sub = _connect(port, "drainer", clean=False)
    first = _publishes(sub, WINDOW)  # the window is full: nothing more until PUBACKs

    server = gw.gateway.server

    def wrap() -> CountingTransport:
        peer = f"127.0.0.1:{sub.sock.getsockname()[1]}"
        (conn,) = [
            c for c in server.connections.values() if c.info is not None and c.info.peer == peer
        ]
        counting = CountingTransport(conn.transport)
        conn.transport = counting
        return counting

    counting = gw.call(wrap)
    sub.send_bytes(b"".join(encode(PubAck(p.packet_id or 0), PROTOCOL_V311) for p in first))
    second = _publishes(sub, WINDOW)
    assert [p.payload for p in first + second] == [b"m%d" % i for i in range(2 * WINDOW)]
    # One read of 100 PUBACKs: at least three writes (one would mean no pipelining).
    assert ACK_PIPELINE <= WINDOW // 3
    assert wait_for(lambda: counting.writes >= 3, 5), counting.writes
    pub.close()
    sub.close()
