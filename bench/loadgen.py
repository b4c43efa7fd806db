"""Raw-socket MQTT 3.1.1 load generator used by bench/bench_broker.py.

Each worker is a separate process (fork) running one asyncio loop that drives many
connections, so that on a small machine the generator can use more than one core and its own
CPU use can be measured (``time.process_time`` from "go" to "done"). Packets are built and
parsed with :mod:`gateway.mqtt.codec`: the broker's codec acts as a plain client library here.

Every PUBLISH payload starts with ``<q I I``: the sender's ``time.monotonic_ns()`` (one clock
for all processes on Linux), the publisher index and a sequence number, padded to the payload
size. That gives latency (publish built -> subscriber read) and duplicate detection.

Coordination with the orchestrator goes through a :class:`Control`: a worker connects and
prepares, calls :meth:`Control.ready` (which blocks until every worker is ready and the
orchestrator says go), runs, and returns a result dict.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing.queues
import multiprocessing.synchronize
import resource
import statistics
import struct
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway.mqtt.codec import StreamDecoder, encode, encode_publish
from gateway.mqtt.packets import (
    PROTOCOL_V311,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
)

V = PROTOCOL_V311
STAMP = struct.Struct("<qII")  # monotonic_ns, publisher index, sequence
READ_CHUNK = 1 << 18
Result = dict[str, Any]
T = TypeVar("T")


def raise_nofile_limit() -> int:
    """Lift the soft open-files limit to the hard one (idle-connection workload); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ------------------------------------------------------------------------- one connection


class Link:
    """One client connection: a stream pair plus a client-side StreamDecoder."""

    __slots__ = ("backlog", "decoder", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = StreamDecoder(protocol_version=V)
        # Packets that arrived in the same read as the one expect() waited for (a CONNACK is
        # often followed at once by queued PUBLISHes).
        self.backlog: list[Packet] = []

    @classmethod
    async def connect(
        cls, host: str, port: int, client_id: str, *, clean: bool = True, keep_alive: int = 60
    ) -> tuple[Link, ConnAck]:
        # A big limit lets one read() return hundreds of packets at once.
        reader, writer = await asyncio.open_connection(host, port, limit=READ_CHUNK * 4)
        link = cls(reader, writer)
        writer.write(
            encode(Connect(client_id=client_id, clean_start=clean, keep_alive=keep_alive), V)
        )
        ack = await link.expect(ConnAck)
        if ack.reason_code != 0:
            raise RuntimeError(f"{client_id}: CONNACK refused with {ack.reason_code}")
        return link, ack

    async def read(self) -> list[Packet]:
        if self.backlog:
            packets, self.backlog = self.backlog, []
            return packets
        data = await self.reader.read(READ_CHUNK)
        if not data:
            raise ConnectionError("broker closed the connection")
        return self.decoder.feed(data)

    async def expect(self, kind: type[T], timeout: float = 10.0) -> T:
        """Read until a packet of ``kind`` arrives (nothing else is expected meanwhile)."""
        async with asyncio.timeout(timeout):
            while True:
                packets = await self.read()
                if packets:
                    first, self.backlog = packets[0], packets[1:]
                    if isinstance(first, kind):
                        return first
                    raise RuntimeError(f"expected {kind.__name__}, got {first!r}")

    async def subscribe(self, topic_filter: str, qos: int) -> None:
        self.writer.write(encode(Subscribe(1, (Subscription(topic_filter, qos),)), V))
        ack = await self.expect(SubAck)
        if ack.reason_codes[0] != qos:
            raise RuntimeError(f"SUBACK {ack.reason_codes} for {topic_filter} QoS {qos}")

    async def disconnect(self) -> None:
        with contextlib.suppress(OSError):
            self.writer.write(encode(Disconnect(), V))
            await self.writer.drain()
        self.close()

    def close(self) -> None:
        self.writer.close()


class PayloadMaker:
    """Stamps the header into a preallocated buffer: one bytes() copy per message."""

    def __init__(self, size: int, publisher: int) -> None:
        self.buf = bytearray(max(size, STAMP.size))
        self.publisher = publisher

    def __call__(self, seq: int) -> bytes:
        STAMP.pack_into(self.buf, 0, time.monotonic_ns(), self.publisher, seq)
        return bytes(self.buf)


_PUBACKS: dict[int, bytes] = {}


def puback(packet_id: int) -> bytes:
    """Encoded PUBACK, cached: a subscriber acknowledges every QoS 1 delivery."""
    data = _PUBACKS.get(packet_id)
    if data is None:
        data = _PUBACKS[packet_id] = encode(PubAck(packet_id), V)
    return data


# ------------------------------------------------------------------------- worker plumbing


class Control:
    """A worker's side of the orchestration (see bench_broker.run_phase)."""

    def __init__(
        self,
        index: int,
        queue: multiprocessing.queues.Queue[Any],
        go: multiprocessing.synchronize.Event,
        stop: multiprocessing.synchronize.Event,
        resume: multiprocessing.synchronize.Event,
    ) -> None:
        self.index = index
        self.queue = queue
        self.go = go
        self.stop = stop
        self.resume = resume
        self.cpu_at_go = 0.0

    def ready(self) -> None:
        """Setup done: tell the orchestrator and block until every worker may start."""
        self.queue.put(("ready", self.index, None))
        self.go.wait()
        self.cpu_at_go = time.process_time()

    def checkpoint(self, label: str) -> None:
        """Let the orchestrator look at the broker (RSS) while this worker holds still."""
        self.queue.put(("checkpoint", self.index, label))
        self.resume.wait()

    def stop_requested(self) -> bool:
        """True once every publisher of the phase is done (so silence means: nothing more)."""
        return self.stop.is_set()


Worker = Callable[..., Awaitable[Result]]


def worker_entry(
    name: str,
    kwargs: dict[str, Any],
    index: int,
    queue: multiprocessing.queues.Queue[Any],
    go: multiprocessing.synchronize.Event,
    stop: multiprocessing.synchronize.Event,
    resume: multiprocessing.synchronize.Event,
) -> None:
    """Process target: run worker ``name`` on a fresh event loop (uvloop when available)."""
    ctl = Control(index, queue, go, stop, resume)
    fn: Worker = WORKERS[name]
    try:
        try:
            import uvloop

            runner: Callable[[Awaitable[Result]], Result] = uvloop.run  # type: ignore[assignment]
        except ImportError:
            runner = asyncio.run  # type: ignore[assignment]
        result = runner(fn(ctl, **kwargs))
        result["cpu"] = time.process_time() - ctl.cpu_at_go
        queue.put(("done", index, result))
    except BaseException:
        queue.put(("error", index, traceback.format_exc()))


# ------------------------------------------------------------------------- workers


async def publishers(
    ctl: Control,
    host: str,
    port: int,
    indexes: list[int],
    count: int,
    qos: int,
    window: int,
    payload: int,
    topic: str,
    time_limit: float,
    batch: int = 100,
) -> Result:
    """Connections ``indexes`` each publish ``count`` messages on ``topic``/<index>.

    QoS 0: batches of ``batch`` written back to back (TCP back-pressure is the only limit).
    QoS 1: at most ``window`` unacknowledged messages per connection; refilled after each read.
    """
    links = [
        (await Link.connect(host, port, f"bench-pub-{i}-{time.monotonic_ns()}"))[0] for i in indexes
    ]
    ctl.ready()
    deadline = time.monotonic() + time_limit
    sent = [0] * len(links)
    acked = [0] * len(links)
    finished = [0.0] * len(links)

    async def run_qos0(k: int, link: Link) -> None:
        make = PayloadMaker(payload, indexes[k])
        name = f"{topic}/{indexes[k]}"
        seq = 0
        writer = link.writer
        while seq < count and time.monotonic() < deadline:
            n = min(batch, count - seq)
            writer.write(
                b"".join(encode_publish(Publish(name, make(seq + j)), V) for j in range(n))
            )
            seq += n
            sent[k] = seq
            await writer.drain()
            await asyncio.sleep(0)  # drain() does not yield below the high-water mark
        finished[k] = time.monotonic()

    async def run_qos1(k: int, link: Link) -> None:
        make = PayloadMaker(payload, indexes[k])
        name = f"{topic}/{indexes[k]}"
        writer = link.writer
        target = count
        seq = 0
        done = 0
        while done < target:
            if time.monotonic() > deadline:
                target = seq  # stop sending; wait for what is in flight
            room = min(window - (seq - done), target - seq)
            if room > 0:
                writer.write(
                    b"".join(
                        encode_publish(
                            Publish(name, make(seq + j), 1, packet_id=(seq + j) % 65535 + 1), V
                        )
                        for j in range(room)
                    )
                )
                seq += room
                sent[k] = seq
            if done >= target:
                break
            for packet in await link.read():
                if packet.__class__ is PubAck:
                    done += 1
            acked[k] = done
        finished[k] = time.monotonic()

    run = run_qos1 if qos else run_qos0
    await asyncio.gather(*(run(k, link) for k, link in enumerate(links)))
    for link in links:
        await link.disconnect()
    return {
        "role": "pub",
        "sent": sum(sent),
        "acked": sum(acked),
        "t_end": max(finished),
    }


async def subscriber(
    ctl: Control,
    host: str,
    port: int,
    client_id: str,
    topic_filter: str,
    qos: int,
    expected: int,
    mode: str,
    time_limit: float,
    idle: float = 1.0,
) -> Result:
    """Receive ``expected`` messages, acknowledging QoS 1 ones in one write per read.

    mode ``clean`` / ``persistent``: subscribe, then ready; the phase's publishers follow.
    mode ``offline``: make a persistent subscription, disconnect, ready, and return at go.
    mode ``drain``: ready while disconnected; at go reconnect (persistent) and drain the queue.
    """
    if mode in ("persistent", "offline"):
        # Start from an empty session whatever an earlier run left behind.
        link, _ = await Link.connect(host, port, client_id, clean=True)
        await link.disconnect()
    if mode != "drain":
        link, _ = await Link.connect(host, port, client_id, clean=mode == "clean")
        await link.subscribe(topic_filter, qos)
    if mode == "offline":
        await link.disconnect()
        ctl.ready()
        return {"role": "setup"}
    ctl.ready()
    t_go = time.monotonic()
    deadline = t_go + time_limit
    if mode == "drain":
        link, ack = await Link.connect(host, port, client_id, clean=False)
        if not ack.session_present:
            raise RuntimeError("drain: the broker lost the persistent session")

    seen: set[int] = set()
    dups = 0
    latencies: list[int] = []
    t_first = t_last = 0.0
    reader = link.reader
    decoder = link.decoder
    writer = link.writer
    unpack = STAMP.unpack_from
    last_rx = time.monotonic()
    packets, link.backlog = link.backlog, []
    while True:
        if packets:
            now_ns = time.monotonic_ns()
            last_rx = now_ns / 1e9
            acks = []
            for packet in packets:
                if packet.__class__ is not Publish:
                    continue
                assert isinstance(packet, Publish)
                stamp, publisher, seq = unpack(packet.payload)
                latencies.append(now_ns - stamp)
                key = publisher << 32 | seq
                if key in seen:
                    dups += 1
                else:
                    seen.add(key)
                if packet.qos and packet.packet_id is not None:
                    acks.append(puback(packet.packet_id))
            if acks:
                writer.write(b"".join(acks))
            if latencies and not t_first:
                t_first = last_rx
            t_last = last_rx
        if len(seen) >= expected:
            break
        try:
            data = await asyncio.wait_for(reader.read(READ_CHUNK), 0.25)
        except TimeoutError:
            now = time.monotonic()
            if now > deadline or (ctl.stop_requested() and now - last_rx > idle):
                break
            packets = []
            continue
        if not data:
            raise ConnectionError("broker closed the subscriber connection")
        packets = decoder.feed(data)
    await link.disconnect()
    latencies.sort()
    return {
        "role": "sub",
        "received": len(seen),
        "dups": dups,
        "t_first": t_first,
        "t_last": t_last,
        "p50_ms": statistics.median(latencies) / 1e6 if latencies else 0.0,
        "p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)] / 1e6 if latencies else 0.0,
    }


async def idle_connections(
    ctl: Control,
    host: str,
    port: int,
    count: int,
    concurrency: int = 64,
    keep_alive: int = 600,
) -> Result:
    """Open ``count`` connections (CONNECT + CONNACK), hold them at a checkpoint, close."""
    raise_nofile_limit()
    ctl.ready()
    t0 = time.monotonic()
    links: list[Link] = []
    failures: list[str] = []
    gate = asyncio.Semaphore(concurrency)  # a burst of SYNs would overflow the listen backlog
    stamp = time.monotonic_ns()

    async def one(i: int) -> None:
        async with gate:
            try:
                link, _ = await Link.connect(
                    host, port, f"bench-idle-{stamp}-{i}", keep_alive=keep_alive
                )
                links.append(link)
            except (OSError, RuntimeError, TimeoutError) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(one(i) for i in range(count)))
    t_open = time.monotonic() - t0
    await asyncio.sleep(0.5)  # let the broker finish whatever the last CONNECTs started
    # Are they all still open? A broker that dropped some would show EOF here.
    alive = sum(1 for link in links if not link.reader.at_eof())
    ctl.checkpoint("open")
    for link in links:
        link.writer.transport.abort()
    return {
        "role": "idle",
        "opened": len(links),
        "alive": alive,
        "failed": len(failures),
        "first_failure": failures[0] if failures else "",
        "t_open": t_open,
    }


WORKERS: dict[str, Worker] = {
    "publishers": publishers,
    "subscriber": subscriber,
    "idle_connections": idle_connections,
}
