"""The upstream bridge against a real Mosquitto started by each test on a free loopback port:
store-and-forward, the way in (commands from the cloud), outages, loops, several gateways,
queue limits, and what the state topic says meanwhile."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, wait_for
from mosquitto import Mosquitto, available
from paho_helpers import V5, V311, Client
from raw_client import RawClient
from upstream_helpers import UpstreamThreadGateway, start_thread_gateway, upstream

from gateway.mqtt.packets import PROTOCOL_V5, Connect, Properties, Publish, PubRec
from gateway.upstream.settings import TopicRule, UpstreamQueue

pytestmark = pytest.mark.skipif(not available(), reason="needs Debian's mosquitto")


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    """Gateways, clients and brokers to stop at the end, whatever happened."""
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        try:
            if isinstance(thing, UpstreamThreadGateway):
                thing.stop()
            elif isinstance(thing, Mosquitto):
                thing.kill()
            elif isinstance(thing, Client):
                thing.drop()
            elif isinstance(thing, socket.socket):
                thing.close()
        except Exception:
            pass


def mosquitto_pub(port: int, topic: str, payload: str, qos: int = 1) -> None:
    subprocess.run(
        ["mosquitto_pub", "-p", str(port), "-t", topic, "-m", payload, "-q", str(qos)],
        check=True,
        timeout=10,
    )


def collect(client: Client, count: int, timeout: float = 30.0, prefix: str = "") -> list[Any]:
    """Messages on topics starting with ``prefix`` until ``count`` arrived or time is up."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        try:
            m = client.get(timeout=max(0.05, deadline - time.monotonic()))
        except Exception:
            break
        if m.topic.startswith(prefix):
            got.append(m)
    return got


def publish_many(port: int, topics: list[str], count: int, qos: int = 1) -> None:
    pub = Client(port, "publisher")
    infos = [
        pub.publish(topics[i % len(topics)], str(i).encode(), qos, wait=False) for i in range(count)
    ]
    for info in infos:
        info.wait_for_publish(30)
    pub.disconnect()


def test_store_and_forward_upstream_down_at_start(tmp_path: Path, cleanup: list[Any]) -> None:
    """Upstream down at start, 2,000 QoS 1 published locally, upstream started: all 2,000
    arrive upstream, in order per topic."""
    up = Mosquitto(tmp_path, persistent=True).start()
    cleanup.append(up)
    # A persistent subscriber upstream, saved by mosquitto across its stop: it receives
    # whatever the bridge delivers, however soon after mosquitto's start that happens.
    sub = Client(up.port, "cloud-app", clean=False)
    sub.subscribe("site1/gw/#", 1)
    sub.disconnect()
    up.stop()

    port = free_port()
    gw = start_thread_gateway(tmp_path, port, [upstream(up.port)])
    cleanup.append(gw)
    assert wait_for(lambda: gw.status()["last_error"] is not None, 10)
    assert gw.status()["state"] != "connected"
    topics = [f"gw/dev{n}/state" for n in range(4)]
    publish_many(port, topics, 2000)
    # (and whatever else the gateway published under gw/: the rule is "#")
    assert wait_for(lambda: gw.status()["queued"] >= 2000, 10), gw.status()

    up.start()
    assert gw.wait_state("connected", timeout=15)
    sub = Client(up.port, "cloud-app", clean=False)
    cleanup.append(sub)
    got = collect(sub, 2000, prefix="site1/gw/dev")
    per_topic: dict[str, list[int]] = defaultdict(list)
    for m in got:
        per_topic[m.topic].append(int(m.payload))
    assert sum(len(v) for v in per_topic.values()) == 2000
    for n in range(4):
        assert per_topic[f"site1/gw/dev{n}/state"] == list(range(n, 2000, 4))
    assert wait_for(lambda: gw.status()["queued"] == 0, 10)
    status = gw.status()
    assert status["forwarded"] >= 2000 and status["dropped"] == 0


def test_commands_from_upstream_reach_the_local_topic(tmp_path: Path, cleanup: list[Any]) -> None:
    up = Mosquitto(tmp_path).start()
    cleanup.append(up)
    port = free_port()
    gw = start_thread_gateway(tmp_path, port, [upstream(up.port)])
    cleanup.append(gw)
    assert gw.wait_state("connected")
    local = Client(port, "local-app")
    cleanup.append(local)
    local.subscribe("gw/lamp/#", 1)
    mosquitto_pub(up.port, "site1/gw/lamp/set", '{"on": true}')
    m = local.get(timeout=10)
    assert (m.topic, m.payload) == ("gw/lamp/set", b'{"on": true}')
    # Not taken by the in rule ("+/set"): never comes down.
    mosquitto_pub(up.port, "site1/gw/lamp/other", "x")
    mosquitto_pub(up.port, "site1/gw/lamp/set", "2")
    m = local.get(timeout=10)
    assert (m.topic, m.payload) == ("gw/lamp/set", b"2")
    assert wait_for(lambda: gw.status()["received"] == 2, 5)


def test_a_cloud_command_reaches_a_sleeping_device_behind_a_gateway_that_was_offline(
    tmp_path: Path, cleanup: list[Any]
) -> None:
    """The headline: sent while the gateway is offline, it waits in our persistent session
    upstream; then in the device's own queue while the device sleeps; then it is delivered."""
    up = Mosquitto(tmp_path).start()
    cleanup.append(up)
    port = free_port()
    gw = start_thread_gateway(tmp_path, port, [upstream(up.port)])
    assert gw.wait_state("connected")
    # The thermostat's persistent session (as the device bridge makes it), asleep.
    device = Client(port, "thermostat-sim", version=V5, clean=False, session_expiry=3600)
    device.subscribe("gw/thermostat/set", 1)
    device.disconnect()
    gw.stop()

    mosquitto_pub(up.port, "site1/gw/thermostat/set", '{"target_temp": 22.5}')

    gw = start_thread_gateway(tmp_path, port, [upstream(up.port)])
    cleanup.append(gw)
    assert gw.wait_state("connected")
    assert wait_for(lambda: gw.status()["received"] == 1, 10), gw.status()
    device = Client(port, "thermostat-sim", version=V5, clean=False, session_expiry=3600)
    cleanup.append(device)
    m = device.get(timeout=10)
    assert (m.topic, json.loads(m.payload)) == ("gw/thermostat/set", {"target_temp": 22.5})


def test_upstream_outage_reconnects_and_delivers_what_waited(
    tmp_path: Path, cleanup: list[Any]
) -> None:
    up = Mosquitto(tmp_path, persistent=True).start()
    cleanup.append(up)
    sub = Client(up.port, "cloud-app", clean=False)
    sub.subscribe("site1/gw/#", 1)
    port = free_port()
    gw = start_thread_gateway(tmp_path, port, [upstream(up.port)])
    cleanup.append(gw)
    assert gw.wait_state("connected")
    sub.disconnect()
    up.stop()  # an outage; the sessions (ours and the app's) survive it upstream
    assert wait_for(lambda: gw.status()["state"] != "connected", 10)
    assert gw.status()["last_error"]
    publish_many(port, ["gw/meter/state"], 300)
    up.start()
    assert gw.wait_state("connected", timeout=15)
    sub = Client(up.port, "cloud-app", clean=False)
    cleanup.append(sub)
    got = collect(sub, 300, prefix="site1/gw/meter/")
    assert [int(m.payload) for m in got] == list(range(300))


def test_a_new_upstream_session_is_subscribed_again(tmp_path: Path, cleanup: list[Any]) -> None:
    """mosquitto killed without persistence comes back empty: the bridge sees "session not
    present" and subscribes again, so commands still come down."""
    up = Mosquitto(tmp_path).start()
    cleanup.append(up)
    port = free_port()
    gw = start_thread_gateway(tmp_path, port, [upstream(up.port)])
    cleanup.append(gw)
    assert gw.wait_state("connected")
    up.kill()
    assert wait_for(lambda: gw.status()["state"] != "connected", 10)
    up.start()
    assert gw.wait_state("connected", timeout=15)
    local = Client(port, "local-app")
    cleanup.append(local)
    local.subscribe("gw/+/set", 1)
    mosquitto_pub(up.port, "site1/gw/lamp/set", "after")
    assert local.get(timeout=10).payload == b"after"


def test_a_frozen_upstream_is_noticed_within_two_keepalives(
    tmp_path: Path, cleanup: list[Any]
) -> None:
    """SIGSTOP: the TCP connection stays open and our writes still succeed; only silence
    tells. Keep-alive 2 s: the state topic says so within about 4 s."""
    up = Mosquitto(tmp_path).start()
    cleanup.append(up)
    port = free_port()
    gw = start_thread_gateway(tmp_path, port, [upstream(up.port, keepalive=2)])
    cleanup.append(gw)
    assert gw.wait_state("connected")
    watcher = Client(port, "watcher")
    cleanup.append(watcher)
    watcher.subscribe("gw/bridge/upstream/cloud", 1)
    watcher.drain(0.3)
    up.freeze()
    frozen_at = time.monotonic()
    publish_many(port, ["gw/meter/state"], 10)  # writes that land in a socket buffer
    assert wait_for(lambda: gw.status()["state"] != "connected", 10)
    noticed = time.monotonic() - frozen_at
    assert noticed <= 2 * 2 + 1.5, noticed
    assert "nothing from the broker" in str(gw.status()["last_error"])
    states = [json.loads(m.payload) for m in watcher.drain(1.0)]
    assert any(s["state"] != "connected" and s["last_error"] for s in states), states
    up.thaw()
    assert gw.wait_state("connected", timeout=20)


def test_both_directions_with_mqtt5_do_not_loop(tmp_path: Path, cleanup: list[Any]) -> None:
    up = Mosquitto(tmp_path).start()
    cleanup.append(up)
    port = free_port()
    rules = (TopicRule("#", "both", 1, "gw/", "site1/gw/"),)
    gw = start_thread_gateway(tmp_path, port, [upstream(up.port, topics=rules)])
    cleanup.append(gw)
    assert gw.wait_state("connected")
    cloud = Client(up.port, "cloud-app")
    cleanup.append(cloud)
    cloud.subscribe("site1/gw/loop/#", 1)
    local = Client(port, "local-app")
    cleanup.append(local)
    local.subscribe("gw/loop/#", 1)
    local.publish("gw/loop/up", "once", 1)
    cloud.publish("site1/gw/loop/down", "once", 1)
    time.sleep(1.5)  # long enough for a loop to show itself several times over
    seen_up = [(m.topic, m.payload) for m in cloud.drain(0.5)]
    seen_local = [(m.topic, m.payload) for m in local.drain(0.5)]
    assert sorted(seen_up) == [("site1/gw/loop/down", b"once"), ("site1/gw/loop/up", b"once")]
    assert sorted(seen_local) == [("gw/loop/down", b"once"), ("gw/loop/up", b"once")]


def test_three_gateways_one_upstream_commands_reach_the_right_one(
    tmp_path: Path, cleanup: list[Any]
) -> None:
    up = Mosquitto(tmp_path).start()
    cleanup.append(up)
    cloud = Client(up.port, "cloud-app")
    cleanup.append(cloud)
    cloud.subscribe("+/gw/+/state", 1)
    locals_: list[Client] = []
    for n in (1, 2, 3):
        directory = tmp_path / f"gw{n}"
        directory.mkdir()
        rules = (
            TopicRule("+/state", "out", 1, "gw/", f"site{n}/gw/"),
            TopicRule("+/set", "in", 1, "gw/", f"site{n}/gw/"),
        )
        port = free_port()
        gw = start_thread_gateway(
            directory, port, [upstream(up.port, topics=rules, client_id=f"edge-site{n}")]
        )
        cleanup.append(gw)
        assert gw.wait_state("connected")
        client = Client(port, f"app{n}")
        cleanup.append(client)
        client.subscribe("gw/+/set", 1)
        client.publish("gw/lamp/state", f"from {n}", 1)
        locals_.append(client)
    states = {(m.topic, m.payload) for m in collect(cloud, 3, 10)}
    assert states == {(f"site{n}/gw/lamp/state", f"from {n}".encode()) for n in (1, 2, 3)}
    mosquitto_pub(up.port, "site2/gw/lamp/set", "for two")
    mosquitto_pub(up.port, "site3/gw/lamp/set", "for three")
    assert locals_[1].get(timeout=10).payload == b"for two"
    assert locals_[2].get(timeout=10).payload == b"for three"
    assert locals_[0].drain(0.5) == []
    assert [m.payload for m in locals_[1].drain(0.3)] == []


@pytest.mark.parametrize("overflow", ["drop-oldest", "reject-new"])
def test_queue_limits_apply_and_are_counted(
    tmp_path: Path, cleanup: list[Any], overflow: str
) -> None:
    up_port = free_port()  # nothing listens there yet: the upstream is down
    port = free_port()
    config = upstream(
        up_port,
        queue=UpstreamQueue(max_messages=50, overflow=overflow),  # type: ignore[arg-type]
    )
    gw = start_thread_gateway(tmp_path, port, [config], {"sys_interval": 1})
    cleanup.append(gw)
    assert wait_for(lambda: gw.status()["last_error"] is not None, 10)
    publisher = Client(port, "publisher", version=V5)
    cleanup.append(publisher)
    infos = [publisher.publish("gw/meter/state", str(i), 1, wait=False) for i in range(200)]
    for info in infos:
        info.wait_for_publish(10)
    assert wait_for(lambda: gw.status()["dropped"] == 150, 10), gw.status()
    assert gw.status()["queued"] == 50
    sys_watch = Client(port, "sys-watch")
    cleanup.append(sys_watch)
    sys_watch.subscribe("$SYS/broker/publish/messages/dropped/queue_full", 0)
    assert int(sys_watch.get(timeout=5).payload) >= 150
    # Per connection too, where a Mosquitto user looks for a bridge's state.
    sys_watch.subscribe("$SYS/broker/upstream/cloud/#", 0)
    figures: dict[str, bytes] = {}
    assert wait_for(
        lambda: (
            (figures.update({m.topic: m.payload for m in sys_watch.drain(0.2)}) or True)
            and {"dropped", "queued", "state"} <= {t.rsplit("/", 1)[1] for t in figures}
        ),
        5,
    ), figures
    # (the gateway's own state messages under gw/ go up too, and overflow as well)
    assert int(figures["$SYS/broker/upstream/cloud/dropped"]) >= 150
    assert figures["$SYS/broker/upstream/cloud/queued"] == b"50"
    assert figures["$SYS/broker/upstream/cloud/state"] in (b"connecting", b"disconnected")
    if overflow == "reject-new":  # an MQTT 5 publisher is told
        assert publisher.pubacks[infos[-1].mid] == 0x97

    sub_up = Mosquitto(tmp_path, up_port, persistent=True, name="up").start()
    cleanup.append(sub_up)
    sub = Client(up_port, "cloud-app")
    cleanup.append(sub)
    sub.subscribe("site1/gw/meter/#", 1)
    got = [int(m.payload) for m in collect(sub, 50, 15)]
    expected = list(range(150, 200)) if overflow == "drop-oldest" else list(range(50))
    # The bridge may have connected before this subscriber: what it saw is a tail of them.
    assert got == expected[len(expected) - len(got) :]
    assert wait_for(lambda: gw.status()["queued"] == 0, 10)


def test_network_clients_cannot_take_the_bridges_local_session(
    tmp_path: Path, cleanup: list[Any]
) -> None:
    up = Mosquitto(tmp_path).start()
    cleanup.append(up)
    port = free_port()
    gw = start_thread_gateway(tmp_path, port, [upstream(up.port)])
    cleanup.append(gw)
    assert gw.wait_state("connected")
    intruder = Client(port, "edge-gateway-upstream-cloud", version=V5, connect=False)
    _, reason, _ = intruder.connect()
    assert reason == 0x85  # client identifier not valid: reserved for the gateway
    intruder.disconnect()
    old = Client(port, "edge-gateway-upstream-cloud", version=V311, connect=False)
    _, rc, _ = old.connect()
    assert rc != 0
    old.disconnect()
    assert gw.status()["state"] == "connected"


def test_upstream_cannot_publish_on_the_gateways_own_topics(
    tmp_path: Path, cleanup: list[Any]
) -> None:
    """Even with an in rule for everything, the admin API and the bridge's state topics
    cannot be reached from upstream (an upstream user is not a local admin)."""
    up = Mosquitto(tmp_path).start()
    cleanup.append(up)
    port = free_port()
    rules = (TopicRule("#", "in", 1, "gw/", "site1/gw/"),)
    gw = start_thread_gateway(tmp_path, port, [upstream(up.port, topics=rules)])
    cleanup.append(gw)
    assert gw.wait_state("connected")
    admin_watch = Client(port, "watch")
    cleanup.append(admin_watch)
    admin_watch.subscribe("gw/bridge/request/#", 1)
    admin_watch.subscribe("gw/ok/#", 1)
    mosquitto_pub(up.port, "site1/gw/bridge/request/kick", '{"client_id": "watch"}')
    mosquitto_pub(up.port, "site1/gw/bridge/upstream/cloud", '{"state": "fake"}')
    mosquitto_pub(up.port, "site1/gw/ok/set", "fine")
    got = [(m.topic, m.payload) for m in collect(admin_watch, 1, 10, prefix="gw/ok/")]
    assert got == [("gw/ok/set", b"fine")]
    assert gw.status()["state"] == "connected"
    assert admin_watch.drain(0.3) == []
    assert gw.status()["state"] == "connected"


def test_oversized_upstream_message_is_dropped_and_the_link_stays(
    tmp_path: Path, cleanup: list[Any]
) -> None:
    up = Mosquitto(tmp_path).start()
    cleanup.append(up)
    port = free_port()
    gw = start_thread_gateway(
        tmp_path, port, [upstream(up.port)], {"limits": {"max_packet_size": 4096}}
    )
    cleanup.append(gw)
    assert gw.wait_state("connected")
    local = Client(port, "local-app")
    cleanup.append(local)
    local.subscribe("gw/+/set", 1)
    mosquitto_pub(up.port, "site1/gw/big/set", "x" * 10_000)
    mosquitto_pub(up.port, "site1/gw/small/set", "ok")
    m = local.get(timeout=10)
    assert (m.topic, m.payload) == ("gw/small/set", b"ok")
    assert gw.status()["state"] == "connected"


def test_garbage_from_the_upstream_drops_the_link_not_the_gateway(
    tmp_path: Path, cleanup: list[Any]
) -> None:
    """A "broker" that accepts the CONNECT and then sends a malformed packet."""
    server = socket.create_server(("127.0.0.1", 0))
    cleanup.append(server)
    served = threading.Event()

    def serve() -> None:
        while not served.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)  # the CONNECT
                # CONNACK (MQTT 5, success) and, in the same segment, a packet of type 0
                # (reserved): the link fails while the bridge is still setting up.
                conn.sendall(b"\x20\x03\x00\x00\x00" + b"\x00\x00")
                served.set()
                time.sleep(0.5)

    threading.Thread(target=serve, daemon=True).start()
    port = free_port()
    gw = start_thread_gateway(tmp_path, port, [upstream(server.getsockname()[1])])
    cleanup.append(gw)
    assert served.wait(10)
    assert wait_for(lambda: "bad packet" in str(gw.status()["last_error"]), 10), gw.status()
    Client(port, "still-here").disconnect()


def test_a_new_local_session_releases_what_the_upstream_kept_from_the_old_one(
    tmp_path: Path, cleanup: list[Any]
) -> None:
    """The gateway's store was lost (or its bridge session deleted) but the upstream kept our
    session, with 20 QoS 2 messages awaiting a PUBREL nobody will send: they fill its receive
    maximum, and a new message reusing one of their packet ids would be taken for a resend.
    The bridge releases them before it forwards anything, and new messages arrive."""
    up = Mosquitto(tmp_path).start()
    cleanup.append(up)
    old = RawClient(up.port, PROTOCOL_V5)
    old.connect(
        Connect(
            "edge-cloud",
            protocol_version=PROTOCOL_V5,
            clean_start=False,
            properties=Properties(session_expiry_interval=3600),
        )
    )
    # Packet ids a fresh local session does not reach soon.
    orphans = range(1001, 1021)
    old.send(*(Publish("site1/gw/old/x", b"old", 2, False, False, pid) for pid in orphans))
    for _ in range(20):
        assert isinstance(old.recv(), PubRec)
    old.close()
    cloud = Client(up.port, "cloud-app")
    cleanup.append(cloud)
    cloud.subscribe("site1/gw/new/#", 2)
    port = free_port()
    rules = (TopicRule("new/#", "out", 2, "gw/", "site1/gw/"),)
    gw = start_thread_gateway(tmp_path, port, [upstream(up.port, topics=rules)])
    cleanup.append(gw)
    assert gw.wait_state("connected")
    local = Client(port, "local-app")
    cleanup.append(local)
    for n in range(30):
        local.publish("gw/new/x", str(n), 2, wait=False)
    got = [int(m.payload) for m in collect(cloud, 30, 15)]
    assert got == list(range(30))
    assert gw.status()["dropped"] == 0
