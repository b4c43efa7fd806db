"""What ties a LAN driver to its device session: the adapter that runs commands on it, the
state source its poller reads, and the supervisor's record of one LAN device."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from devices.lan.poller import StatePoller
from devices.lan.shelly import ShellyGen2
from devices.lan.wled import Wled
from devices.session import DeviceSession


class DriverAdapter:
    """Runs commands on a LAN driver and has the poller read the result back soon."""

    def __init__(
        self,
        driver: ShellyGen2 | Wled,
        poller: StatePoller | None = None,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self.driver = driver
        self.poller = poller
        self.on_failure = on_failure

    async def execute(self, command: dict[str, object]) -> None:
        try:
            await self.driver.execute(command)
        except Exception:
            if self.on_failure is not None:
                self.on_failure()
            raise
        if self.poller is not None:
            self.poller.poll_soon()


class StateSource:
    """The driver as the poller sees it (its protocol wants a plain ``label`` attribute)."""

    def __init__(self, driver: ShellyGen2 | Wled) -> None:
        self.driver = driver
        self.label = driver.label

    async def get_state(self) -> dict[str, Any]:
        return await self.driver.get_state()


@dataclass
class LanDevice:
    session: DeviceSession
    driver: ShellyGen2 | Wled
    poller: StatePoller
    host: str
    port: int
    known: bool
    # Serialises reachability changes: a wake must not overtake the go_offline before it.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    retry: asyncio.Task[None] | None = None
