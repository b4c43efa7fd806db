"""The in-memory transport pair behind in-process MQTT clients: the delivery, flow control and
close/abort behaviour the connection code relies on from a socket."""

from __future__ import annotations

import asyncio

from gateway.server.memory_transport import MemoryTransport, memory_transport_pair


class Recorder(asyncio.Protocol):
    def __init__(self, keep_open_on_eof: bool = False) -> None:
        self.data = bytearray()
        self.chunks = 0
        self.eof = False
        self.lost: list[Exception | None] = []
        self.paused = 0
        self.resumed = 0
        self.keep_open_on_eof = keep_open_on_eof

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.chunks += 1

    def eof_received(self) -> bool:
        self.eof = True
        return self.keep_open_on_eof

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)

    def pause_writing(self) -> None:
        self.paused += 1

    def resume_writing(self) -> None:
        self.resumed += 1


def pair() -> tuple[MemoryTransport, Recorder, MemoryTransport, Recorder]:
    a, b = memory_transport_pair(asyncio.get_running_loop(), "in-process")
    pa, pb = Recorder(), Recorder()
    a.set_protocol(pa)
    b.set_protocol(pb)
    return a, pa, b, pb


async def turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_writes_of_one_turn_arrive_together_on_the_next() -> None:
    a, _, b, pb = pair()
    a.write(b"one ")
    a.write(b"two")
    assert pb.data == b""  # never re-entrantly inside write()
    await turns()
    assert pb.data == b"one two" and pb.chunks == 1
    b.write(b"back")
    await turns()
    assert a.get_protocol().data == b"back"  # type: ignore[attr-defined]
    assert a.get_extra_info("peername") == "in-process"


async def test_a_paused_reader_holds_the_writer_back_and_the_writer_is_told() -> None:
    a, pa, b, pb = pair()
    a.set_write_buffer_limits(high=1000)
    b.pause_reading()
    a.write(b"x" * 600)
    await turns()
    assert pb.data == b"" and a.get_write_buffer_size() == 600 and pa.paused == 0
    a.write(b"x" * 600)
    assert pa.paused == 1  # above the high-water mark
    await turns()
    assert pb.data == b"" and pa.resumed == 0
    b.resume_reading()
    await turns()
    assert len(pb.data) == 1200 and a.get_write_buffer_size() == 0 and pa.resumed == 1


async def test_large_writes_arrive_in_bounded_chunks_in_order() -> None:
    a, _, _, pb = pair()
    payload = bytes(range(256)) * 4096  # 1 MiB
    a.write(payload)
    await turns(20)
    assert pb.data == payload and pb.chunks == 4


async def test_close_delivers_what_was_written_then_end_of_file() -> None:
    a, pa, b, pb = pair()
    a.write(b"last words")
    a.close()
    assert a.is_closing()
    a.write(b"ignored after close")
    await turns()
    assert pb.data == b"last words" and pb.eof
    assert pa.lost == [None] and pb.lost == [None]  # eof_received said close: both ends gone
    assert b.is_closing()


async def test_a_peer_that_keeps_its_end_open_after_eof_can_still_write() -> None:
    a, b = memory_transport_pair(asyncio.get_running_loop(), "x")
    pa, pb = Recorder(), Recorder(keep_open_on_eof=True)
    a.set_protocol(pa)
    b.set_protocol(pb)
    a.close()
    await turns()
    assert pb.eof and pb.lost == [] and not b.is_closing()
    b.close()
    await turns()
    assert pb.lost == [None]


async def test_abort_loses_unsent_bytes_and_resets_the_peer() -> None:
    a, pa, b, pb = pair()
    b.pause_reading()
    a.write(b"never delivered")
    a.abort()
    await turns()
    assert pb.data == b"" and pa.lost == [None]
    assert len(pb.lost) == 1 and isinstance(pb.lost[0], ConnectionResetError)
    b.write(b"into the void")  # writing to a reset connection is ignored, as on a socket
    b.resume_reading()
    await turns()
    assert pa.data == b""


async def test_streams_on_top_work_like_a_socket() -> None:
    loop = asyncio.get_running_loop()
    server_end, client_end = memory_transport_pair(loop, "x")
    echo = Recorder()
    server_end.set_protocol(echo)
    reader = asyncio.StreamReader()
    protocol = asyncio.StreamReaderProtocol(reader)
    client_end.set_protocol(protocol)
    protocol.connection_made(client_end)
    writer = asyncio.StreamWriter(client_end, protocol, reader, loop)
    writer.write(b"ping")
    await writer.drain()
    await turns()
    assert echo.data == b"ping"
    server_end.write(b"pong")
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"pong"
    server_end.close()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # end of file
    writer.close()
    await asyncio.wait_for(writer.wait_closed(), 5)
