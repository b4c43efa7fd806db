"""Black-box tests over real sockets with paho-mqtt (3.1.1 and 5.0) as the peer."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import ThreadGateway, wait_for
from paho_helpers import V5, V311, Client

GatewayFactory = Callable[..., tuple[ThreadGateway, int]]


@pytest.mark.parametrize("version", [V311, V5])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_subscribe_roundtrip(
    gateway: tuple[ThreadGateway, int], version: int, qos: int
) -> None:
    _, port = gateway
    sub = Client(port, "sub", version=version)
    assert sub.subscribe("home/+/temp", qos=2) == [2]
    pub = Client(port, "pub", version=version)
    pub.publish("home/kitchen/temp", b"21.5", qos=qos)
    msg = sub.get()
    assert (msg.topic, msg.payload, msg.qos, msg.retain) == (
        "home/kitchen/temp",
        b"21.5",
        qos,
        False,
    )
    pub.disconnect()
    sub.disconnect()


@pytest.mark.parametrize("version", [V311, V5])
def test_persistent_session_queues_while_offline(
    gateway: tuple[ThreadGateway, int], version: int
) -> None:
    _, port = gateway
    expiry = 3600 if version == V5 else None
    sub = Client(port, "sleepy", version=version, clean=False, session_expiry=expiry)
    sub.subscribe("cmd/#", qos=1)
    sub.disconnect()
    pub = Client(port, "pub", version=version)
    for i in range(20):
        pub.publish(f"cmd/{i}", f"m{i}".encode(), qos=1)
    again = Client(
        port, "sleepy", version=version, clean=False, session_expiry=expiry, connect=False
    )
    flags, _, _ = again.connect()
    assert flags.session_present
    got = [again.get().payload for _ in range(20)]
    assert got == [f"m{i}".encode() for i in range(20)]
    again.disconnect()
    pub.disconnect()


@pytest.mark.parametrize("version", [V311, V5])
def test_clean_session_discards_state(gateway: tuple[ThreadGateway, int], version: int) -> None:
    _, port = gateway
    expiry = 3600 if version == V5 else None
    sub = Client(port, "c1", version=version, clean=False, session_expiry=expiry)
    sub.subscribe("x", qos=1)
    sub.disconnect()
    pub = Client(port, "pub", version=version)
    pub.publish("x", b"queued", qos=1)
    fresh = Client(port, "c1", version=version, clean=True, connect=False)
    flags, _, _ = fresh.connect()
    assert not flags.session_present
    assert fresh.drain() == []
    pub.publish("x", b"after", qos=1)
    assert fresh.drain() == []  # the subscription went with the old session
    fresh.disconnect()
    pub.disconnect()


@pytest.mark.parametrize("version", [V311, V5])
def test_retained_set_replace_clear(gateway: tuple[ThreadGateway, int], version: int) -> None:
    _, port = gateway
    pub = Client(port, "pub", version=version)
    pub.publish("state/a", b"one", qos=1, retain=True)
    pub.publish("state/a", b"two", qos=1, retain=True)
    pub.publish("state/b", b"bee", qos=1, retain=True)
    sub = Client(port, "sub", version=version)
    sub.subscribe("state/#", qos=1)
    got = sorted((m.topic, m.payload, m.retain) for m in (sub.get(), sub.get()))
    assert got == [("state/a", b"two", True), ("state/b", b"bee", True)]
    pub.publish("state/a", b"", qos=1, retain=True)
    sub.get()  # the clearing publish itself is delivered live
    late = Client(port, "late", version=version)
    late.subscribe("state/#", qos=1)
    assert [(m.topic, m.payload) for m in late.drain()] == [("state/b", b"bee")]
    for c in (pub, sub, late):
        c.disconnect()


@pytest.mark.parametrize("version", [V311, V5])
def test_will_on_lost_link_not_on_disconnect(
    gateway: tuple[ThreadGateway, int], version: int
) -> None:
    _, port = gateway
    watcher = Client(port, "watcher", version=version)
    watcher.subscribe("dev/+/availability", qos=1)
    polite = Client(
        port, "polite", version=version, will=("dev/polite/availability", b"offline", 1, True)
    )
    polite.disconnect()
    rude = Client(
        port, "rude", version=version, will=("dev/rude/availability", b"offline", 1, True)
    )
    rude.drop()
    msg = watcher.get()
    assert (msg.topic, msg.payload) == ("dev/rude/availability", b"offline")
    assert watcher.drain() == []
    watcher.disconnect()


def test_takeover_closes_old_connection_v5(gateway: tuple[ThreadGateway, int]) -> None:
    _, port = gateway
    first = Client(port, "same", version=V5)
    second = Client(port, "same", version=V5)
    rc = first.disconnects.get(timeout=5)
    assert int(rc.value if hasattr(rc, "value") else rc) == 0x8E
    second.subscribe("t", qos=0)
    second.disconnect()
    first.c.loop_stop()


def test_takeover_v311(gateway: tuple[ThreadGateway, int]) -> None:
    _, port = gateway
    first = Client(port, "same311")
    first.c.reconnect_delay_set(60, 60)  # don't let paho fight back for the client id
    second = Client(port, "same311")
    first.disconnects.get(timeout=5)
    second.subscribe("t", qos=1)
    pub = Client(port, "p")
    pub.publish("t", b"x", qos=1)
    assert second.get().payload == b"x"
    first.c.loop_stop()
    for c in (second, pub):
        c.disconnect()


@pytest.mark.parametrize("version", [V311, V5])
def test_acl_refuses_subscription(gateway_factory: GatewayFactory, version: int) -> None:
    _, port = gateway_factory(
        {
            "auth": {
                "acl": {
                    "default": "allow",
                    "rules": [
                        {
                            "user": "*",
                            "topic": "secret/#",
                            "actions": ["subscribe", "read"],
                            "allow": False,
                        }
                    ],
                }
            }
        }
    )
    c = Client(port, "nosy", version=version)
    rcs = c.subscribe("secret/#", qos=1)
    code = rcs[0] if version == V311 else rcs[0].value
    assert code == (0x80 if version == V311 else 0x87)
    ok = c.subscribe("public/#", qos=1)
    assert (ok[0] if version == V311 else ok[0].value) == 1
    c.disconnect()


def test_queue_limit_drop_oldest(gateway_factory: GatewayFactory) -> None:
    gw, port = gateway_factory(
        {"limits": {"queue": {"max_messages": 5, "overflow": "drop-oldest"}}}
    )
    sub = Client(port, "small", clean=False)
    sub.subscribe("q", qos=1)
    sub.disconnect()
    pub = Client(port, "pub")
    for i in range(12):
        pub.publish("q", str(i).encode(), qos=1)
    again = Client(port, "small", clean=False)
    assert [m.payload for m in again.drain(0.5)] == [b"7", b"8", b"9", b"10", b"11"]
    dropped = gw.call(lambda: gw.gateway.broker.stats.dropped_queue_full)
    assert dropped == 7
    again.disconnect()
    pub.disconnect()


def test_queue_limit_reject_new_tells_v5_publisher(gateway_factory: GatewayFactory) -> None:
    _, port = gateway_factory({"limits": {"queue": {"max_messages": 3, "overflow": "reject-new"}}})
    sub = Client(port, "small", version=V5, clean=False, session_expiry=600)
    sub.subscribe("q", qos=1)
    sub.disconnect()
    pub = Client(port, "pub", version=V5)
    codes = []
    for i in range(5):
        info = pub.publish("q", str(i).encode(), qos=1)
        assert wait_for(lambda info=info: info.mid in pub.pubacks)
        codes.append(int(pub.pubacks[info.mid].value))
    assert codes[:3] == [0, 0, 0]
    assert codes[3:] == [0x97, 0x97]
    again = Client(port, "small", version=V5, clean=False, session_expiry=600)
    assert [m.payload for m in again.drain(0.5)] == [b"0", b"1", b"2"]
    again.disconnect()
    pub.disconnect()


@pytest.mark.parametrize("version", [V311, V5])
def test_persistent_session_survives_restart(gateway_factory: GatewayFactory, version: int) -> None:
    gw, port = gateway_factory()
    expiry = 3600 if version == V5 else None
    sub = Client(port, "durable", version=version, clean=False, session_expiry=expiry)
    sub.subscribe("d/#", qos=2)
    sub.disconnect()
    pub = Client(port, "pub", version=version)
    for i in range(50):
        pub.publish(f"d/{i % 3}", f"{i}".encode(), qos=1 + i % 2)
    pub.publish("d/retained", b"kept", qos=1, retain=True)
    pub.disconnect()
    gw.stop()
    gw.start()
    again = Client(
        port, "durable", version=version, clean=False, session_expiry=expiry, connect=False
    )
    flags, _, _ = again.connect()
    assert flags.session_present
    got = [again.get() for _ in range(51)]
    # paho hands a QoS 2 message to the application only at PUBREL, so order holds per QoS.
    for qos in (1, 2):
        stream = [int(m.payload) for m in got if m.qos == qos and m.topic != "d/retained"]
        assert stream == [i for i in range(50) if 1 + i % 2 == qos]
    assert [m.payload for m in got if m.topic == "d/retained"] == [b"kept"]
    late = Client(port, "late", version=version)
    late.subscribe("d/retained", qos=1)
    assert late.get().payload == b"kept"
    for c in (again, late):
        c.disconnect()


def test_no_local_and_retain_as_published_v5(gateway: tuple[ThreadGateway, int]) -> None:
    _, port = gateway
    c = Client(port, "self", version=V5)
    c.subscribe("loop", qos=1, noLocal=True)
    c.subscribe("rap", qos=1, retainAsPublished=True)
    other = Client(port, "other", version=V5)
    other.subscribe("loop", qos=1)
    c.publish("loop", b"me", qos=1)
    assert other.get().payload == b"me"
    assert c.drain() == []
    c.publish("rap", b"r", qos=1, retain=True)
    msg = c.get()
    assert msg.retain is True
    other.disconnect()
    c.disconnect()


def test_shared_subscription_round_robin_v5(gateway: tuple[ThreadGateway, int]) -> None:
    _, port = gateway
    a = Client(port, "a", version=V5)
    b = Client(port, "b", version=V5)
    a.subscribe("$share/workers/jobs/#", qos=1)
    b.subscribe("$share/workers/jobs/#", qos=1)
    pub = Client(port, "pub", version=V5)
    for i in range(10):
        pub.publish("jobs/x", str(i).encode(), qos=1)
    got_a = [m.payload for m in a.drain()]
    got_b = [m.payload for m in b.drain()]
    assert sorted(got_a + got_b, key=int) == [str(i).encode() for i in range(10)]
    assert got_a and got_b
    for c in (a, b, pub):
        c.disconnect()


def test_message_expiry_v5(gateway: tuple[ThreadGateway, int]) -> None:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    _, port = gateway
    sub = Client(port, "exp", version=V5, clean=False, session_expiry=600)
    sub.subscribe("e", qos=1)
    sub.disconnect()
    pub = Client(port, "pub", version=V5)
    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = 1
    pub.c.publish("e", b"short", qos=1, properties=props).wait_for_publish(5)
    props2 = Properties(PacketTypes.PUBLISH)
    props2.MessageExpiryInterval = 600
    pub.c.publish("e", b"long", qos=1, properties=props2).wait_for_publish(5)
    import time

    time.sleep(2.2)
    again = Client(port, "exp", version=V5, clean=False, session_expiry=600)
    msgs = again.drain()
    assert [m.payload for m in msgs] == [b"long"]
    remaining = msgs[0].properties.MessageExpiryInterval
    assert 590 <= remaining <= 598
    again.disconnect()
    pub.disconnect()


def test_bad_input_does_not_disturb_others(gateway: tuple[ThreadGateway, int]) -> None:
    import socket

    _, port = gateway
    sub = Client(port, "calm", version=V5)
    sub.subscribe("ok", qos=1)
    for junk in (
        b"\x10\xff\xff\xff\xff\x7f",
        b"\x30\x02\x00",
        b"GET / HTTP/1.1\r\n\r\n",
        b"\xf0\x00",
    ):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(junk)
            s.settimeout(3)
            try:
                while s.recv(100):
                    pass
            except (ConnectionResetError, TimeoutError):
                pass
    pub = Client(port, "pub", version=V5)
    pub.publish("ok", b"still here", qos=1)
    assert sub.get().payload == b"still here"
    for c in (sub, pub):
        c.disconnect()


def test_sys_topics_report_broker_server_and_store(gateway_factory: GatewayFactory) -> None:
    import socket

    _, port = gateway_factory({"sys_interval": 1})
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"\x10\x02\x00\x00")  # a CONNECT cut short: malformed
        s.settimeout(3)
        s.recv(10)
    sub = Client(port, "sys")
    sub.subscribe("$SYS/broker/#", qos=0)
    pub = Client(port, "pub", clean=False)
    pub.subscribe("keep", qos=1)
    pub.publish("keep", b"x", qos=1)
    seen: dict[str, bytes] = {}

    def complete() -> bool:
        for m in sub.drain(0.2):
            seen[m.topic] = m.payload
        return (
            # Our two clients, plus the gateway's own in-process sessions (bridge state).
            int(seen.get("$SYS/broker/clients/connected", b"0")) >= 2
            and int(seen.get("$SYS/broker/store/commits", b"0")) > 0
        )

    assert wait_for(complete, 5, 0.1), seen
    assert seen["$SYS/broker/connections/malformed_packets"] == b"1"
    assert "$SYS/broker/publish/messages/dropped/queue_full" in seen
    sub.disconnect()
    pub.disconnect()
