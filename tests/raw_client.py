"""A scripted MQTT client over a plain socket, for exact packet sequences in tests.

It uses the project's codec to build and parse packets; interoperability itself is covered by
the paho and mosquitto tests, this is for sequences those clients cannot be made to send.
"""

from __future__ import annotations

import socket
import time

from gateway.mqtt.codec import StreamDecoder, encode
from gateway.mqtt.packets import PROTOCOL_V311, Connect, Packet


class RawClient:
    def __init__(
        self,
        port: int = 0,
        version: int = PROTOCOL_V311,
        timeout: float = 5.0,
        *,
        unix: str | None = None,
    ) -> None:
        self.version = version
        if unix is None:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(unix)
        self.decoder = StreamDecoder(protocol_version=version)
        self.inbox: list[Packet] = []

    def send(self, *packets: Packet) -> None:
        self.sock.sendall(b"".join(encode(p, self.version) for p in packets))

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def connect(self, packet: Connect) -> Packet:
        self.send(packet)
        return self.recv()

    def recv(self, timeout: float = 5.0) -> Packet:
        deadline = time.monotonic() + timeout
        while not self.inbox:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no packet")
            self.sock.settimeout(remaining)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by broker")
            self.inbox.extend(self.decoder.feed(data))
        return self.inbox.pop(0)

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True once the broker has closed the connection (EOF) with nothing more sent."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536) == b""
        except (ConnectionResetError, TimeoutError, OSError):
            return False

    def close(self) -> None:
        self.sock.close()
