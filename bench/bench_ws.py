"""MQTT over WebSockets vs plain TCP: QoS 0 and QoS 1 rates through the same gateway.

One gateway subprocess (durable store, the default config otherwise) with a tcp and a ws
listener on 127.0.0.1. For each transport, one publisher and one subscriber (the gateway's
own codec as the client library; aiohttp as the WebSocket client, one binary message per
write as browsers send them):

  qos0   the publisher sends N 64-byte QoS 0 messages as fast as it can write them:
         msgs/s received by the subscriber
  qos1   the publisher keeps up to 100 QoS 1 messages in flight (clean_session=1
         subscriber, which PUBACKs): msgs/s received, every message PUBACKed both ways

The transports alternate (tcp, ws, tcp, ws, ...) so that load from elsewhere on the machine
touches both alike; the ws/tcp ratio of the medians is the figure to read. Mosquitto's
websockets listener is tried for a side-by-side run; Debian 12's mosquitto 2.0.11 cannot open
one in this sandbox ("Unable to start any listening sockets"), which is then printed.

Run: python bench/bench_ws.py [--messages 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gateway.mqtt.codec import StreamDecoder, encode  # noqa: E402
from gateway.mqtt.packets import (  # noqa: E402
    PROTOCOL_V311,
    ConnAck,
    Connect,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
)

V4 = PROTOCOL_V311
WINDOW = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Link:
    """An MQTT byte stream over TCP or a WebSocket, with the gateway's decoder."""

    def __init__(self) -> None:
        self.decoder = StreamDecoder(max_packet_size=1 << 20, protocol_version=V4)

    async def send(self, data: bytes) -> None:
        raise NotImplementedError

    async def chunk(self) -> bytes:
        raise NotImplementedError

    async def packets(self) -> list[Any]:
        while True:
            got = self.decoder.feed(await self.chunk())
            if got:
                return list(got)

    async def close(self) -> None:
        raise NotImplementedError


class TcpLink(Link):
    async def open(self, port: int) -> TcpLink:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        return self

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def chunk(self) -> bytes:
        data = await self.reader.read(65536)
        if not data:
            raise ConnectionError("closed")
        return data

    async def close(self) -> None:
        self.writer.close()


class WsLink(Link):
    async def open(self, port: int) -> WsLink:
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(
            f"http://127.0.0.1:{port}/mqtt", protocols=("mqtt",), max_msg_size=0
        )
        return self

    async def send(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def chunk(self) -> bytes:
        msg = await self.ws.receive()
        if msg.type != aiohttp.WSMsgType.BINARY:
            raise ConnectionError(f"closed: {msg}")
        return bytes(msg.data)

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


async def connect(kind: str, port: int, client_id: str) -> Link:
    link: Link = await (TcpLink().open(port) if kind == "tcp" else WsLink().open(port))
    await link.send(encode(Connect(client_id=client_id, keep_alive=60), V4))
    [ack] = await link.packets()
    assert isinstance(ack, ConnAck) and ack.reason_code == 0, ack
    return link


async def run_once(kind: str, port: int, qos: int, count: int, tag: str) -> float:
    sub = await connect(kind, port, f"sub-{tag}")
    topic = f"bench/{tag}"
    await sub.send(encode(Subscribe(1, (Subscription(topic, qos=qos),)), V4))
    [suback] = await sub.packets()
    assert isinstance(suback, SubAck)
    pub = await connect(kind, port, f"pub-{tag}")
    payload = b"x" * 64
    done = asyncio.Event()
    received = 0

    async def receive() -> None:
        nonlocal received
        while received < count:
            for packet in await sub.packets():
                if isinstance(packet, Publish):
                    received += 1
                    if packet.qos:
                        await sub.send(encode(PubAck(packet_id=packet.packet_id or 0), V4))
        done.set()

    receiver = asyncio.create_task(receive())
    started = time.perf_counter()
    if qos == 0:
        batch = encode(Publish(topic=topic, payload=payload), V4) * 50
        for _ in range(count // 50):
            await pub.send(batch)
    else:
        credit = asyncio.Semaphore(WINDOW)

        async def acks() -> None:
            acked = 0
            while acked < count:
                for packet in await pub.packets():
                    if isinstance(packet, PubAck):
                        acked += 1
                        credit.release()

        acker = asyncio.create_task(acks())
        for n in range(count):
            await credit.acquire()
            pid = n % 65535 + 1
            await pub.send(encode(Publish(topic, payload, qos=1, packet_id=pid), V4))
        await acker
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - started
    await receiver
    await pub.close()
    await sub.close()
    return count / elapsed


@contextlib.asynccontextmanager
async def gateway(workdir: Path) -> AsyncIterator[tuple[int, int]]:
    tcp, ws = free_port(), free_port()
    config = {
        "listeners": [
            {"type": "tcp", "host": "127.0.0.1", "port": tcp},
            {"type": "ws", "host": "127.0.0.1", "port": ws},
        ],
        "persistence": {"path": str(workdir / "gw.db")},
        "devices": {"ble": {"enabled": False}},
        "logging": {"level": "warning"},
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    log = (workdir / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(path)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(400):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", ws), 0.2):
                break
            await asyncio.sleep(0.05)
        yield tcp, ws
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def mosquitto_websockets_status(workdir: Path) -> str:
    if shutil.which("mosquitto") is None:
        return "not installed"
    conf = workdir / "mosquitto-ws.conf"
    conf.write_text(
        f"listener {free_port()} 127.0.0.1\nprotocol websockets\nallow_anonymous true\n"
    )
    try:
        proc = subprocess.run(
            ["mosquitto", "-c", str(conf)], capture_output=True, text=True, timeout=2
        )
    except subprocess.TimeoutExpired:
        return "started (side-by-side run not implemented: it did not start when written)"
    lines = (proc.stderr + proc.stdout).strip().splitlines()
    return f"cannot start: {lines[-1] if lines else proc.returncode}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rates: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        async with gateway(workdir) as (tcp, ws):
            for round_no in range(args.rounds):
                for qos in (0, 1):
                    for kind, port in (("tcp", tcp), ("ws", ws)):
                        tag = f"{kind}{qos}r{round_no}"
                        rate = await run_once(kind, port, qos, args.messages, tag)
                        rates.setdefault((kind, qos), []).append(rate)
                        print(f"round {round_no} qos{qos} {kind:3}: {rate:10,.0f} msgs/s")
        mosquitto = mosquitto_websockets_status(workdir)
    print(f"\nmedians of {args.rounds} rounds, {args.messages} x 64 B, 1 publisher -> 1 subscriber")
    for qos in (0, 1):
        tcp_rate = statistics.median(rates[("tcp", qos)])
        ws_rate = statistics.median(rates[("ws", qos)])
        print(
            f"  qos{qos}: tcp {tcp_rate:10,.0f}  ws {ws_rate:10,.0f}  msgs/s"
            f"  ws/tcp {ws_rate / tcp_rate:.2f}"
        )
    print(f"Mosquitto websockets listener: {mosquitto}")


if __name__ == "__main__":
    asyncio.run(main())
