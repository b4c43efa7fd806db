"""A QoS 0/1 delivery to another client is written before its step's commit; the publisher's
acknowledgement, QoS 2 deliveries and everything sent to the publisher still wait for it
(gateway/server/server.py, early_deliveries). The store here is the real SQLite store behind a
gate that the test holds shut, so "before the commit" is observed, not assumed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from conftest import ThreadGateway
from raw_client import RawClient

from gateway.broker.effects import Close, Send, SetKeepAlive
from gateway.broker.records import StoreOp
from gateway.mqtt.packets import (
    ConnAck,
    Connect,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    PubRec,
    SubAck,
    Subscribe,
    Subscription,
)
from gateway.persistence import StoreError
from gateway.server.barrier import early_deliveries

GatewayFactory = Callable[..., tuple[ThreadGateway, int]]


class GatedStore:
    """The gateway's store, whose commits are reported done only once the gate is open."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.gate = asyncio.Event()
        self.submitted = threading.Event()

    def submit(self, ops: Sequence[StoreOp], *, urgent: bool = True) -> asyncio.Future[None]:
        done = self._inner.submit(ops, urgent=urgent)
        self.submitted.set()
        gated: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def release() -> None:
            await self.gate.wait()
            try:
                await done
            except Exception as exc:  # pragma: no cover - the real store failed
                gated.set_exception(exc)
            else:
                gated.set_result(None)

        asyncio.get_running_loop().create_task(release())
        return gated

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _client(port: int, client_id: str, clean: bool) -> RawClient:
    c = RawClient(port)
    ack = c.connect(Connect(client_id=client_id, clean_start=clean, keep_alive=60))
    assert isinstance(ack, ConnAck) and ack.reason_code == 0
    return c


def _gate(gw: ThreadGateway, kind: type[GatedStore] | None = None) -> GatedStore:
    """Put a GatedStore (or ``kind``) in front of the gateway's store."""
    server = gw.gateway.server
    gated = (kind or GatedStore)(server.store)
    gw.call(lambda: setattr(server, "store", gated))
    return gated


def _open(gw: ThreadGateway, gated: GatedStore) -> None:
    gw.call(gated.gate.set)


def _subscriber(port: int, qos: int) -> RawClient:
    sub = _client(port, "early-sub", clean=False)
    sub.send(Subscribe(1, (Subscription("early/#", qos),)))
    assert isinstance(sub.recv(), SubAck)
    return sub


def test_a_qos1_delivery_goes_out_before_the_publishers_puback(
    gateway_factory: GatewayFactory,
) -> None:
    gw, port = gateway_factory()
    sub = _subscriber(port, 1)
    pub = _client(port, "early-pub", clean=True)
    gated = _gate(gw)
    try:
        pub.send(Publish("early/t", b"22.5", qos=1, packet_id=7))
        got = sub.recv()
        assert isinstance(got, Publish) and got.payload == b"22.5" and got.qos == 1
        assert gated.submitted.is_set()
        with pytest.raises(TimeoutError):  # not told it is safe: nothing is durable yet
            pub.recv(timeout=0.5)
        sub.send(PubAck(got.packet_id or 0))
        _open(gw, gated)
        ack = pub.recv()
        assert isinstance(ack, PubAck) and ack.packet_id == 7
    finally:
        _open(gw, gated)
        pub.close()
        sub.close()


def test_a_qos2_delivery_and_the_pubrec_wait_for_the_commit(
    gateway_factory: GatewayFactory,
) -> None:
    gw, port = gateway_factory()
    sub = _subscriber(port, 2)
    pub = _client(port, "early-pub2", clean=True)
    gated = _gate(gw)
    try:
        pub.send(Publish("early/t", b"on", qos=2, packet_id=9))
        with pytest.raises(TimeoutError):
            sub.recv(timeout=0.5)
        with pytest.raises(TimeoutError):
            pub.recv(timeout=0.1)
        _open(gw, gated)
        rec = pub.recv()
        assert isinstance(rec, PubRec) and rec.packet_id == 9
        got = sub.recv()
        assert isinstance(got, Publish) and got.qos == 2 and got.payload == b"on"
    finally:
        _open(gw, gated)
        pub.close()
        sub.close()


def test_the_split_keeps_what_the_origin_is_sent_and_non_deliveries() -> None:
    to_other_q1 = Send(2, Publish("t", b"x", qos=1, packet_id=1))
    to_other_q0 = Send(3, Publish("t", b"x"))
    to_other_q2 = Send(2, Publish("t", b"x", qos=2, packet_id=2))
    to_origin = Send(1, Publish("t", b"x", qos=1, packet_id=3))
    ack = Send(1, PubAck(5))
    other_ack = Send(2, PubAck(6))
    close = Close(2)
    keep = SetKeepAlive(1, 30)
    actions = [to_other_q1, ack, to_other_q2, to_origin, to_other_q0, other_ack, close, keep]
    early, held = early_deliveries(list(actions), origin_id=1)
    assert early == [to_other_q1, to_other_q0]
    assert held == [ack, to_other_q2, to_origin, other_ack, close, keep]


class FailingStore(GatedStore):
    """Every commit that must be durable fails (as a full or broken disk would)."""

    def submit(self, ops: Sequence[StoreOp], *, urgent: bool = True) -> asyncio.Future[None]:
        done = self._inner.submit(ops, urgent=urgent)
        if not urgent:
            return done  # type: ignore[no-any-return]
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        failed.set_exception(StoreError("disk on fire"))
        return failed


def test_a_failed_commit_acknowledges_nothing_and_cuts_the_publisher_off(
    gateway_factory: GatewayFactory,
) -> None:
    gw, port = gateway_factory()
    sub = _subscriber(port, 1)
    pub = _client(port, "early-pub3", clean=True)
    other = _client(port, "early-bystander", clean=True)
    server = gw.gateway.server
    failing = _gate(gw, FailingStore)
    try:
        pub.send(Publish("early/t", b"lost?", qos=1, packet_id=3))
        assert pub.closed_by_peer(), "the publisher must be cut off, never acknowledged"
        got = sub.recv()  # already written before the commit: at-least-once allows it
        assert isinstance(got, Publish) and got.payload == b"lost?"
        other.send(PingReq())
        assert isinstance(other.recv(), PingResp)  # nobody else is disturbed
    finally:
        gw.call(lambda: setattr(server, "store", failing._inner))
        for c in (pub, sub, other):
            c.close()
