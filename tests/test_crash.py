"""Crash safety: kill -9 the gateway process mid-stream and count what survived (DESIGN §4)."""

from __future__ import annotations

import random
import socket
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from conftest import ProcessGateway, free_port, wait_for, write_config
from paho.mqtt.enums import CallbackAPIVersion
from paho_helpers import Client

from gateway.mqtt.codec import StreamDecoder, encode
from gateway.mqtt.packets import PROTOCOL_V311, ConnAck, Connect, PubComp, Publish, PubRec, PubRel

N = 10_000


class PahoQos1Publisher:
    """paho-mqtt publishing N QoS 1 messages; paho reconnects and resends by itself."""

    def __init__(self, port: int) -> None:
        self.acked: set[int] = set()
        self._mid_to_index: dict[int, int] = {}
        self._lock = threading.Lock()
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id="pub-q1", clean_session=False)
        c.max_inflight_messages_set(100)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(0.1, 0.5)
        c.on_publish = self._on_publish
        self.client = c
        self.port = port

    def _on_publish(self, c: paho.Client, u: object, mid: int, rc: object, p: object) -> None:
        with self._lock:
            if mid in self._mid_to_index:
                self.acked.add(self._mid_to_index[mid])

    def start(self) -> None:
        self.client.connect("127.0.0.1", self.port, keepalive=5)
        self.client.loop_start()
        for i in range(N):
            info = self.client.publish("crash/x", str(i).encode(), qos=1)
            with self._lock:
                self._mid_to_index[info.mid] = i
                if info.is_published():
                    self.acked.add(i)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class ExactQos2Publisher:
    """A QoS 2 publisher that follows MQTT 3.1.1 §4.3.3 to the letter across reconnects: after
    a PUBREC it only ever resends PUBREL, before one it resends the PUBLISH with DUP.

    paho-mqtt is not used here because, publishing from another thread while its link is
    broken, it was seen to resend a PUBLISH it had already released with PUBREL (DUP=0, same
    packet id): a new message by the rules, so the broker correctly delivered it again. Packet
    ids are never reused (id = index + 1), so any duplicate is the broker's fault.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.acked: set[int] = set()  # PUBREC received: the broker owns the message
        self.completed: set[int] = set()
        self._released: set[int] = set()
        self._next = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        while len(self.completed) < N:
            try:
                self._session()
            except OSError:
                time.sleep(0.05)  # the broker is down: try again

    def _session(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            decoder = StreamDecoder(protocol_version=PROTOCOL_V311)
            hello = Connect(client_id="pub-q2", clean_start=False, keep_alive=30)
            sock.sendall(encode(hello, PROTOCOL_V311))
            inbox: list[object] = []
            while not inbox:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("closed before CONNACK")
                inbox.extend(decoder.feed(data))
            ack = inbox.pop(0)
            assert isinstance(ack, ConnAck) and ack.reason_code == 0, ack
            out = []
            for i in sorted(set(range(self._next)) - self.completed):
                if i in self._released:
                    out.append(PubRel(i + 1))
                else:
                    out.append(Publish("crash/x", str(i).encode(), 2, False, True, i + 1))
            sock.sendall(b"".join(encode(p, PROTOCOL_V311) for p in out))
            while len(self.completed) < N:
                batch = []
                for packet in inbox:
                    if isinstance(packet, PubRec):
                        self.acked.add(packet.packet_id - 1)
                        self._released.add(packet.packet_id - 1)
                        batch.append(PubRel(packet.packet_id))
                    elif isinstance(packet, PubComp):
                        self.completed.add(packet.packet_id - 1)
                inbox = []
                while self._next < N and self._next - len(self.completed) < 100:
                    i = self._next
                    batch.append(Publish("crash/x", str(i).encode(), 2, False, False, i + 1))
                    self._next += 1
                if batch:
                    sock.sendall(b"".join(encode(p, PROTOCOL_V311) for p in batch))
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("closed by broker")
                inbox = decoder.feed(data)


def _run(tmp_path: Path, qos: int, seed: int) -> None:
    port = free_port()
    # The queue must hold everything: this test is about durability, not overflow policy.
    config = write_config(tmp_path, port, {"limits": {"queue": {"max_messages": 2 * N}}})
    gw = ProcessGateway(config, port)
    try:
        _crash_and_count(gw, port, qos, seed)
    finally:
        gw.stop_if_running()


def _crash_and_count(gw: ProcessGateway, port: int, qos: int, seed: int) -> None:
    rng = random.Random(seed)
    gw.start()
    sub = Client(port, "victim", clean=False)
    sub.subscribe("crash/#", qos=qos)
    sub.disconnect()

    # Inside the publishing phase: paho's QoS 1 takes over a second for N, QoS 2 here ~0.7 s.
    kill_after = rng.uniform(0.05, 1.0 if qos == 1 else 0.5)
    killer = threading.Timer(kill_after, gw.kill)
    killer.start()
    pub: PahoQos1Publisher | ExactQos2Publisher
    pub = PahoQos1Publisher(port) if qos == 1 else ExactQos2Publisher(port)
    pub.start()
    killer.join()
    acked_at_kill = set(pub.acked)
    print(f"seed={seed} kill after {kill_after:.2f}s: {len(acked_at_kill)} of {N} acknowledged")

    gw.start()
    # The publisher reconnects by itself and resends what was not acknowledged.
    assert wait_for(lambda: len(pub.acked) == N, 60, 0.1), f"only {len(pub.acked)} acked"
    if isinstance(pub, PahoQos1Publisher):
        pub.stop()
    else:
        assert wait_for(lambda: len(pub.completed) == N, 30, 0.1)
        pub.join(5)

    again = Client(port, "victim", clean=False)
    received: list[int] = []
    deadline = time.monotonic() + 60
    while len(set(received)) < N and time.monotonic() < deadline:
        try:
            received.append(int(again.get(timeout=5).payload))
        except Exception:
            break
    received.extend(int(m.payload) for m in again.drain(0.5))  # anything delivered twice
    again.disconnect()
    missing_acked = acked_at_kill - set(received)
    assert not missing_acked, f"{len(missing_acked)} acknowledged messages lost"
    assert set(received) == set(range(N))
    if qos == 2:
        twice = sorted(i for i in set(received) if received.count(i) > 1)
        assert not twice, f"QoS 2 delivered {len(twice)} message(s) twice: {twice[:20]}"
    assert gw.terminate() == 0


def test_kill9_qos1_loses_nothing_acknowledged(tmp_path: Path) -> None:
    _run(tmp_path, qos=1, seed=random.randrange(1 << 30))


def test_kill9_qos2_delivers_exactly_once(tmp_path: Path) -> None:
    _run(tmp_path, qos=2, seed=random.randrange(1 << 30))
