"""Sleepy BLE command devices: commands wait in the broker, run in the device's wake window.

A battery thermostat or a SwitchBot sleeps most of the time and is connectable only briefly
after it advertises. Its persistent broker session is its command queue (DESIGN §3); this
module decides when to open that queue and carries the commands over GATT:

* :class:`SleepyDevice` watches the device's advertisements. When one is connectable and the
  device has commands waiting (its retained pending list, kept by the broker, says so), it
  opens a *wake window*: the device session connects, the broker hands over the queue one
  command at a time, and the window closes once the queue has been quiet for a moment, or at
  the window's deadline. A window that failed (no connection, a write the device refused)
  delays the next one with exponential backoff, so a device that is in range but misbehaves
  is not hammered at every advertisement.
* :class:`GattAdapter` executes one command: the device family's pure plan
  (devices/ble/gatt_ops.py) becomes writes over one GATT connection, opened at the first
  command of a window and shared by the rest, each write confirmed by a notification or a
  read-back when the family says how. Only then does the device session acknowledge the
  command; a command that was not confirmed stays in flight and comes again next window.

A connection that could not be made never touched the device, so it is not counted as a
delivery attempt (`devices.model.DeviceUnreachable`): the command waits for the next wake, or
its time-to-live. A write that failed is an attempt; after the policy's ``max_attempts`` the
command is answered ``failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from devices.ble.gatt_ops import Confirmation, GattProfile, GattStep
from devices.ble.radio import Advertisement, GattSession, Link, LinkError, LinkErrorKind
from devices.model import DeviceUnreachable
from devices.session import DeviceSession
from gateway.client.mqtt import MQTTClientError

log = logging.getLogger(__name__)

StateCallback = Callable[[dict[str, object]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class WakeSettings:
    """Timing of wake windows (seconds)."""

    connect_timeout: float = 10.0
    window: float = 30.0  # a window closes at this deadline even if commands keep coming
    quiet: float = 0.3  # the queue counts as drained after this long without a command
    # Ask a device that can be asked (GattProfile.refresh) for its state when it last reported
    # longer ago than this: a thermostat nobody commands would otherwise never show its state.
    refresh_interval: float = 3600.0
    backoff_min: float = 2.0
    backoff_max: float = 300.0

    def backoff(self, failures: int, kind: LinkErrorKind | None) -> float:
        """Pause before the next window after ``failures`` failed windows in a row.

        A device that refused a write (``gatt``) is unlikely to accept the same bytes a
        second later: its pauses start four times longer than those of a missed connection.
        """
        base = self.backoff_min * (4 if kind == "gatt" else 1)
        return float(min(self.backoff_max, base * 2 ** max(0, failures - 1)))


class GattAdapter:
    """Runs commands over the GATT connection of the current wake window."""

    # Slots, as in DeviceSession: one per declared device.
    __slots__ = (
        "_gatt",
        "_news",
        "_publishing",
        "_pumps",
        "_received",
        "_stack",
        "address",
        "clock",
        "connect_timeout",
        "last_error",
        "link",
        "on_state",
        "profile",
        "state_at",
        "writes",
    )

    def __init__(
        self,
        profile: GattProfile,
        link: Link,
        address: str,
        *,
        connect_timeout: float = 10.0,
        on_state: StateCallback | None = None,
    ) -> None:
        self.profile = profile
        self.link = link
        self.address = address
        self.connect_timeout = connect_timeout
        self.on_state = on_state
        self.writes = 0
        self.last_error: LinkErrorKind | None = None  # the window's last failure, by kind
        self.clock: Callable[[], float] = time.monotonic
        self.state_at: float | None = None  # clock() when the device last reported its state
        self._stack: contextlib.AsyncExitStack | None = None
        self._gatt: GattSession | None = None
        # Made by the first confirmation that waits (a notification sets it, and a wait
        # clears it first): an Event costs a deque (~600 B) per declared device from the start.
        self._news: asyncio.Event | None = None
        # These three exist only while a wake window has use for them: empty, they cost
        # 340 B per declared device that sleeps almost all the time.
        self._received: dict[str, list[bytes]] | None = None  # notifications, per char
        self._pumps: list[asyncio.Task[None]] | None = None
        self._publishing: set[asyncio.Task[None]] | None = None

    @property
    def connected(self) -> bool:
        return self._gatt is not None and self._gatt.connected

    async def execute(self, command: dict[str, object]) -> None:
        steps = self.profile.plan(command)  # InvalidCommand: refused before any radio work
        await self._run(await self._connection(), steps)

    async def refresh(self) -> None:
        """Have the device report its state (its notification is published as state)."""
        steps = self.profile.refresh()
        if steps:
            await self._run(await self._connection(), steps)

    async def _run(self, gatt: GattSession, steps: list[GattStep]) -> None:
        for step in steps:
            notify = step.confirm.notify if step.confirm is not None else None
            seen = len(self._notifications(notify)) if notify is not None else 0
            try:
                await gatt.write(step.char, step.data, response=step.response)
                self.writes += 1
                if step.confirm is not None:
                    await self._confirm(gatt, step.confirm, seen)
            except LinkError as exc:
                self.last_error = exc.kind
                if exc.kind == "disconnected":
                    await self.close()
                raise

    async def _connection(self) -> GattSession:
        if self._gatt is not None and self._gatt.connected:
            return self._gatt
        await self.close()
        stack = contextlib.AsyncExitStack()
        try:
            gatt = await stack.enter_async_context(
                self.link.connect(self.address, timeout=self.connect_timeout)
            )
            for char in self.profile.notify_chars:
                queue = await gatt.subscribe(char)
                if self._received is None:
                    self._received = {}
                self._received[char] = []
                if self._pumps is None:
                    self._pumps = []
                self._pumps.append(asyncio.create_task(self._pump(char, queue)))
        except LinkError as exc:
            self.last_error = exc.kind
            await self._unwind(stack)
            # Nothing reached the device: the command waits for the next wake uncounted.
            raise DeviceUnreachable(str(exc)) from exc
        except BaseException:
            await self._unwind(stack)
            raise
        self._stack, self._gatt = stack, gatt
        return gatt

    async def _unwind(self, stack: contextlib.AsyncExitStack) -> None:
        pumps, self._pumps = self._pumps, None
        for pump in pumps or ():
            pump.cancel()
        with contextlib.suppress(Exception):
            await stack.aclose()

    def _notifications(self, char: str) -> list[bytes]:
        """What ``char`` notified in this window (a list kept, and made if need be)."""
        if self._received is None:
            self._received = {}
        return self._received.setdefault(char, [])

    async def _pump(self, char: str, queue: asyncio.Queue[bytes]) -> None:
        while True:
            data = await queue.get()
            self._notifications(char).append(data)
            if self._news is not None:
                self._news.set()
            values = self.profile.state(data)
            if values:
                self.state_at = self.clock()
                if self.on_state is not None:
                    # Its own task: the confirmation this notification brings may end the
                    # window (and this pump) before the state is published.
                    task = asyncio.get_running_loop().create_task(self._publish(values))
                    if self._publishing is None:
                        self._publishing = set()
                    self._publishing.add(task)
                    task.add_done_callback(self._publishing.discard)

    async def _publish(self, values: dict[str, object]) -> None:
        assert self.on_state is not None
        try:
            await self.on_state(values)
        except (MQTTClientError, OSError) as exc:
            log.warning("%s: state not published: %s", self.address, exc)

    async def _confirm(self, gatt: GattSession, confirm: Confirmation, seen: int) -> None:
        if confirm.read is not None:
            value = await gatt.read(confirm.read)
            if not confirm.accept(value):
                raise LinkError("gatt", f"read-back of {confirm.read} is {value.hex()}")
            return
        assert confirm.notify is not None
        received = self._notifications(confirm.notify)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + confirm.timeout
        while True:
            # Only what arrived after the write can confirm it.
            while seen < len(received):
                seen += 1
                if confirm.accept(received[seen - 1]):
                    return
            left = deadline - loop.time()
            if left <= 0 or not gatt.connected:
                kind: LinkErrorKind = "timeout" if gatt.connected else "disconnected"
                raise LinkError(kind, f"no confirmation on {confirm.notify} within "
                                f"{confirm.timeout:g} s")  # fmt: skip
            if self._news is None:
                self._news = asyncio.Event()
            self._news.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._news.wait(), min(left, 0.5))

    async def close(self) -> None:
        """End the window's connection (the device goes back to sleep)."""
        stack, self._stack, self._gatt = self._stack, None, None
        if stack is not None:
            await self._unwind(stack)
            self._received = None  # the next window subscribes afresh
        publishing, self._publishing = self._publishing, None
        if publishing:
            await asyncio.wait(set(publishing), timeout=10)


class SleepyDevice:
    """Opens wake windows for one sleepy device when it advertises and has commands waiting."""

    # Slots, as in DeviceSession: one per declared device.
    __slots__ = (
        "_heard",
        "_not_before",
        "_task",
        "adapter",
        "can_refresh",
        "clock",
        "failures",
        "last_window",
        "pending",
        "session",
        "settings",
        "windows",
    )

    def __init__(
        self,
        session: DeviceSession,
        adapter: GattAdapter,
        settings: WakeSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session = session
        self.adapter = adapter
        self.settings = settings or WakeSettings()
        self.clock = clock
        adapter.clock = clock
        self.can_refresh = bool(adapter.profile.refresh())
        # Commands the broker holds for the device, from its retained pending list; None until
        # the list is first seen (then one window finds out).
        self.pending: int | None = None
        self.windows = 0
        self.failures = 0  # failed windows in a row
        self.last_window: float | None = None  # clock() when the last window ended
        self._not_before = 0.0
        self._task: asyncio.Task[None] | None = None
        self._heard: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    def pending_changed(self, count: int) -> None:
        self.pending = count

    def refresh_due(self) -> bool:
        state_at = self.adapter.state_at
        return self.can_refresh and (
            state_at is None or self.clock() - state_at >= self.settings.refresh_interval
        )

    def advertised(self, advertisement: Advertisement) -> asyncio.Task[None] | None:
        """An advertisement from the device: it is awake for a moment. Returns the window's
        task when one was opened."""
        self.session.seen()
        if self.session.offline and (self._heard is None or self._heard.done()):
            # It had missed its wake-ups and was marked offline: it is back.
            self._heard = asyncio.get_running_loop().create_task(self.session.back_online())
        if not advertisement.connectable or self.busy:
            return None
        if self.pending == 0 and not self.refresh_due():
            return None
        if self.clock() < self._not_before:
            return None
        self._task = asyncio.get_running_loop().create_task(
            self._window(), name=f"wake-{self.session.device.id}"
        )
        return self._task

    async def _window(self) -> None:
        settings = self.settings
        self.windows += 1
        self.adapter.last_error = None
        failures = self.session.failed_attempts
        device_id = self.session.device.id
        try:
            if self.pending != 0:
                await self.session.wake()
                drained = await self.session.wait_quiet(settings.quiet, settings.window)
                if not drained:
                    log.info("%s: wake window closed at its %g s deadline", device_id,
                             settings.window)  # fmt: skip
            # No command brought a status report along, and the device is not misbehaving.
            if self.adapter.last_error is None and self.refresh_due():
                await self.adapter.refresh()
        except (LinkError, DeviceUnreachable) as exc:
            log.info("%s: state not refreshed: %s", device_id, exc)
        except MQTTClientError as exc:
            log.warning("%s: wake window not opened: %s", device_id, exc)
        finally:
            await self.adapter.close()
            with contextlib.suppress(MQTTClientError):
                await self.session.sleep()
            self.last_window = self.clock()
        kind = self.adapter.last_error
        if kind is None and self.session.failed_attempts == failures:
            self.failures = 0
            self._not_before = 0.0
            return
        self.failures += 1
        pause = settings.backoff(self.failures, kind)
        self._not_before = self.clock() + pause
        log.info("%s: wake window failed (%s); next one in %g s at the earliest",
                 self.session.device.id, kind or "command not confirmed", pause)  # fmt: skip

    async def stop(self) -> None:
        for task in (self._task, self._heard):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, MQTTClientError):
                    await task
        await self.adapter.close()
