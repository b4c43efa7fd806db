"""The upstream bridge of a gateway run as users run it (a subprocess), against a real
Mosquitto: kill -9 mid-stream, the notification topic's will, the state topic over a life of
crashes and outages, and memory that does not grow with the backlog."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, wait_for
from mosquitto import Mosquitto, available
from paho_helpers import V5, Client
from raw_client import RawClient
from upstream_helpers import start_process_gateway, upstream

from gateway.mqtt.packets import PROTOCOL_V5, Connect, PubAck, Publish
from gateway.upstream.settings import TopicRule, UpstreamQueue

pytestmark = pytest.mark.skipif(not available(), reason="needs Debian's mosquitto")


def local_status(port: int, timeout: float = 5.0) -> dict[str, Any]:
    watcher = Client(port, "status-reader")
    try:
        watcher.subscribe("gw/bridge/upstream/cloud", 0)
        return dict(json.loads(watcher.get(timeout=timeout).payload))
    finally:
        watcher.disconnect()


def wait_connected(port: int, timeout: float = 15.0) -> bool:
    return wait_for(lambda: local_status(port)["state"] == "connected", timeout, 0.2)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Publisher:
    """A paho publisher in the background that remembers what the gateway acknowledged."""

    def __init__(self, port: int, qos: int, count: int) -> None:
        self.client = Client(port, "publisher", connect=False)
        self.client.c.max_inflight_messages_set(100)
        self.client.connect()
        self.qos = qos
        self.count = count
        self.sent: dict[int, int] = {}  # paho mid -> sequence number
        # Filled by paho's thread; may hold a mid before _run recorded it (no shared lock:
        # paho calls on_publish with its own lock held, publish() takes that lock too).
        self.acked_mids: set[int] = set()
        self.client.c.on_publish = lambda c, u, mid, rc, props: self.acked_mids.add(mid)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for seq in range(self.count):
            info = self.client.c.publish(f"gw/seq/{seq % 3}", str(seq), qos=self.qos)
            self.sent[info.mid] = seq
            if info.rc != 0:
                return  # the gateway is gone

    def acked_count(self) -> int:
        return len(self.acked_mids)

    @property
    def acked(self) -> set[int]:
        sent = dict(self.sent)
        return {sent[mid] for mid in list(self.acked_mids) if mid in sent}


@pytest.mark.parametrize("qos", [1, 2])
def test_kill_9_mid_stream_every_acknowledged_message_arrives_upstream(
    tmp_path: Path, qos: int
) -> None:
    up = Mosquitto(tmp_path).start()
    cloud = Client(up.port, "cloud-app", clean=False)
    cloud.subscribe("site1/gw/seq/#", qos)
    rules = [TopicRule("seq/#", "out", qos, "gw/", "site1/gw/")]
    port = free_port()
    gw = start_process_gateway(tmp_path, port, [upstream(up.port, topics=rules)])
    try:
        assert wait_connected(port)
        publisher = Publisher(port, qos, 20_000)
        publisher.thread.start()
        assert wait_for(lambda: publisher.acked_count() >= 3000, 30)
        gw.kill()  # mid-stream: the publisher is still going and the bridge forwarding
        publisher.client.drop()
        publisher.thread.join(10)
        acked = set(publisher.acked)
        gw.start()
        received: list[int] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not acked <= set(received):
            try:
                received.append(int(cloud.get(timeout=1).payload))
            except Exception:
                continue
        received.extend(int(m.payload) for m in cloud.drain(1.0))
        missing = acked - set(received)
        duplicates = len(received) - len(set(received))
        print(
            f"QoS {qos}: {len(acked)} acknowledged before kill -9, {len(set(received))} "
            f"arrived upstream, {duplicates} duplicates"
        )
        assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {sorted(missing)[:5]}"
        if qos == 2:
            assert duplicates == 0
        status = local_status(port)
        assert status["state"] == "connected"
    finally:
        gw.stop_if_running()
        cloud.drop()
        up.kill()


def test_notification_topic_and_state_topic_over_crashes_and_outages(tmp_path: Path) -> None:
    up = Mosquitto(tmp_path).start()
    cloud = Client(up.port, "cloud-watch")
    cloud.subscribe("edge/cloud/state", 1)
    port = free_port()
    gw = start_process_gateway(tmp_path, port, [upstream(up.port)])
    try:
        assert cloud.get(timeout=10).payload == b"online"
        gw.kill()
        assert cloud.get(timeout=10).payload == b"offline"  # the will
        gw.start()
        assert cloud.get(timeout=10).payload == b"online"
        assert gw.terminate() == 0
        assert cloud.get(timeout=10).payload == b"offline"  # said before DISCONNECT
        cloud.drop()

        gw.start()
        assert wait_connected(port)
        watcher = Client(port, "state-watch")
        watcher.subscribe("gw/bridge/upstream/cloud", 0)
        first = json.loads(watcher.get(timeout=5).payload)
        assert first["state"] == "connected"
        assert first["client_id"] == "edge-cloud"
        up.kill()
        states = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            state = json.loads(watcher.get(timeout=10).payload)
            states.append(state)
            if state["state"] == "disconnected":
                break
        assert states[-1]["state"] == "disconnected"
        assert states[-1]["last_error"]
        assert states[-1]["since"] >= first["since"]
        up.start()
        while True:
            state = json.loads(watcher.get(timeout=15).payload)
            if state["state"] == "connected":
                break
        watcher.disconnect()
    finally:
        gw.stop_if_running()
        up.kill()


def flood(port: int, count: int, window: int = 500) -> int:
    """QoS 1 messages of 64 bytes as fast as the gateway takes them; the number acked."""
    client = RawClient(port, PROTOCOL_V5, timeout=30)
    client.connect(Connect("flooder", protocol_version=PROTOCOL_V5))
    payload = b"x" * 64
    acked = sent = 0
    while acked < count:
        batch = []
        while sent < count and sent - acked < window:
            batch.append(Publish("gw/meter/state", payload, 1, False, False, sent % 65000 + 1))
            sent += 1
        if batch:
            client.send(*batch)
        if isinstance(client.recv(30), PubAck):
            acked += 1
    client.close()
    return acked


def test_memory_does_not_grow_with_the_backlog(tmp_path: Path) -> None:
    """The upstream freezes while the bridge is connected to it: the bridge holds only its
    window, the broker keeps the queue at its limit (drop-oldest), and the process does not
    grow with what keeps arriving."""
    up = Mosquitto(tmp_path).start()
    port = free_port()
    config = upstream(
        up.port,
        keepalive=600,  # stay connected to the frozen broker for the whole test
        topics=[TopicRule("meter/#", "out", 1, "gw/", "site1/gw/")],
        queue=UpstreamQueue(max_messages=5000),
    )
    gw = start_process_gateway(tmp_path, port, [config])
    try:
        assert wait_connected(port)
        up.freeze()
        flood(port, 10_000)
        assert wait_for(lambda: local_status(port)["queued"] >= 5000, 10)
        assert gw.proc is not None
        before = rss_kb(gw.proc.pid)
        flood(port, 40_000)
        after = rss_kb(gw.proc.pid)
        # (The state topic is refreshed once a second.)
        assert wait_for(lambda: local_status(port)["dropped"] >= 40_000, 10)
        status = local_status(port)
        print(f"RSS {before} kB with 5,000 queued, {after} kB after 40,000 more; {status}")
        assert status["queued"] <= 5000 + 100  # the limit, plus the bridge's window
        # 40,000 queued messages would take well over 10 MB (the broker keeps a queued
        # message's entry in memory): the limit is what keeps the process where it is.
        assert after - before < 8 * 1024, (before, after)
    finally:
        up.thaw()
        gw.stop_if_running()
        up.kill()


def test_a_refused_connect_keeps_the_gateway_serving_and_says_why(tmp_path: Path) -> None:
    """A refused CONNECT (bad password) keeps the gateway running and says why."""
    up = Mosquitto(tmp_path, allow_anonymous=False).start()
    port = free_port()
    gw = start_process_gateway(
        tmp_path, port, [upstream(up.port, username="nobody", password=b"x")]
    )
    try:
        assert wait_for(lambda: bool(local_status(port)["last_error"]), 10)
        status = local_status(port)
        assert status["state"] != "connected"
        assert "CONNECT refused" in status["last_error"]
        local = Client(port, "still-serving", version=V5)
        local.disconnect()
    finally:
        gw.stop_if_running()
        up.kill()
