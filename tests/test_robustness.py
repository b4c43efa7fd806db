"""Bad input against the running gateway (issue 2): random and mutated packets from many
connections never crash the broker or disturb other sessions; malformed packets are answered
with the right reason code; silent connects, silent clients and surplus connections are cut.

The fuzz seed is printed (and shown in assertion messages); replay a run with
ROBUSTNESS_SEED=<seed>.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import os
import queue
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import ProcessGateway, ThreadGateway, free_port, wait_for, write_config
from fuzz_helpers import (
    RawConn,
    bad_packets,
    connect_bytes,
    disconnect_reason,
    mutate,
    pub_raw,
    random_connect,
    random_valid_packet,
)
from paho_helpers import V5, V311, Client

from gateway.mqtt.packets import PROTOCOL_V5, PROTOCOL_V311, Disconnect, PingResp, PubRec, Will
from gateway.mqtt.reason_codes import ReasonCode as RC

GatewayFactory = Callable[..., tuple[ThreadGateway, int]]

FUZZ_WORKERS = 60  # concurrent raw connections
FUZZ_PER_WORKER = 30  # connections each worker opens, one after the other
FUZZ_SECONDS = 3.0  # ... or fewer, once this much time has passed


def _seed() -> int:
    return int(os.environ.get("ROBUSTNESS_SEED") or random.SystemRandom().randrange(2**32))


# ---------------------------------------------------------------------------- fuzz driver


@dataclass
class FuzzReport:
    seed: int
    scenarios: Counter[str] = field(default_factory=Counter)
    closed_by_broker: int = 0
    connections: int = 0


async def _reader(reader: asyncio.StreamReader) -> bool:
    """Swallow whatever the broker sends; True once it closes the connection."""
    try:
        while await reader.read(65536):
            pass
    except OSError:
        pass  # a reset is a close too
    return True


def _scenario(rng: random.Random, n: int) -> tuple[str, list[bytes]]:
    """A named byte stream for one connection, as the chunks it is written in."""
    version = rng.choice([PROTOCOL_V311, PROTOCOL_V5])
    # Mostly distinct client ids; a few shared ones so that takeovers happen under fire too.
    client_id = f"fz-{n}" if rng.random() < 0.9 else f"fz-shared-{rng.randrange(3)}"
    connect = random_connect(rng, version, client_id)
    valid = [random_valid_packet(rng, version) for _ in range(rng.randrange(6))]
    kind = rng.randrange(6)
    if kind == 0:
        name, stream = "random-bytes", [rng.randbytes(rng.randrange(1, 300))]
    elif kind == 1:
        name, stream = "connect+random", [connect, rng.randbytes(rng.randrange(1, 300))]
    elif kind == 2:
        i = rng.randrange(len(valid) + 1)
        target = valid[i] if i < len(valid) else connect  # mutating CONNECT = second CONNECT
        how, bad = mutate(rng, target)
        name, stream = f"mutated:{how}", [connect, *valid[:i], bad, *valid[i + 1 :]]
    elif kind == 3:
        how, bad = mutate(rng, connect)
        name, stream = f"mutated-connect:{how}", [bad, *valid]
    elif kind == 4:
        cases = bad_packets(version)
        what = rng.choice(sorted(cases))
        name, stream = f"bad:{what}", [connect, *valid, cases[what], *valid]
    else:
        name, stream = "valid-only", [connect, *valid]
    data = b"".join(stream) or b"\x10"
    if len(data) > 1 and rng.random() < 0.4:
        # Interleaved partial writes: split anywhere, including inside headers.
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(1, 6))))
        bounds = [0, *cuts, len(data)]
        return name + "/split", [data[a:b] for a, b in itertools.pairwise(bounds)]
    return name, [data]


async def _fuzz_connection(rng: random.Random, port: int, n: int, report: FuzzReport) -> None:
    name, chunks = _scenario(rng, n)
    report.scenarios[name.split(":")[0].split("/")[0]] += 1
    report.connections += 1
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    reading = asyncio.ensure_future(_reader(reader))
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            if len(chunks) > 1:
                await asyncio.sleep(rng.uniform(0, 0.05))
        done, _ = await asyncio.wait({reading}, timeout=rng.uniform(0.05, 0.4))
        if done:
            report.closed_by_broker += 1
    except OSError:
        report.closed_by_broker += 1  # the broker closed while we were still writing
    finally:
        reading.cancel()
        if rng.random() < 0.3:
            writer.transport.abort()  # RST instead of FIN
        else:
            writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


async def _fuzz(port: int, seed: int) -> FuzzReport:
    report = FuzzReport(seed)
    deadline = time.monotonic() + FUZZ_SECONDS

    async def worker(w: int) -> None:
        rng = random.Random(seed * 1000 + w)
        for k in range(FUZZ_PER_WORKER):
            if time.monotonic() > deadline:
                return
            await _fuzz_connection(rng, port, w * FUZZ_PER_WORKER + k, report)

    await asyncio.gather(*(worker(w) for w in range(FUZZ_WORKERS)))
    return report


# ---------------------------------------------------------------------------- observer


class Observer:
    """A persistent v5 subscriber and a publisher exchanging QoS 1/2 messages in a loop."""

    def __init__(self, port: int, tag: str) -> None:
        self.tag = tag
        self.sub = Client(port, f"observer-sub-{tag}", version=V5, clean=False, session_expiry=300)
        assert self.sub.subscribe("obs/#", qos=2) == [2]
        self.pub = Client(port, f"observer-pub-{tag}", version=V5)
        self.acked: dict[bytes, int] = {}
        self.unacked: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for i in range(5000):  # bounded even if stop() is never called
            if self._stop.is_set():
                return
            qos = 1 + i % 2
            payload = f"{self.tag}-{i}".encode()
            info = self.pub.c.publish(f"obs/{i % 7}", payload, qos=qos)
            info.wait_for_publish(10)
            if info.is_published():
                self.acked[payload] = qos
            else:
                self.unacked.append(payload)
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)
        assert not self._thread.is_alive()

    def check(self, context: str) -> None:
        """Every acknowledged message arrived at its QoS; no QoS 2 message twice."""
        assert not self.unacked, f"{context}: publish not acknowledged: {self.unacked[:3]}"
        assert len(self.acked) > 10, f"{context}: the observer hardly published at all"
        received: Counter[bytes] = Counter()
        qos_seen: dict[bytes, int] = {}

        def take(timeout: float) -> bool:
            try:
                m = self.sub.messages.get(timeout=timeout)
            except queue.Empty:
                return False
            payload = bytes(m.payload)
            received[payload] += 1
            qos_seen[payload] = m.qos
            return True

        deadline = time.monotonic() + 15
        while not self.acked.keys() <= received.keys() and time.monotonic() < deadline:
            take(0.2)
        while take(0.3):  # late duplicates, if any
            pass
        missing = [p for p in self.acked if p not in received]
        assert not missing, f"{context}: {len(missing)} acknowledged messages lost: {missing[:5]}"
        twice = [p for p, q in self.acked.items() if q == 2 and received[p] != 1]
        assert not twice, f"{context}: QoS 2 delivered more than once: {twice[:5]}"
        wrong_qos = [p for p, q in self.acked.items() if qos_seen[p] != q]
        assert not wrong_qos, f"{context}: delivered at the wrong QoS: {wrong_qos[:5]}"
        for c in (self.sub, self.pub):
            assert c.disconnects.empty(), f"{context}: an observer was disconnected"

    def close(self) -> None:
        self.sub.disconnect()
        self.pub.disconnect()


def _fresh_client_works(port: int, tag: str) -> None:
    c = Client(port, f"fresh-{tag}", version=V5)
    assert c.subscribe("fresh/#", qos=1) == [1]
    c.publish("fresh/x", b"still serving", qos=1)
    m = c.get()
    assert (m.topic, m.payload) == ("fresh/x", b"still serving")
    c.disconnect()


def _error_lines(text: str) -> list[str]:
    markers = ("Traceback", "Exception in callback", " ERROR ", " CRITICAL ")
    return [line for line in text.splitlines() if any(m in line for m in markers)]


# ---------------------------------------------------------------------------- 1. fuzz


def test_fuzz_thread_gateway(
    gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    seed = _seed()
    print(f"fuzz seed {seed}")
    gw, port = gateway_factory()
    observer = Observer(port, "t")
    report = asyncio.run(_fuzz(port, seed))
    observer.stop()
    print(report, f"observer published {len(observer.acked)}")
    context = f"seed {seed}"
    observer.check(context)
    _fresh_client_works(port, "t")

    def clients() -> tuple[int, int]:
        server = gw.gateway.server
        # Not counting the gateway's own in-process clients (the admin API service).
        own = sum(1 for c in server.connections.values() if c.info is not None and c.info.trusted)
        connected = server.broker.gauges(time.time()).clients_connected
        return len(server.connections) - own, connected - own

    # Every fuzz connection is gone on both sides; only the two observers remain.
    assert wait_for(lambda: gw.call(clients) == (2, 2), 6), f"{context}: {gw.call(clients)}"
    malformed = gw.call(lambda: gw.gateway.server.stats.malformed_packets)
    assert malformed > 0, "the fuzzer never hit the malformed-input path"
    observer.close()
    gc.collect()  # "Task exception was never retrieved" is logged when the task is freed
    bad = [
        f"{r.name} {r.levelname}: {r.getMessage()}"
        for r in caplog.records
        # paho logs an ERROR of its own when disconnect() races its loop thread; the
        # observers' health is checked above through their messages and disconnects.
        if (r.levelno >= logging.ERROR or r.exc_info) and not r.name.startswith("paho")
    ]
    assert not bad, f"{context}: errors logged:\n" + "\n".join(bad[:20])


@pytest.fixture
def process_gateway(tmp_path: Path) -> Iterator[tuple[ProcessGateway, int]]:
    port = free_port()
    gw = ProcessGateway(write_config(tmp_path, port), port)
    try:
        yield gw.start(), port
    finally:
        gw.stop_if_running()


def test_fuzz_process_gateway(process_gateway: tuple[ProcessGateway, int]) -> None:
    # The gateway as users run it (uvloop, its own process): it must not die or log errors.
    seed = _seed()
    print(f"fuzz seed {seed}")
    gw, port = process_gateway
    observer = Observer(port, "p")
    report = asyncio.run(_fuzz(port, seed))
    observer.stop()
    print(report, f"observer published {len(observer.acked)}")
    context = f"seed {seed}"
    assert gw.proc is not None and gw.proc.poll() is None, f"{context}: gateway exited"
    observer.check(context)
    _fresh_client_works(port, "p")
    observer.close()
    assert gw.terminate() == 0
    log = gw.log_path.read_text()
    assert "closing" in log and "reason 0x" in log, "the fuzzer never hit the malformed path"
    bad = _error_lines(log)
    assert not bad, f"{context}: errors logged:\n" + "\n".join(bad[:20])


# ---------------------------------------------------------------------------- 2. reason codes

SMALL_PACKETS = 512

# Bad input after a successful v5 CONNECT and the DISCONNECT reason code it must earn.
V5_EXPECTED: dict[str, int] = {
    "remaining-length-5-bytes": RC.MALFORMED_PACKET,
    "remaining-length-not-minimal": RC.MALFORMED_PACKET,
    "huge-remaining-length": RC.PACKET_TOO_LARGE,
    "publish-qos3": RC.MALFORMED_PACKET,
    "publish-dup-qos0": RC.MALFORMED_PACKET,
    "publish-pid-0": RC.PROTOCOL_ERROR,
    "puback-pid-0": RC.PROTOCOL_ERROR,
    "pubrel-wrong-flags": RC.MALFORMED_PACKET,
    "subscribe-wrong-flags": RC.MALFORMED_PACKET,
    "topic-invalid-utf8": RC.MALFORMED_PACKET,
    "topic-surrogate": RC.MALFORMED_PACKET,
    "topic-wildcard": RC.TOPIC_NAME_INVALID,
    "filter-hash-not-last": RC.TOPIC_FILTER_INVALID,
    "filter-plus-in-level": RC.TOPIC_FILTER_INVALID,
    "second-connect": RC.PROTOCOL_ERROR,
    "reserved-type-0": RC.MALFORMED_PACKET,
    "server-only-connack": RC.PROTOCOL_ERROR,
    "server-only-pingresp": RC.PROTOCOL_ERROR,
    "pingreq-with-body": RC.MALFORMED_PACKET,
    "property-unknown-id": RC.MALFORMED_PACKET,
    "property-not-for-publish": RC.MALFORMED_PACKET,
    "property-duplicate": RC.PROTOCOL_ERROR,
    "property-length-past-end": RC.MALFORMED_PACKET,
    "topic-alias-0": RC.TOPIC_ALIAS_INVALID,
    "topic-alias-unknown": RC.PROTOCOL_ERROR,  # empty topic, alias never set
    "auth-packet": RC.PROTOCOL_ERROR,
    "packet-too-large": RC.PACKET_TOO_LARGE,
}

V311_CASES = sorted({*bad_packets(PROTOCOL_V311), "packet-too-large"})


def _bad_input(version: int, case: str) -> bytes:
    if case == "packet-too-large":
        return pub_raw(version, b"big", payload=b"x" * (SMALL_PACKETS * 2))
    return bad_packets(version)[case]


@pytest.fixture(scope="module")
def small_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    path = write_config(
        tmp_path_factory.mktemp("small"), port, {"limits": {"max_packet_size": SMALL_PACKETS}}
    )
    gw = ThreadGateway(path).start()
    try:
        yield port
    finally:
        gw.stop()


def test_v5_table_covers_every_bad_packet() -> None:
    assert set(V5_EXPECTED) == {*bad_packets(PROTOCOL_V5), "packet-too-large"}


@pytest.mark.parametrize("case", sorted(V5_EXPECTED))
def test_v5_bad_input_gets_disconnect_with_reason(small_gateway: int, case: str) -> None:
    conn = RawConn(small_gateway, PROTOCOL_V5)
    try:
        assert conn.connect(f"rc-{case}").reason_code == 0
        conn.send(_bad_input(PROTOCOL_V5, case))
        packets = conn.until_closed()
    finally:
        conn.close()
    assert len(packets) == 1 and isinstance(packets[0], Disconnect), packets
    code = disconnect_reason(packets)
    assert code == V5_EXPECTED[case], f"got 0x{code:02X}, want 0x{V5_EXPECTED[case]:02X}"


@pytest.mark.parametrize("case", V311_CASES)
def test_v311_bad_input_closes_without_a_word(small_gateway: int, case: str) -> None:
    conn = RawConn(small_gateway, PROTOCOL_V311)
    try:
        assert conn.connect(f"rc311-{case}").reason_code == 0
        conn.send(_bad_input(PROTOCOL_V311, case))
        assert conn.until_closed() == []  # 3.1.1 has no DISCONNECT from the server
    finally:
        conn.close()


def test_v5_receive_maximum_exceeded(small_gateway: int) -> None:
    # The broker announces Receive Maximum 100 (the default): QoS 2 publishes left without
    # PUBREL count against it, and one more is a violation (5.0 §3.3.4, MQTT-3.3.4-9).
    conn = RawConn(small_gateway, PROTOCOL_V5)
    try:
        ack = conn.connect("rc-recv-max")
        limit = ack.properties.receive_maximum or 65535
        assert limit == 100
        conn.send(b"".join(pub_raw(PROTOCOL_V5, b"q", b0=0x34, pid=i) for i in range(1, limit + 2)))
        packets = conn.until_closed()
    finally:
        conn.close()
    assert [p.packet_id for p in packets[:-1] if isinstance(p, PubRec)] == list(range(1, limit + 1))
    assert disconnect_reason(packets) == RC.RECEIVE_MAXIMUM_EXCEEDED


def test_good_session_next_to_bad_one_is_unaffected(small_gateway: int) -> None:
    good = Client(small_gateway, "neighbour", version=V5)
    assert good.subscribe("n/#", qos=1) == [1]
    for case in sorted(V5_EXPECTED):
        conn = RawConn(small_gateway, PROTOCOL_V5)
        conn.connect(f"bad-neighbour-{case}")
        conn.send(_bad_input(PROTOCOL_V5, case))
        conn.until_closed()
        conn.close()
        good.publish("n/x", case.encode(), qos=1)
        assert good.get().payload == case.encode()
    assert good.disconnects.empty()
    good.disconnect()


def test_takeover_of_a_connection_whose_peer_is_gone(
    gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # Found by the fuzzer (fixed in 64a5b36): a 3.1.1 client resets its connection while the
    # broker waits for a commit of its (reading paused, so the reset is not seen yet); a new
    # client takes the session over, and closing the old connection (shutdown() on a reset
    # socket: ENOTCONN) killed the new client's CONNECT task, so it never got a CONNACK.
    # A long group-commit window keeps the old connection waiting; the new CONNECT's commit
    # joins the same group, so both steps resume back to back.
    _, port = gateway_factory({"persistence": {"group_commit_ms": 300}})
    old = RawConn(port, PROTOCOL_V311)
    assert old.connect("taken-over", clean=False).reason_code == 0
    old.send(pub_raw(PROTOCOL_V311, b"keep/this", b0=0x31))  # retained: must be committed
    time.sleep(0.05)
    old.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    old.close()  # RST
    new = RawConn(port, PROTOCOL_V311)
    try:
        ack = new.connect("taken-over", clean=False)
        assert (ack.session_present, ack.reason_code) == (True, 0)
        new.send(b"\xc0\x00")
        assert isinstance(new.recv(), PingResp)
    finally:
        new.close()
    gc.collect()
    bad = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not bad, bad


# ---------------------------------------------------------------------------- 3. connect timeout


def test_connect_timeout_drops_silent_and_stalled_connects(gateway_factory: GatewayFactory) -> None:
    gw, port = gateway_factory({"limits": {"connect_timeout": 1}})
    started = time.monotonic()
    silent = RawConn(port)
    half = RawConn(port)
    half.send(connect_bytes("half", PROTOCOL_V5)[:7])
    trickle = RawConn(port)
    trickle_bytes = connect_bytes("trickle", PROTOCOL_V5)
    # A well-behaved client that takes its time (but less than the timeout) to say CONNECT.
    late = RawConn(port)
    good = Client(port, "punctual", version=V5)
    assert good.subscribe("punctual/#", qos=1) == [1]
    time.sleep(0.5)
    assert late.connect("late", keep_alive=60).reason_code == 0
    sent = 0
    while time.monotonic() - started < 0.8 and sent < len(trickle_bytes) - 1:
        trickle.send(trickle_bytes[sent : sent + 1])  # slowloris: never completes in time
        sent += 1
        time.sleep(0.1)
    for name, conn in (("silent", silent), ("half", half), ("trickle", trickle)):
        assert conn.closed_within(5), f"{name} connection not dropped"
        assert conn.inbox == [], f"{name} got {conn.inbox}"
    elapsed = time.monotonic() - started
    assert elapsed >= 1.0, f"dropped after {elapsed:.2f} s, before the 1 s connect timeout"
    assert gw.call(lambda: gw.gateway.server.stats.connect_timeouts) == 3
    # The clients that did connect are still there and working.
    late.send(b"\xc0\x00")
    assert isinstance(late.recv(), PingResp)
    good.publish("punctual/x", b"fine", qos=1)
    assert good.get().payload == b"fine"
    assert good.disconnects.empty()
    for conn in (silent, half, trickle, late):
        conn.close()
    good.disconnect()


# ---------------------------------------------------------------------------- 4. keep-alive


@pytest.mark.parametrize("version", [PROTOCOL_V5, PROTOCOL_V311])
def test_keep_alive_timeout_publishes_the_will(
    gateway_factory: GatewayFactory, version: int
) -> None:
    _, port = gateway_factory()
    watcher = Client(port, f"will-watcher-{version}", version=V5)
    assert watcher.subscribe("will/#", qos=1) == [1]
    # A client that keeps pinging every 0.5 s must survive the same keep-alive of 1 s.
    pinger = RawConn(port, version)
    assert pinger.connect("pinger", keep_alive=1).reason_code == 0
    silent = RawConn(port, version)
    will = Will(f"will/{version}", b"gone quiet", qos=1)
    started = time.monotonic()
    ack = silent.connect("quiet", keep_alive=1, will=will)
    assert ack.reason_code == 0
    assert ack.properties.server_keep_alive in (None, 1)
    stop = threading.Event()
    pongs: list[object] = []

    def ping() -> None:
        while not stop.wait(0.5):
            pinger.send(b"\xc0\x00")
            pongs.append(pinger.recv())

    t = threading.Thread(target=ping, daemon=True)
    t.start()
    try:
        packets = silent.until_closed(6)
        dropped_after = time.monotonic() - started
        msg = watcher.get(timeout=3)
    finally:
        stop.set()
        t.join(5)
    assert dropped_after > 1.5, f"dropped after {dropped_after:.2f} s, before 1.5 x keep-alive"
    if version == PROTOCOL_V5:
        assert disconnect_reason(packets) == RC.KEEP_ALIVE_TIMEOUT and len(packets) == 1
    else:
        assert packets == []
    assert (msg.topic, msg.payload) == (f"will/{version}", b"gone quiet")
    assert len(pongs) >= 3 and all(isinstance(p, PingResp) for p in pongs), pongs
    pinger.send(b"\xc0\x00")
    assert isinstance(pinger.recv(), PingResp)
    pinger.close()
    silent.close()
    watcher.disconnect()


# ---------------------------------------------------------------------------- 5. max_connections


def test_max_connections(gateway_factory: GatewayFactory) -> None:
    gw, port = gateway_factory({"limits": {"max_connections": 5}})
    sub = Client(port, "mc-sub", version=V5)
    assert sub.subscribe("mc/#", qos=1) == [1]
    others: list[Any] = [Client(port, "mc-pub", version=V311)]
    others += [RawConn(port) for _ in range(3)]
    for i, conn in enumerate(others[1:]):
        assert conn.connect(f"mc-raw-{i}").reason_code == 0
    assert gw.call(lambda: gw.gateway.server.outside_connections) == 5

    surplus = RawConn(port)
    try:
        surplus.send(connect_bytes("mc-surplus", PROTOCOL_V5))
    except OSError:
        pass  # already reset: refused just as well
    assert surplus.closed_within(5)
    assert surplus.inbox == [], "the 6th connection got an answer"
    surplus.close()
    assert gw.call(lambda: gw.gateway.server.stats.connections_refused) == 1

    # The five are untouched.
    others[0].publish("mc/x", b"after refusal", qos=1)
    assert sub.get().payload == b"after refusal"
    for conn in others[1:]:
        conn.send(b"\xc0\x00")
        assert isinstance(conn.recv(), PingResp)
    assert sub.disconnects.empty() and others[0].disconnects.empty()

    # A slot that frees up can be taken again.
    others[1].send(b"\xe0\x00")
    assert others[1].until_closed() == []
    others[1].close()
    assert wait_for(lambda: gw.call(lambda: gw.gateway.server.outside_connections) == 4)
    again = RawConn(port)
    assert again.connect("mc-again").reason_code == 0
    again.close()
    for conn in others[2:]:
        conn.close()
    others[0].disconnect()
    sub.disconnect()
