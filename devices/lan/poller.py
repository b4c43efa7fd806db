"""Polling a LAN device: state changes and reachability, for the device session to act on.

mDNS tells when a device appears and leaves politely; a device that loses power sends no
goodbye, so reachability comes from the HTTP API itself. A device is declared unreachable
only after `misses` consecutive failed polls, so one dropped Wi-Fi packet does not
disconnect its session (and make its commands queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable
from typing import Any, Protocol

from devices.lan.http import DeviceUnreachable, LanDeviceError

log = logging.getLogger(__name__)


class StateSource(Protocol):
    label: str

    async def get_state(self) -> dict[str, Any]: ...


async def _call(callback: Callable[..., Any], *args: Any) -> None:
    try:
        result = callback(*args)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("LAN poller: callback failed")


class StatePoller:
    """Poll `driver.get_state()` every `interval` seconds.

    `on_state(state)` runs when the state differs from the last one reported (and after
    every return to reachability); `on_reachable(bool)` runs on each change of reachability,
    the first poll included. Callbacks may be plain or coroutine functions.
    """

    def __init__(
        self,
        driver: StateSource,
        *,
        interval: float,
        on_state: Callable[[dict[str, Any]], Any],
        on_reachable: Callable[[bool], Any],
        misses: int = 2,
    ) -> None:
        if interval <= 0 or misses < 1:
            raise ValueError("interval must be > 0 and misses >= 1")
        self.driver = driver
        self.interval = interval
        self.on_state = on_state
        self.on_reachable = on_reachable
        self.misses = misses
        self.reachable: bool | None = None
        self.last_state: dict[str, Any] | None = None
        self._failures = 0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def poll_soon(self) -> None:
        """Poll now instead of waiting for the interval (e.g. right after a command)."""
        self._wake.set()

    async def poll_once(self) -> dict[str, Any] | None:
        """One poll; returns the state, or None when the device did not answer."""
        async with self._lock:
            try:
                state = await self.driver.get_state()
            except DeviceUnreachable as exc:
                self._failures += 1
                if self._failures >= self.misses and self.reachable is not False:
                    log.info("LAN: %s unreachable (%s)", self.driver.label, exc.detail)
                    self.reachable = False
                    await _call(self.on_reachable, False)
                return None
            except LanDeviceError as exc:
                # It answered, so it is there; the error is about the request, not the link.
                log.warning("LAN: polling %s failed: %s", self.driver.label, exc)
                self._failures = 0
                return None
            self._failures = 0
            came_back = self.reachable is not True
            if came_back:
                self.reachable = True
                await _call(self.on_reachable, True)
            if came_back or state != self.last_state:
                self.last_state = state
                await _call(self.on_state, state)
            return state

    async def _run(self) -> None:
        while True:
            await self.poll_once()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
