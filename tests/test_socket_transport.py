"""The lean TCP transport of plain MQTT listeners (gateway/server/socket_transport.py), against
real loopback sockets: asyncio's transport semantics that the connection code relies on."""

from __future__ import annotations

import asyncio
import os
import resource
import socket
from collections.abc import AsyncIterator

import pytest

from gateway.server.socket_transport import SocketListener, SocketTransport, listen_tcp


class Recorder(asyncio.Protocol):
    """Records every callback, in order."""

    def __init__(self) -> None:
        self.transport: SocketTransport | None = None
        self.events: list[str] = []
        self.data = bytearray()
        self.keep_open_on_eof = False
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, SocketTransport)
        self.transport = transport
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool:
        self.events.append("eof")
        return self.keep_open_on_eof

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        self.lost.set_result(exc)


class Pair:
    """A listener, one accepted connection (its Recorder) and the client's end."""

    def __init__(self, listener: SocketListener, server: Recorder, client: socket.socket) -> None:
        self.listener = listener
        self.server = server
        self.client = client

    @property
    def transport(self) -> SocketTransport:
        assert self.server.transport is not None
        return self.server.transport


async def _until(predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    made: list[Recorder] = []

    def factory() -> Recorder:
        made.append(Recorder())
        return made[-1]

    listener = await listen_tcp("127.0.0.1", 0, factory, backlog=16, start_serving=True)
    port = listener.sockets[0].getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    client.setblocking(False)
    await _until(lambda: made and made[0].transport is not None)
    yield Pair(listener, made[0], client)
    client.close()
    listener.close()


async def _read_all(sock: socket.socket, until_eof: bool = True) -> bytes:
    loop = asyncio.get_running_loop()
    out = bytearray()
    while True:
        chunk = await loop.sock_recv(sock, 1 << 16)
        if not chunk:
            return bytes(out)
        out += chunk
        if not until_eof:
            return bytes(out)


async def test_reads_arrive_and_a_paused_transport_reads_nothing(pair: Pair) -> None:
    pair.client.sendall(b"hello")
    await _until(lambda: pair.server.data == b"hello")
    pair.transport.pause_reading()
    assert not pair.transport.is_reading()
    pair.client.sendall(b" world")
    await asyncio.sleep(0.1)
    assert pair.server.data == b"hello"
    pair.transport.resume_reading()
    await _until(lambda: pair.server.data == b"hello world")


async def test_a_full_send_queue_pauses_the_writer_and_nothing_is_lost_or_reordered(
    pair: Pair,
) -> None:
    transport = pair.transport
    transport.set_write_buffer_limits(high=64 * 1024)
    blob = bytes(range(256)) * (40 * 1024)  # 10 MiB: far more than the kernel's queue
    for i in range(0, len(blob), 100_000):
        transport.write(blob[i : i + 100_000])
    assert pair.server.events[-1] == "pause"
    assert transport.get_write_buffer_size() > 64 * 1024
    transport.write_eof()  # sent once the buffer has drained
    got = await _read_all(pair.client)
    assert got == blob
    assert transport.get_write_buffer_size() == 0
    assert pair.server.events == ["made", "pause", "resume"]


async def test_write_eof_is_a_half_close_reading_goes_on(pair: Pair) -> None:
    pair.transport.write(b"bye")
    pair.transport.write_eof()
    assert await _read_all(pair.client) == b"bye"  # EOF seen by the peer
    assert not pair.transport.is_closing()
    pair.client.sendall(b"still reading")
    await _until(lambda: pair.server.data == b"still reading")
    pair.client.shutdown(socket.SHUT_WR)
    assert await asyncio.wait_for(pair.server.lost, 5) is None
    assert pair.server.events == ["made", "eof", "lost"]


async def test_close_sends_what_is_buffered_then_reports_lost_once(pair: Pair) -> None:
    blob = b"x" * (8 * 1024 * 1024)
    pair.transport.write(blob)
    pair.transport.close()
    pair.transport.close()
    assert pair.transport.is_closing()
    assert not pair.server.lost.done()  # the buffer is still being sent
    assert await _read_all(pair.client) == blob
    assert await asyncio.wait_for(pair.server.lost, 5) is None
    await asyncio.sleep(0.05)
    assert pair.server.events.count("lost") == 1


async def test_abort_drops_the_buffer_and_closes_at_once(pair: Pair) -> None:
    pair.transport.write(b"y" * (8 * 1024 * 1024))
    pair.transport.abort()
    pair.transport.abort()
    pair.transport.write(b"ignored after abort")
    assert await asyncio.wait_for(pair.server.lost, 5) is None
    got = await _read_all(pair.client)
    assert len(got) < 8 * 1024 * 1024
    assert pair.server.events.count("lost") == 1


async def test_a_peer_that_resets_is_reported_lost_with_the_error(pair: Pair) -> None:
    pair.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    pair.transport.write(b"z" * 4 * 1024 * 1024)  # unread: the reset hits a full queue
    pair.client.close()
    exc = await asyncio.wait_for(pair.server.lost, 5)
    assert isinstance(exc, ConnectionError)


async def test_eof_from_the_peer_closes_unless_the_protocol_keeps_it_open(pair: Pair) -> None:
    pair.server.keep_open_on_eof = True
    pair.client.shutdown(socket.SHUT_WR)
    await _until(lambda: "eof" in pair.server.events)
    pair.transport.write(b"answer after the peer's EOF")
    assert await _read_all(pair.client, until_eof=False) == b"answer after the peer's EOF"
    assert not pair.server.lost.done()
    pair.transport.close()
    assert await asyncio.wait_for(pair.server.lost, 5) is None


async def test_a_listener_not_serving_refuses_until_it_serves() -> None:
    made: list[Recorder] = []

    def factory() -> Recorder:
        made.append(Recorder())
        return made[-1]

    listener = await listen_tcp("127.0.0.1", 0, factory, backlog=16, start_serving=False)
    port = listener.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    try:
        with pytest.raises(ConnectionRefusedError):
            await loop.sock_connect(_nonblocking(), ("127.0.0.1", port))
        await listener.start_serving()
        assert listener.is_serving()
        client = _nonblocking()
        await loop.sock_connect(client, ("127.0.0.1", port))
        await _until(lambda: len(made) == 1)
        peer = made[0].transport
        assert peer is not None
        assert peer.get_extra_info("peername") == client.getsockname()
        assert peer.get_extra_info("socket").fileno() >= 0
        client.close()
        assert await asyncio.wait_for(made[0].lost, 5) is None
    finally:
        listener.close()
    assert not listener.is_serving()


def _nonblocking() -> socket.socket:
    sock = socket.socket()
    sock.setblocking(False)
    return sock


async def test_out_of_file_descriptors_pauses_accepting_and_it_resumes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """EMFILE on accept: the listening socket would report ready in a busy loop, so the
    listener stops for a second, says so, and accepts the waiting client afterwards."""
    made: list[Recorder] = []

    def factory() -> Recorder:
        made.append(Recorder())
        return made[-1]

    listener = await listen_tcp("127.0.0.1", 0, factory, backlog=16, start_serving=False)
    address = listener.sockets[0].getsockname()
    loop = asyncio.get_running_loop()
    clients = [_nonblocking(), _nonblocking()]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        # Room for one more descriptor: the first accept gets it, the second fails. (The
        # limit caps descriptor numbers: the lowest free one is the only one left below it.)
        lowest_free = os.dup(0)
        os.close(lowest_free)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free + 1, hard))
        await listener.start_serving()
        for client in clients:
            await loop.sock_connect(client, address)  # complete in the kernel's backlog
        await _until(lambda: len(made) == 1)
        await _until(lambda: not listener.is_serving())
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert "not accepting clients for 1 s" in caplog.text
        await _until(lambda: len(made) == 2, timeout=5)
        assert listener.is_serving()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for client in clients:
            client.close()
        listener.close()
