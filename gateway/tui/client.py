"""The terminal UI's link to the gateway: an MQTT 5 client of the admin API, nothing more.

It connects (Unix socket or TCP), subscribes to the admin API's live topics, sends requests
and matches their responses by correlation data, and keeps reconnecting with a growing pause
while the gateway is down or restarting. Whoever uses it sees the link as a `LinkStatus`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import itertools
import json
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

from gateway.client.mqtt import (
    ConnectionClosed,
    Connector,
    ConnectRefused,
    MQTTClient,
    MQTTClientError,
)
from gateway.mqtt.packets import Properties, Publish

log = logging.getLogger(__name__)


class LinkState(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    UNREACHABLE = "unreachable"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class LinkStatus:
    state: LinkState
    detail: str = ""
    retry_in: float | None = None  # seconds until the next attempt, when waiting for one


class RequestError(Exception):
    """A request that failed: refused by the gateway, timed out, or not sent at all."""


def unix_connector(path: str) -> Connector:
    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_unix_connection(path)

    return connect


def tcp_connector(host: str, port: int) -> Connector:
    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(host, port)

    return connect


_REFUSALS = {
    0x84: "unsupported protocol version",
    0x85: "client id not accepted",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8C: "bad authentication method",
    0x9F: "connection rate exceeded",
}


class AdminClient:
    """Speaks to one gateway's admin API and keeps the link up.

    `on_message(topic, payload)` gets every live message (updates, events, status);
    `on_status(status)` every change of the link. Both run in the event loop and must not
    block; an exception they raise is logged and does not end the link.
    """

    def __init__(
        self,
        connector: Connector,
        *,
        prefix: str = "gw",
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        request_timeout: float = 5.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 5.0,
        keep_alive: int = 15,
        where: str = "the gateway",
    ) -> None:
        self._connector = connector
        self.prefix = prefix
        self._username = username
        self._password = None if password is None else password.encode()
        self.client_id = client_id or f"edge-gateway-tui-{socket.gethostname()}-{os.getpid()}"
        self._request_timeout = request_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._keep_alive = keep_alive
        self.where = where
        self.response_topic = f"{prefix}/bridge/response/tui/{self.client_id}"
        self.status = LinkStatus(LinkState.CONNECTING, f"connecting to {where}")
        self._on_message: Callable[[str, bytes], None] = lambda _t, _p: None
        self._on_status: Callable[[LinkStatus], None] = lambda _s: None
        self._client: MQTTClient | None = None
        self._waiting: dict[bytes, asyncio.Future[object]] = {}
        self._correlation = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    # --- life cycle ---------------------------------------------------------------------------

    def start(
        self,
        on_message: Callable[[str, bytes], None],
        on_status: Callable[[LinkStatus], None],
    ) -> None:
        self._on_message = on_message
        self._on_status = on_status
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tui-link")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        client, self._client = self._client, None
        if client is not None:
            await client.disconnect()

    def retry_now(self) -> None:
        """Cut the current pause between attempts short (the user asked for a refresh)."""
        self._wake.set()

    # --- requests -----------------------------------------------------------------------------

    async def request(
        self, action: str, body: dict[str, object] | None = None, timeout: float | None = None
    ) -> object:
        """Send one admin request; returns its `data` or raises RequestError."""
        client = self._client
        if client is None or not client.connected:
            raise RequestError(f"not connected to {self.where}")
        correlation = f"{self.client_id}:{next(self._correlation)}".encode()
        waiter: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._waiting[correlation] = waiter
        props = Properties(response_topic=self.response_topic, correlation_data=correlation)
        try:
            payload = json.dumps(body or {}, separators=(",", ":")).encode()
            await client.publish(
                f"{self.prefix}/bridge/request/{action}", payload, qos=1, properties=props
            )
            reply = await asyncio.wait_for(waiter, timeout or self._request_timeout)
        except TimeoutError:
            raise RequestError(f"{action}: no answer from the gateway in time") from None
        except MQTTClientError as exc:
            raise RequestError(f"{action}: {exc}") from None
        finally:
            self._waiting.pop(correlation, None)
        if not isinstance(reply, dict):
            raise RequestError(f"{action}: the gateway's answer is not a JSON object")
        if reply.get("ok") is True:
            return reply.get("data")
        error = reply.get("error")
        raise RequestError(f"{action}: {error if isinstance(error, str) else 'failed'}")

    # --- the link -----------------------------------------------------------------------------

    def _set_status(self, status: LinkStatus) -> None:
        self.status = status
        try:
            self._on_status(status)
        except Exception:
            log.exception("link status handler failed")

    async def _handle(self, message: Publish) -> bool:
        if message.topic == self.response_topic:
            correlation = message.properties.correlation_data
            waiter = self._waiting.get(correlation or b"")
            if waiter is not None and not waiter.done():
                try:
                    waiter.set_result(json.loads(message.payload))
                except (ValueError, UnicodeDecodeError):
                    waiter.set_result(None)
            return True
        try:
            self._on_message(message.topic, message.payload)
        except Exception:
            log.exception("message handler failed for %r", message.topic)
        return True

    async def _run(self) -> None:
        delay = self._backoff_initial
        while True:
            self._set_status(LinkStatus(LinkState.CONNECTING, f"connecting to {self.where}"))
            client = MQTTClient(self._connector, self._handle, connect_timeout=5.0)
            try:
                await client.connect(
                    self.client_id,
                    clean_start=True,
                    keep_alive=self._keep_alive,
                    username=self._username,
                    password=self._password,
                )
                self._client = client
                await self._subscribe(client)
            except ConnectRefused as exc:
                reason = _REFUSALS.get(exc.reason_code, f"reason code 0x{exc.reason_code:02X}")
                failure = LinkStatus(LinkState.REFUSED, f"connection refused: {reason}")
            except _NotAdmin as exc:
                failure = LinkStatus(LinkState.REFUSED, str(exc))
                await client.disconnect()
            except (ConnectionClosed, MQTTClientError, OSError) as exc:
                failure = LinkStatus(LinkState.UNREACHABLE, _why_unreachable(exc))
            else:
                delay = self._backoff_initial
                self._set_status(LinkStatus(LinkState.CONNECTED, f"connected to {self.where}"))
                lost = await client.wait_closed()
                failure = LinkStatus(
                    LinkState.UNREACHABLE, f"link lost: {lost}" if lost else "link lost"
                )
            self._client = None
            self._fail_waiting()
            self._set_status(dataclasses.replace(failure, retry_in=delay))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            delay = min(delay * 2, self._backoff_max)

    async def _subscribe(self, client: MQTTClient) -> None:
        base = f"{self.prefix}/bridge"
        for topic_filter in (
            self.response_topic,
            f"{base}/updates/+",
            f"{base}/events",
            f"{base}/status",
        ):
            codes = await client.subscribe(topic_filter, qos=1 if "response" in topic_filter else 0)
            if any(code >= 0x80 for code in codes):
                raise _NotAdmin(
                    f"the gateway refused {topic_filter!r} (0x{codes[0]:02X}): "
                    "this user is not an admin"
                )

    def _fail_waiting(self) -> None:
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(ConnectionClosed("the link to the gateway was lost"))


class _NotAdmin(Exception):
    pass


def _why_unreachable(exc: BaseException) -> str:
    """The error, with a hint for the two usual mistakes with a local socket."""
    cause = exc.__cause__ or exc
    if isinstance(cause, PermissionError):
        return (
            f"{exc} - the gateway's socket is only for its user and group: "
            "run the TUI as that user, or add yourself to its group"
        )
    if isinstance(cause, FileNotFoundError):
        return f"{exc} - is the gateway running, and is this its socket?"
    return str(exc)
