"""A device session: one device as an MQTT client of the gateway's own broker (DESIGN §2-3).

Topics (``<prefix>`` is ``gw`` by default, ``<id>`` the device id):

* ``<prefix>/<id>/availability`` -- retained ``online``/``offline``; ``offline`` is the will.
* ``<prefix>/<id>/state`` -- retained JSON readings with ``ts``.
* ``<prefix>/<id>/set`` -- commands (JSON objects), subscribed at QoS 1 by every device that
  takes commands; a persistent device's subscription stays while it sleeps.
* ``<prefix>/<id>/result`` -- one JSON outcome per command.

A device that takes commands has a command schema (devices/model.py, `Device.schema`). Its
session hands it to the broker in the CONNECT, which refuses a command the device could never
carry out before it is queued (``rejected`` on the result topic); the driver checks the same
schema again before it touches the device.

A persistent device's broker session *is* its command queue. While the device sleeps its
session is disconnected and the broker keeps the commands durably; :meth:`DeviceSession.wake`
reconnects, the broker delivers the queue, and each command is acknowledged only after the
adapter executed it. A command the device did not confirm stays unacknowledged and comes
again on the next wake. The session asks the broker for one command at a time (receive
maximum 1), so a failure stops the rest of the queue instead of letting later commands
overtake it: a thermostat must never end on an older setpoint. After the policy's
``max_attempts`` failed attempts a command is answered ``failed`` and acknowledged, so that one
command the device keeps rejecting does not block its queue for ever.

Availability follows DESIGN §2: a device that sleeps on schedule stays ``online`` (going to
sleep is a clean DISCONNECT, which discards the will); only a link that breaks, or a device
that missed :data:`~devices.model.MISSED_WAKES_BEFORE_OFFLINE` wake-ups
(:meth:`DeviceSession.check_presence`), becomes ``offline``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable

from devices.model import (
    MISSED_WAKES_BEFORE_OFFLINE,
    Adapter,
    Device,
    DeviceUnreachable,
    InvalidCommand,
)
from gateway.client.mqtt import ConnectionClosed, Connector, MQTTClient, MQTTClientError
from gateway.mqtt.packets import Properties, Publish, Will

log = logging.getLogger(__name__)

# Client ids of device sessions. The broker refuses them to every network client
# (gateway/broker/connect.py): only the device bridge, in-process, may use them.
CLIENT_ID_PREFIX = "dev-"

ONLINE = b"online"
OFFLINE = b"offline"
DISCONNECT_WITH_WILL = 0x04
# Heard again within this many seconds: the same wake window (an eQ-3 advertises every second
# while awake), not another wake-up.
_SAME_WAKE = 2.0
_MAX_TRACKED = 1024  # failing commands whose attempts are remembered


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class DeviceSession:
    # Slots: one of each per declared device, and a thousand instance dicts add up.
    __slots__ = (
        "_activity",
        "_attempts",
        "_busy",
        "_client",
        "_heard_at",
        "_lock",
        "_reports",
        "_status",
        "adapter",
        "client_id",
        "clock",
        "connector",
        "delivered",
        "device",
        "failed_attempts",
        "keep_alive",
        "last_error",
        "last_seen",
        "missed_wakes",
        "observed_interval",
        "offline",
        "prefix",
    )

    def __init__(
        self,
        device: Device,
        adapter: Adapter,
        connector: Connector,
        prefix: str = "gw",
        *,
        keep_alive: int = 60,
        missed_wakes: int = MISSED_WAKES_BEFORE_OFFLINE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.device = device
        self.adapter = adapter
        self.connector = connector
        self.prefix = prefix
        self.keep_alive = keep_alive
        self.missed_wakes = missed_wakes
        self.clock = clock
        self.client_id = CLIENT_ID_PREFIX + device.id
        self.last_seen = clock()  # wall-clock time the device was last heard from
        # Seconds between the last two times it was heard after a silence (a report, a wake
        # window): what the device really does, where its policy only says what to expect.
        self.observed_interval: float | None = None
        self._heard_at: float | None = None
        self.offline = False  # we published "offline" (missed wake-ups) and not yet "online"
        self.delivered = 0
        self.failed_attempts = 0
        self.last_error: str | None = None
        self._client: MQTTClient | None = None
        self._status: MQTTClient | None = None  # publishes while the device session sleeps
        self._lock = asyncio.Lock()
        # Result reports still being published; made by the first (an empty set is 216 B).
        self._reports: set[asyncio.Task[None]] | None = None
        self._busy = False
        # Made by the first wait_quiet: most sessions never run a command, and an Event
        # costs a deque (~600 B) from the start.
        self._activity: asyncio.Event | None = None
        # Failed attempts per command (payload, correlation data). Held in memory only: the
        # broker does not count deliveries, so after a gateway restart a command gets up to
        # max_attempts more tries; it is never dropped early.
        self._attempts: dict[tuple[bytes, bytes | None], int] = {}

    # The device's topics (DESIGN §2), made when used rather than kept: five strings per
    # declared device, most of which sleep for hours between uses.
    @property
    def state_topic(self) -> str:
        return f"{self.prefix}/{self.device.id}/state"

    @property
    def availability_topic(self) -> str:
        return f"{self.prefix}/{self.device.id}/availability"

    @property
    def set_topic(self) -> str:
        return f"{self.prefix}/{self.device.id}/set"

    @property
    def result_topic(self) -> str:
        return f"{self.prefix}/{self.device.id}/result"

    @property
    def pending_topic(self) -> str:
        return f"{self.prefix}/{self.device.id}/pending"

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def awake(self) -> bool:
        return self._client is not None and self._client.connected

    @property
    def takes_commands(self) -> bool:
        return self.device.schema is not None

    def _queue_policy(self) -> tuple[tuple[str, str], ...]:
        """How the broker should keep this device's command queue (gateway/broker/
        queue_policy.py; honoured because device sessions are trusted in-process clients):
        depth and overflow, coalescing of superseded commands, the default time-to-live, and
        where to report commands that will not be delivered (superseded, expired, dropped,
        rejected) and where to keep the retained list of commands still waiting; and the
        device's command schema, so that a command it could never carry out is refused
        before it is queued (gateway/broker/command_check.py).

        A clean device has no queue while it is away, but commands reach it while it is
        connected: they are checked all the same."""
        policy = self.device.policy
        schema = self.device.schema
        checked = () if schema is None else (("queue-schema", schema.text),)
        if not policy.persistent:
            return (*checked, ("queue-notify-topic", self.result_topic)) if checked else ()
        return (
            ("queue-max-messages", str(policy.queue_depth)),
            ("queue-overflow", policy.overflow),
            ("queue-coalesce", "json-keys" if policy.coalesce else "off"),
            ("queue-default-expiry", str(policy.command_ttl)),
            ("queue-notify-topic", self.result_topic),
            ("queue-pending-topic", self.pending_topic),
            *checked,
        )

    async def wake(self) -> None:
        """The device is reachable: connect its session, let queued commands flow."""
        async with self._lock:
            self.seen()
            if self.awake:
                return
            await self._close_status()
            policy = self.device.policy
            client = MQTTClient(self.connector, self._on_command)
            ack = await client.connect(
                self.client_id,
                clean_start=not policy.persistent,
                session_expiry=policy.session_expiry if policy.persistent else 0,
                will=Will(self.availability_topic, OFFLINE, qos=1, retain=True),
                keep_alive=self.keep_alive,
                receive_maximum=1,
                user_properties=self._queue_policy(),
            )
            self._client = client
            try:
                # An existing session keeps its subscription; subscribing again would also
                # replay a retained command (retain handling 0) on every wake. A clean
                # session that takes commands gets them only while it is connected.
                persistent_new = policy.persistent and not ack.session_present
                if persistent_new or (not policy.persistent and self.takes_commands):
                    codes = await client.subscribe(self.set_topic, qos=1)
                    if codes[0] >= 0x80:
                        raise MQTTClientError(f"subscribe to {self.set_topic} refused: {codes}")
                await client.publish(self.availability_topic, ONLINE, qos=1, retain=True)
            except BaseException:
                await client.close()
                self._client = None
                raise
            self.offline = False

    async def prime(self, *, announce: bool = True) -> bool:
        """Make sure the broker session and its subscription exist, without running commands.

        For a persistent device known from config but not reachable yet: commands sent before
        its first wake must already have a session to wait in. The connection asks the broker
        to hold the queue (none is handed over: a command in flight could no longer be
        superseded), and a command that comes anyway is refused, left unacknowledged.
        Publishes ``online`` (a device that is expected to wake can take commands) unless
        `announce` is False (a policy change renews the session: availability stays).
        Returns whether the session already existed.
        """
        if not self.device.policy.persistent:
            return False
        async with self._lock:
            if self.awake:
                return True

            async def not_now(message: Publish) -> bool:
                return False

            policy = self.device.policy
            client = MQTTClient(self.connector, not_now)
            ack = await client.connect(
                self.client_id,
                clean_start=False,
                session_expiry=policy.session_expiry,
                keep_alive=self.keep_alive,
                receive_maximum=1,
                # Take nothing into flight (gateway/broker/queue_policy.py HOLD): a command
                # in flight could no longer be superseded by a newer one.
                user_properties=(*self._queue_policy(), ("queue-hold", "1")),
            )
            try:
                if not ack.session_present:
                    await client.subscribe(self.set_topic, qos=1)
                if announce:
                    await client.publish(self.availability_topic, ONLINE, qos=1, retain=True)
            finally:
                await client.disconnect()
            if announce:
                self.offline = False
            return ack.session_present

    async def sleep(self) -> None:
        """The device went to sleep on schedule: disconnect cleanly, stay ``online``.

        Commands published from now on wait in the broker session (persistent policy).
        """
        async with self._lock:
            client, self._client = self._client, None
            if client is None:
                return
            await self._flush_reports()
            await client.disconnect()

    async def go_offline(self) -> None:
        """The device is gone (unreachable, removed): publish ``offline`` and disconnect."""
        async with self._lock:
            client, self._client = self._client, None
            if client is not None and client.connected:
                await self._flush_reports()
                # The broker publishes the will ("offline", retained) for us.
                await client.disconnect(DISCONNECT_WITH_WILL)
            else:
                await self._publish_status(self.availability_topic, OFFLINE, retain=True)
            self.offline = True

    async def close(self) -> None:
        """Gateway shutdown: leave availability as it is, drop both links."""
        async with self._lock:
            client, self._client = self._client, None
            if client is not None:
                await self._flush_reports()
                await client.disconnect()
            await self._close_status()

    def seen(self) -> None:
        """The device was heard from (an advertisement, a reply): it is on schedule."""
        now = self.clock()
        # Advertisements and replies within one wake window are one wake-up, not many.
        if self._heard_at is None:
            self._heard_at = now
        elif now - self.last_seen >= _SAME_WAKE:
            self.observed_interval = now - self._heard_at
            self._heard_at = now
        self.last_seen = now

    async def back_online(self) -> None:
        """Heard from again after being marked offline: publish ``online``."""
        self.seen()
        if self.offline and not self.awake:
            await self._publish_status(self.availability_topic, ONLINE, retain=True)
            self.offline = False

    async def check_presence(self) -> bool:
        """Mark a sleeping device ``offline`` once it missed too many wake-ups.

        A reporting sensor (clean session) stays connected between readings, so for it too
        only the time since it was last heard counts; its next reading brings it back.
        Returns True when this call published ``offline``. Call it periodically.
        """
        interval = self.device.policy.wake_interval
        if interval is None or self.offline:
            return False
        if self.awake and self.device.policy.persistent:
            return False  # in a wake window or connected: it is here
        if self.clock() - self.last_seen <= interval * self.missed_wakes:
            return False
        log.info("%s missed %d wake-ups: offline", self.device.id, self.missed_wakes)
        await self.go_offline()
        return True

    async def wait_quiet(self, quiet: float = 0.2, timeout: float = 10.0) -> bool:
        """Wait until no command has been running or arriving for ``quiet`` seconds.

        This is how a wake window knows the queue is drained: the broker sends the next
        command as soon as the previous one is acknowledged. False if ``timeout`` ran out.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self._activity is None:
            self._activity = asyncio.Event()
        activity = self._activity
        while True:
            activity.clear()
            left = deadline - loop.time()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(activity.wait(), min(quiet, left))
            except TimeoutError:
                if not self._busy and not self._reports:
                    return True

    def attempts(self, payload: bytes, correlation_data: bytes | None) -> int:
        """Failed delivery attempts so far of the command with this payload (admin API)."""
        return self._attempts.get((payload, correlation_data), 0)

    # --- publishing ---------------------------------------------------------------------------

    async def publish_state(self, values: dict[str, object]) -> None:
        """Publish the device's latest readings (retained, with ``ts``).

        At QoS 0: a reading is replaced by the next one, and the broker then stores the
        retained state without a commit of its own (no fsync per reading on an SD card);
        a crash loses at most the last reading of a second, never a command.
        """
        self.seen()
        payload = _json({**values, "ts": round(self.clock(), 3)})
        client = self._client
        if client is not None and client.connected:
            await client.publish(self.state_topic, payload, qos=0, retain=True)
        else:
            # Waking the session would start command delivery, which must wait until the
            # device is connectable; a separate clean link carries the reading meanwhile.
            await self._publish_status(self.state_topic, payload, retain=True, qos=0)
            if self.offline:
                # Heard from again after missing its wake-ups: it is back.
                await self._publish_status(self.availability_topic, ONLINE, retain=True)
                self.offline = False

    async def _publish_status(
        self, topic: str, payload: bytes, *, retain: bool, qos: int = 1
    ) -> None:
        if self._status is None or not self._status.connected:
            status = MQTTClient(self.connector)
            await status.connect(f"{self.client_id}.status", keep_alive=self.keep_alive)
            self._status = status
        await self._status.publish(topic, payload, qos=qos, retain=retain)

    async def _close_status(self) -> None:
        status, self._status = self._status, None
        if status is not None:
            await status.disconnect()

    # --- commands -----------------------------------------------------------------------------

    def _poke(self) -> None:
        if self._activity is not None:  # else nobody waits: wait_quiet clears it first anyway
            self._activity.set()

    async def _on_command(self, message: Publish) -> bool:
        """Execute one command; True (acknowledge) only once the device confirmed it."""
        self._busy = True
        self._poke()
        try:
            return await self._execute(message)
        finally:
            self._busy = False
            self._poke()

    async def _execute(self, message: Publish) -> bool:
        if message.retain:
            # Only a retained message replayed at subscribe time arrives with retain set
            # (MQTT 5, retain-as-published off): a stale command, not one sent to us now.
            log.info("%s: ignoring a retained command on %s", self.device.id, message.topic)
            return True
        command = self._command_of(message)
        if command is None:
            return True  # nothing to retry: the same bytes would fail again
        key = (message.payload, message.properties.correlation_data)
        try:
            await self.adapter.execute(command)
        except DeviceUnreachable as exc:
            self.last_error = f"unreachable: {exc}"
            log.info("%s: command %s waits: %s", self.device.id, command, exc)
            return False  # not an attempt: it comes again at the next wake
        except InvalidCommand as exc:
            log.warning("%s: command %s refused: %s", self.device.id, command, exc)
            self._attempts.pop(key, None)
            self._report(
                message,
                {"result": "failed", "reason": "invalid", "detail": str(exc), "command": command},
            )
            return True  # nothing to retry: the device can never carry it out
        except Exception as exc:
            return self._attempt_failed(message, command, key, exc)
        attempts = self._attempts.pop(key, 0) + 1
        self.seen()
        self.delivered += 1
        self._report(message, {"result": "delivered", "command": command, "attempts": attempts})
        return True

    def _command_of(self, message: Publish) -> dict[str, object] | None:
        """The command object of `message`; None (and a ``failed`` report) if it is none."""
        try:
            command = json.loads(message.payload)
        except (ValueError, UnicodeDecodeError):
            command = None
        if isinstance(command, dict):
            return command
        self._report(
            message,
            {
                "result": "failed",
                "reason": "invalid",
                "detail": "a command must be a JSON object",
                "payload": message.payload.decode("utf-8", "replace"),
            },
        )
        return None

    def _attempt_failed(
        self,
        message: Publish,
        command: dict[str, object],
        key: tuple[bytes, bytes | None],
        exc: Exception,
    ) -> bool:
        """Count a failed attempt; True (acknowledge) once the policy's attempts are used up."""
        self.failed_attempts += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        attempts = self._attempts.pop(key, 0) + 1
        if attempts >= self.device.policy.max_attempts:
            log.warning(
                "%s: command %s failed %d times (%s); giving up",
                self.device.id,
                command,
                attempts,
                self.last_error,
            )
            self._report(
                message,
                {
                    "result": "failed",
                    "reason": "max_attempts",
                    "detail": self.last_error,
                    "attempts": attempts,
                    "command": command,
                },
            )
            return True  # acknowledged: it leaves the queue for good
        self._attempts[key] = attempts
        while len(self._attempts) > _MAX_TRACKED:
            del self._attempts[next(iter(self._attempts))]
        log.warning(
            "%s: command %s not confirmed (%s); it stays queued",
            self.device.id,
            command,
            self.last_error,
        )
        return False

    def _report(self, message: Publish, outcome: dict[str, object]) -> None:
        # A task, so that it runs after the handler returned and the PUBACK is written:
        # "delivered" is never announced for a command the broker may still redeliver.
        client = self._client
        if client is None:
            return
        outcome["ts"] = round(self.clock(), 3)
        task = asyncio.get_running_loop().create_task(self._send_report(client, message, outcome))
        if self._reports is None:
            self._reports = set()
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _send_report(
        self, client: MQTTClient, message: Publish, outcome: dict[str, object]
    ) -> None:
        payload = _json(outcome)
        try:
            await client.publish(self.result_topic, payload, qos=1)
            response_topic = message.properties.response_topic
            if response_topic:
                props = Properties(correlation_data=message.properties.correlation_data)
                await client.publish(response_topic, payload, qos=1, properties=props)
        except ConnectionClosed:
            log.info("%s: link closed before the result was published", self.device.id)
        except MQTTClientError as exc:
            log.warning("%s: result not published: %s", self.device.id, exc)
        finally:
            self._poke()

    async def _flush_reports(self) -> None:
        if self._reports:
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._reports)
