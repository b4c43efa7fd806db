"""Broker core alone (no sockets, no codec, no store): how many PUBLISH packets per second
``Broker.handle()`` routes. This is the upper bound the asyncio shell can reach.

    python bench/bench_broker_core.py [--messages N]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devices.ble.eq3 import COMMAND_SCHEMA
from gateway.broker.core import Broker
from gateway.broker.effects import ConnectionInfo, Identity
from gateway.broker.settings import BrokerSettings, QueueLimits
from gateway.compiled import describe as describe_build
from gateway.mqtt.packets import (
    Connect,
    Properties,
    PubAck,
    Publish,
    Subscribe,
    Subscription,
)

NOW = 1_700_000_000.0
EQ3_SCHEMA = COMMAND_SCHEMA.text


def make_broker(max_inflight: int = 65535, queue: int = 0) -> Broker:
    settings = BrokerSettings(
        max_inflight_out=max_inflight,
        sys_interval=0,
        default_queue=QueueLimits(max_messages=queue),
    )
    return Broker(settings)


def connect(b: Broker, conn_id: int, client_id: str, clean: bool = True, version: int = 4) -> None:
    b.connection_opened(ConnectionInfo(conn_id, "bench", "in-process"), NOW)
    b.connect(conn_id, Connect(client_id, version, clean_start=clean), Identity(ok=True), NOW)
    b.take_effects()


def timed(name: str, n: int, fn: Callable[[], None]) -> None:
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    print(f"{name:<52} {n / elapsed:>12,.0f} msgs/s  ({elapsed * 1e6 / n:5.2f} µs/msg)")


def bench_qos0_fan_in(n: int, version: int) -> None:
    b = make_broker()
    connect(b, 1, "sub", version=version)
    b.handle(1, Subscribe(1, (Subscription("bench/+/data", 0),)), NOW)
    for i in range(10):
        connect(b, 100 + i, f"pub{i}", version=version)
    b.take_effects()
    packets = [Publish(f"bench/{i}/data", b"x" * 64) for i in range(10)]

    def run() -> None:
        handle = b.handle
        take = b.take_effects
        for i in range(n):
            handle(100 + i % 10, packets[i % 10], NOW)
            if i % 64 == 63:
                take()
        take()

    timed(f"QoS 0 fan-in, 10 pubs -> 1 sub (v{version})", n, run)


def bench_qos1_fan_in(n: int, persistent: bool) -> None:
    b = make_broker(max_inflight=100)
    connect(b, 1, "sub", clean=not persistent)
    b.handle(1, Subscribe(1, (Subscription("bench/+/data", 1),)), NOW)
    for i in range(10):
        connect(b, 100 + i, f"pub{i}")
    b.take_effects()

    def run() -> None:
        handle = b.handle
        take = b.take_effects
        pid = 0
        for i in range(n):
            pid = pid % 65535 + 1
            handle(
                100 + i % 10, Publish(f"bench/{i % 10}/data", b"x" * 64, 1, False, False, pid), NOW
            )
            # The subscriber acknowledges what it got, as a fast client would.
            for action in take().actions:
                packet = getattr(action, "packet", None)
                if action.conn_id == 1 and isinstance(packet, Publish):
                    handle(1, PubAck(packet.packet_id or 0), NOW)
            take()

    kind = "persistent" if persistent else "clean"
    timed(f"QoS 1 fan-in incl. subscriber PUBACKs ({kind} sub)", n, run)


def bench_offline_enqueue(n: int) -> None:
    b = make_broker(queue=0)
    connect(b, 1, "sleepy", clean=False)
    b.handle(1, Subscribe(1, (Subscription("cmd/#", 1),)), NOW)
    b.connection_lost(1, NOW)
    connect(b, 2, "pub")
    b.take_effects()

    def run() -> None:
        handle = b.handle
        take = b.take_effects
        pid = 0
        for i in range(n):
            pid = pid % 65535 + 1
            handle(2, Publish("cmd/x", b"x" * 64, 1, False, False, pid), NOW)
            if i % 64 == 63:
                take()
        take()

    timed("offline enqueue, QoS 1, persistent session", n, run)

    def drain() -> None:
        connect(b, 3, "sleepy", clean=False)
        handle = b.handle
        take = b.take_effects
        got = 0
        while got < n:
            acks = []
            for action in take().actions:
                packet = getattr(action, "packet", None)
                if isinstance(packet, Publish):
                    acks.append(PubAck(packet.packet_id or 0))
            if not acks:
                break
            got += len(acks)
            for ack in acks:
                handle(3, ack, NOW)

    timed("offline drain (resume + PUBACKs), QoS 1", n, drain)


def bench_device_commands(n: int, schema: str | None, payload: bytes, label: str) -> None:
    """Commands to a sleeping device session with a queue policy (coalescing, result notices,
    pending list) as the device bridge sets it, with or without its command schema."""
    b = make_broker(queue=0)
    policy: list[tuple[str, str]] = [
        ("queue-coalesce", "json-keys"),
        ("queue-notify-topic", "gw/trv/result"),
        ("queue-pending-topic", "gw/trv/pending"),
    ]
    if schema is not None:
        policy.append(("queue-schema", schema))
    b.connection_opened(ConnectionInfo(1, "bench", "in-process"), NOW)
    connect_packet = Connect(
        "dev-trv",
        5,
        clean_start=False,
        properties=Properties(session_expiry_interval=3600, user_properties=tuple(policy)),
    )
    b.connect(1, connect_packet, Identity(ok=True, is_admin=True), NOW)
    b.handle(1, Subscribe(1, (Subscription("gw/trv/set", 1),)), NOW)
    b.connection_lost(1, NOW)
    connect(b, 2, "phone")
    b.take_effects()

    def run() -> None:
        handle = b.handle
        take = b.take_effects
        pid = 0
        for _ in range(n):
            pid = pid % 65535 + 1
            handle(2, Publish("gw/trv/set", payload, 1, False, False, pid), NOW)
            take()

    timed(label, n, run)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200_000)
    args = parser.parse_args()
    n = args.messages
    print(f"# gateway build: {describe_build()}")
    bench_qos0_fan_in(n, 4)
    bench_qos0_fan_in(n, 5)
    bench_qos1_fan_in(n // 2, persistent=False)
    bench_qos1_fan_in(n // 2, persistent=True)
    bench_offline_enqueue(n // 2)
    m = n // 10
    valid, invalid = b'{"target_temp": 21.5}', b'{"target_temp": 99}'
    bench_device_commands(m, None, valid, "device commands, coalesced, no schema")
    bench_device_commands(m, EQ3_SCHEMA, valid, "device commands, coalesced, schema: valid")
    bench_device_commands(m, EQ3_SCHEMA, invalid, "device commands, schema: rejected")


if __name__ == "__main__":
    main()
