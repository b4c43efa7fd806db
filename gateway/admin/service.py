"""The admin service: the gateway's own MQTT client that answers admin requests.

It connects in process (trusted, so an admin; DESIGN §5) as ``edge-gateway-admin``, subscribes
to ``<prefix>/bridge/request/+`` and ``<prefix>/+/result`` and:

* answers each request on ``<prefix>/bridge/response/<action>``, and on the request's MQTT 5
  response topic with its correlation data when it has one;
* turns command outcomes into events and runs the live publisher (gateway/admin/live.py).

Who may send requests is the broker's business: its built-in guard lets only admins publish
under ``<prefix>/bridge/`` and read the responses, updates and events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from gateway.admin import protocol
from gateway.admin.data import AdminData, BrokerView, DeviceLayer, UpstreamLayer
from gateway.admin.live import LivePublisher
from gateway.admin.protocol import Page, Request, RequestError
from gateway.client.mqtt import Connector, MQTTClient, MQTTClientError
from gateway.devicetypes.policy import PolicyError
from gateway.mqtt.packets import NO_PROPERTIES, Properties, Publish

log = logging.getLogger(__name__)

CLIENT_ID = "edge-gateway-admin"
Reload = Callable[[], Awaitable[object]]


class AdminService:
    def __init__(
        self,
        broker: BrokerView,
        connector: Connector,
        devices: Callable[[], DeviceLayer | None],
        prefix: str = "gw",
        *,
        reload: Reload | None = None,
        store_bytes: Callable[[], int | None] = lambda: None,
        upstreams: Callable[[], UpstreamLayer | None] = lambda: None,
        version: str = "",
        clock: Callable[[], float] = time.time,
        poll_interval: float = 0.25,
        reconnect_delay: float = 1.0,
        status_interval: float = 5.0,
        own_clients: tuple[str, ...] = (),
    ) -> None:
        self.connector = connector
        # The gateway's other in-process clients (the device bridge): never kicked on request.
        self.own_clients = (CLIENT_ID, *own_clients)
        self.prefix = prefix
        self.reload = reload
        self.clock = clock
        self.reconnect_delay = reconnect_delay
        self.data = AdminData(broker, devices, store_bytes=store_bytes, upstreams=upstreams)
        self.live = LivePublisher(
            self.data, self._publish_live, prefix, version=version, clock=clock,
            poll_interval=poll_interval, status_interval=status_interval,
        )  # fmt: skip
        self.requests = 0
        self._client: MQTTClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self._too_large: set[str] = set()

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and subscribe (requests are answered once this returns); then keep the
        client connected (an administrator may kick it) and the live updates going."""
        self._running = True
        # Events from the service's start on (the gateway's own start-up: devices connecting).
        self.live.prime()
        client = await self._connect()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._keep_connected(client), name="admin-client"),
            loop.create_task(self.live.run(), name="admin-live"),
        ]

    async def stop(self) -> None:
        self._running = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(MQTTClientError):
                await client.disconnect()

    async def _connect(self) -> MQTTClient:
        client = MQTTClient(self.connector, self._on_message)
        await client.connect(CLIENT_ID)
        limit = client.connack.properties.maximum_packet_size if client.connack else None
        if limit:  # a page and its envelope well within one packet
            self.data.page_bytes = max(1024, min(protocol.PAGE_BYTES, limit // 2))
        try:
            for topic_filter in (
                f"{protocol.request_prefix(self.prefix)}+",
                f"{self.prefix}/+/result",
            ):
                codes = await client.subscribe(topic_filter, qos=1)
                if codes[0] >= 0x80:
                    raise MQTTClientError(f"subscribe to {topic_filter} refused: {codes}")
        except BaseException:
            await client.close()
            raise
        self._client = client
        return client

    async def _keep_connected(self, client: MQTTClient) -> None:
        while self._running:
            reason = await client.wait_closed()
            if not self._running:
                return
            log.warning("admin service: link to the broker lost (%s); reconnecting", reason)
            while self._running:
                await asyncio.sleep(self.reconnect_delay)
                try:
                    client = await self._connect()
                    break
                except MQTTClientError as exc:
                    log.warning("admin service: reconnect failed: %s", exc)

    def _fits(self, client: MQTTClient, topic: str, payload: bytes) -> bool:
        """Would the broker take this PUBLISH? A larger one would cost us the connection."""
        limit = client.connack.properties.maximum_packet_size if client.connack else None
        # Fixed header, topic, packet id and properties: well within 64 bytes beyond these.
        return limit is None or len(payload) + len(topic.encode()) + 64 <= limit

    async def _publish_live(self, topic: str, payload: bytes, retain: bool) -> bool:
        client = self._client
        if client is None or not client.connected:
            return False
        if not self._fits(client, topic, payload):
            if topic not in self._too_large:  # once, not every second
                self._too_large.add(topic)
                log.warning("admin live updates on %s skipped: %d bytes is over the broker's "
                            "max_packet_size", topic, len(payload))  # fmt: skip
            return False
        self._too_large.discard(topic)
        try:
            await client.publish(topic, payload, qos=1 if retain else 0, retain=retain)
        except MQTTClientError as exc:
            log.debug("admin live update on %s not sent: %s", topic, exc)
            return False
        return True

    # --- messages -------------------------------------------------------------------------------

    async def _on_message(self, message: Publish) -> bool:
        if message.topic.startswith(protocol.request_prefix(self.prefix)):
            await self._request(message)
            return True
        head, tail = f"{self.prefix}/", "/result"
        if message.topic.startswith(head) and message.topic.endswith(tail):
            device = message.topic[len(head) : -len(tail)]
            event = protocol.command_event(device, message.payload, self.clock())
            if event is not None:
                self.live.push_event(event)
        return True

    async def _request(self, message: Publish) -> None:
        self.requests += 1
        request = protocol.parse_request(message.topic, message.payload, self.prefix)
        if request.error is not None:
            payload = protocol.response(error=request.error, request_id=request.id)
        else:
            try:
                data = await self.handle(request)
            except RequestError as exc:
                payload = protocol.response(error=str(exc), request_id=request.id)
            except Exception as exc:
                log.exception("admin request %s failed", request.action)
                error = f"internal error: {type(exc).__name__}: {exc}"
                payload = protocol.response(error=error, request_id=request.id)
            else:
                if isinstance(data, Page):  # a list: its data, and the page beside it
                    payload = protocol.response(data=data.data, request_id=request.id, page=data)
                else:
                    payload = protocol.response(data=data, request_id=request.id)
        client = self._client
        if client is None:
            return
        if not self._fits(client, protocol.response_topic(self.prefix, request.action), payload):
            error = (f"the answer ({len(payload)} bytes) is over the broker's max_packet_size "
                     "(limits.max_packet_size in the config)")  # fmt: skip
            payload = protocol.response(error=error, request_id=request.id)
        replies = [
            (protocol.response_topic(self.prefix, request.action or "unknown"), NO_PROPERTIES)
        ]
        reply_to = message.properties.response_topic
        if reply_to:
            props = Properties(correlation_data=message.properties.correlation_data)
            replies.append((reply_to, props))
        for topic, props in replies:
            try:
                await client.publish(topic, payload, qos=1, properties=props)
            except (MQTTClientError, ValueError) as exc:
                log.warning("admin response on %r not sent: %s", topic, exc)

    # --- actions --------------------------------------------------------------------------------

    async def handle(self, request: Request) -> object:
        """Carry out one request; its data, or RequestError."""
        body = request.body
        data, broker = self.data, self.data.broker
        match request.action:
            case "sessions":
                return data.sessions(protocol.page_request(body))
            case "devices":
                return data.devices(protocol.page_request(body))
            case "pending":
                device = protocol.optional_str(body, "device")
                return data.pending(device, protocol.page_request(body))
            case "cancel":
                device = protocol.required_str(body, "device")
                seq = protocol.required_int(body, "id")
                cancelled = broker.cancel_queued(data.client_id(device), [seq])
                if not cancelled:
                    raise RequestError(
                        f"command {seq} of {device!r} is not queued: unknown, already "
                        "delivered or expired, or in flight (being delivered right now)"
                    )
                return {"cancelled": cancelled}
            case "flush":
                device = protocol.required_str(body, "device")
                return {"cancelled": broker.cancel_queued(data.client_id(device), None)}
            case "send":
                return await self._send(body)
            case "kick":
                client_id = self._outside_client(body)
                return {"kicked": broker.kick(client_id)}
            case "delete_session":
                client_id = self._outside_client(body)
                return {"deleted": broker.delete_session(client_id)}
            case "set_policy":
                return await self._set_policy(body)
            case "reload":
                return await self._reload()
            case "upstreams":
                return data.upstreams(protocol.page_request(body))
        raise RequestError(f"unknown action {request.action!r}")  # pragma: no cover

    def _outside_client(self, body: dict[str, object]) -> str:
        """The `client_id` argument, unless it is the bridge or this service: cut off, the
        bridge would stay away (and say the gateway is offline) and the answer to this very
        request would be lost. A device session may go: it connects again by itself."""
        client_id = protocol.required_str(body, "client_id")
        if client_id in self.own_clients:
            raise RequestError(
                f"{client_id!r} is one of the gateway's own connections; restart the gateway"
            )
        return client_id

    async def _send(self, body: dict[str, object]) -> object:
        device = protocol.required_str(body, "device")
        command = protocol.required_object(body, "command")
        ttl = protocol.optional_ttl(body)
        entry = self.data.device(device)
        policy = entry.get("policy")
        if not (isinstance(policy, dict) and policy.get("session") == "persistent"):
            raise RequestError(f"{device!r} takes no commands (its session policy is clean)")
        client = self._client
        if client is None or not client.connected:
            raise RequestError("the admin service is reconnecting to the broker; try again")
        props = Properties(message_expiry_interval=ttl) if ttl is not None else NO_PROPERTIES
        try:
            await client.publish(
                f"{self.prefix}/{device}/set", protocol.encode(command), qos=1, properties=props
            )
        except MQTTClientError as exc:
            raise RequestError(f"the command was not accepted: {exc}") from exc
        return {"queued": True}

    async def _set_policy(self, body: dict[str, object]) -> object:
        device = protocol.required_str(body, "device")
        overrides = protocol.policy_overrides(body)
        layer = self.data.devices_layer
        if layer is None:
            raise RequestError(f"unknown device {device!r}")
        try:
            policy = await layer.set_policy(device, overrides)
        except KeyError:
            raise RequestError(f"unknown device {device!r}") from None
        except (PolicyError, TypeError) as exc:
            raise RequestError(f"policy: {exc}") from None
        client = self._client
        if client is None or not client.connected:
            raise RequestError("applied, but not stored: the admin service is reconnecting")
        # Kept by the broker (retained, durable) and read back by the device layer at start.
        stored = protocol.encode(overrides) if overrides else b""
        await client.publish(f"{self.prefix}/bridge/policy/{device}", stored, qos=1, retain=True)
        return {"policy": protocol.policy_dict(policy)}

    async def _reload(self) -> object:
        if self.reload is None:
            raise RequestError("not available: this gateway cannot reload its configuration")
        try:
            applied = await self.reload()
        except Exception as exc:  # a bad config file: the old one stays in force
            raise RequestError(f"reload failed, the previous configuration stays: {exc}") from None
        result: dict[str, object] = {"reloaded": True}
        if isinstance(applied, list):
            result["applied"] = [str(change) for change in applied]
        return result
