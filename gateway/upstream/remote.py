"""The connection to the upstream broker: where, how (TCP or TLS), and the CONNECT we send."""

from __future__ import annotations

import asyncio
import socket
import ssl

from gateway.client.mqtt import Connector, Streams
from gateway.mqtt.packets import PROTOCOL_V5, Connect, Properties, Will
from gateway.upstream.settings import (
    UpstreamConfig,
    UpstreamTls,
    default_client_id,
    default_notification_topic,
)

ONLINE = b"online"
OFFLINE = b"offline"


def client_id_of(config: UpstreamConfig) -> str:
    """The client id on the upstream broker (the config reader normally resolves it)."""
    return config.client_id or default_client_id(config.name, socket.gethostname())


def notification_topic_of(config: UpstreamConfig) -> str:
    return config.notification_topic or default_notification_topic(client_id_of(config))


def tls_context(tls: UpstreamTls) -> ssl.SSLContext:
    """A client context: the system's CAs, or ``cafile``; a client certificate if given."""
    ctx = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(tls.cafile) if tls.cafile else None
    )
    if tls.certfile is not None:
        ctx.load_cert_chain(str(tls.certfile), str(tls.keyfile) if tls.keyfile else None)
    if tls.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connector_for(config: UpstreamConfig) -> Connector:
    """Opens a TCP or TLS connection to the upstream. The TLS context is built for each
    attempt, so renewed certificates are picked up on the next reconnect."""

    async def connect() -> Streams:
        ctx = tls_context(config.tls) if config.tls is not None else None
        return await asyncio.open_connection(
            config.host,
            config.port,
            ssl=ctx,
            server_hostname=config.host if ctx is not None else None,
        )

    return connect


def connect_packet(config: UpstreamConfig, receive_maximum: int, max_packet_size: int) -> Connect:
    """Our CONNECT: a persistent session, the will that says "offline", and (MQTT 5) how much
    we take in flight and how large a packet the local broker accepts."""
    v5 = config.protocol == PROTOCOL_V5
    will = Will(notification_topic_of(config), OFFLINE, 1, True)
    props = Properties()
    if v5:
        props = Properties(
            session_expiry_interval=config.session_expiry or None,
            receive_maximum=receive_maximum if receive_maximum < 65535 else None,
            maximum_packet_size=max_packet_size or None,
        )
    return Connect(
        client_id=client_id_of(config),
        protocol_version=config.protocol,
        clean_start=False,
        keep_alive=config.keepalive,
        will=will,
        username=config.username,
        password=config.password,
        properties=props,
    )
