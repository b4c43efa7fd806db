"""The seam between BLE device logic and the Bluetooth stack.

Everything above this line (parsers, decoders, device sessions) sees only `Advertisement`s
delivered through a `Radio` and GATT sessions opened by a `Link`; only devices.ble.scanner and
devices.ble.link talk to bleak. Unit tests drive the layers above with fakes of these protocols;
integration tests put the real bleak (and a fake BlueZ) behind them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Literal, Protocol

BTHOME_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"


@dataclass(frozen=True, slots=True)
class Advertisement:
    """One received advertisement (or scan response), as the stack reported it.

    `address` is upper case "AA:BB:CC:DD:EE:FF"; `service_data` keys are full 128-bit UUID
    strings in lower case; `ts` is `time.monotonic()` at reception.
    """

    address: str
    name: str | None
    rssi: int
    service_data: dict[str, bytes] = field(default_factory=dict)
    manufacturer_data: dict[int, bytes] = field(default_factory=dict)
    connectable: bool = True
    ts: float = 0.0


AdvertisementCallback = Callable[[Advertisement], None]


class Radio(Protocol):
    """Something that delivers advertisements until stopped."""

    async def start(self, callback: AdvertisementCallback) -> None:
        """Start delivering advertisements to `callback`; must not raise for a missing adapter."""
        ...

    async def stop(self) -> None:
        """Stop delivering advertisements and release the stack's resources."""
        ...


LinkErrorKind = Literal["not_found", "timeout", "connect_failed", "gatt", "disconnected"]


class LinkError(Exception):
    """A GATT operation that did not happen; `kind` decides how (and whether) to retry.

    not_found: the stack does not know the device (asleep / out of range) - wait for its next
    advertisement; timeout / connect_failed: the connection was not made - retry with backoff;
    gatt: the device rejected the operation - retrying the same bytes is unlikely to help;
    disconnected: the link dropped mid-operation - retry on the next wake.
    """

    def __init__(self, kind: LinkErrorKind, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind: LinkErrorKind = kind


class GattSession(Protocol):
    """An open connection to one device."""

    @property
    def connected(self) -> bool: ...

    async def write(self, char_uuid: str, data: bytes, *, response: bool = True) -> None: ...

    async def read(self, char_uuid: str) -> bytes: ...

    async def subscribe(self, char_uuid: str) -> asyncio.Queue[bytes]: ...


class Link(Protocol):
    """Opens GATT connections; `connect` is an async context manager that disconnects."""

    def connect(
        self, address: str, *, timeout: float = 10.0
    ) -> AbstractAsyncContextManager[GattSession]: ...
