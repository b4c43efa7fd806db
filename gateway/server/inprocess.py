"""In-process clients: the gateway's own components (device sessions) as MQTT clients.

They speak MQTT over a pair of in-memory transports (memory_transport.py) instead of TCP, so
they go through exactly the same connection code, broker and durability path as any outside
client, without a port to secure, a listener to configure or a trip through the kernel.
"""

from __future__ import annotations

import asyncio
import time
from typing import cast

from gateway.broker.effects import ConnectionInfo
from gateway.server.connection import ConnectionHost, MQTTConnection
from gateway.server.memory_transport import memory_transport_pair

LISTENER_NAME = "in-process"


class InProcessConnection(MQTTConnection):
    """A connection from inside the gateway process: trusted (admin, no password)."""

    def __init__(self, server: ConnectionHost) -> None:
        super().__init__(server, LISTENER_NAME, allow_anonymous=True)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.info = ConnectionInfo(
            conn_id=self.conn_id,
            listener=LISTENER_NAME,
            peer=LISTENER_NAME,
            allow_anonymous=True,
            trusted=True,
        )
        # Not subject to max_connections: that limit protects the gateway from outside
        # clients, and refusing its own devices would silently stop command delivery.
        self.server.register_trusted(self)
        self.server.broker.connection_opened(self.info, time.time())


async def open_in_process(
    server: ConnectionHost,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A new trusted connection to ``server``; returns the client side as streams."""
    loop = asyncio.get_running_loop()
    server_end, client_end = memory_transport_pair(loop, LISTENER_NAME)
    connection = InProcessConnection(server)
    server_end.set_protocol(connection)
    connection.connection_made(server_end)
    reader = asyncio.StreamReader(loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    client_end.set_protocol(protocol)
    protocol.connection_made(client_end)
    return reader, asyncio.StreamWriter(client_end, protocol, reader, loop)
