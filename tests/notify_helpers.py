"""The service manager's side of sd_notify, for tests of the gateway as a notify service."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable


class NotifySocket:
    """The service manager's end: a datagram socket the gateway sends its state to."""

    def __init__(self, address: str) -> None:
        self.address = address  # as NOTIFY_SOCKET spells it
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind = "\0" + address[1:] if address.startswith("@") else address
        self.sock.bind(bind)
        self.messages: list[tuple[float, dict[str, str]]] = []

    def receive(self, timeout: float) -> dict[str, str] | None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            return None
        fields = dict(line.split("=", 1) for line in data.decode().splitlines())
        self.messages.append((time.monotonic(), fields))
        return fields

    def wait_for(
        self, predicate: Callable[[dict[str, str]], bool], timeout: float = 20
    ) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            fields = self.receive(left)
            if fields is not None and predicate(fields):
                return fields
        raise AssertionError(f"no such notification; got {[m for _, m in self.messages]}")

    def drain(self) -> list[dict[str, str]]:
        out = []
        while (fields := self.receive(0.001)) is not None:
            out.append(fields)
        return out

    def close(self) -> None:
        self.sock.close()


def abstract_notify_socket() -> NotifySocket:
    # Abstract namespace: no path length limit, nothing left on disk.
    return NotifySocket(f"@edge-gateway-test-{uuid.uuid4().hex}")
