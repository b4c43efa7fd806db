"""GATT connections through bleak: connect, read/write characteristics, disconnect.

A sleepy device is reachable only briefly after it advertises, so the connection uses the
`BLEDevice` the shared scanner has just seen (no second discovery session) and every failure
comes back as a `LinkError` whose kind tells the command queue how to retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from bleak import BleakClient
from bleak.args.bluez import BlueZClientArgs
from bleak.backends.device import BLEDevice
from bleak.exc import BleakDeviceNotFoundError, BleakError

from devices.ble.radio import LinkError
from devices.ble.scanner import BleakRadio

log = logging.getLogger(__name__)


class BleakGattSession:
    """A `GattSession` over a connected `BleakClient`."""

    def __init__(self, client: BleakClient, address: str) -> None:
        self._client = client
        self.address = address

    @property
    def connected(self) -> bool:
        return self._client.is_connected

    async def write(self, char_uuid: str, data: bytes, *, response: bool = True) -> None:
        try:
            await self._client.write_gatt_char(char_uuid, data, response=response)
        except Exception as exc:
            error = self._link_error("write", char_uuid, exc)
            if error is None:
                raise
            raise error from exc

    async def read(self, char_uuid: str) -> bytes:
        try:
            return bytes(await self._client.read_gatt_char(char_uuid))
        except Exception as exc:
            error = self._link_error("read", char_uuid, exc)
            if error is None:
                raise
            raise error from exc

    async def subscribe(self, char_uuid: str) -> asyncio.Queue[bytes]:
        """Start notifications; each one lands in the returned queue until disconnect."""
        queue: asyncio.Queue[bytes] = asyncio.Queue()

        def received(_: object, data: bytearray) -> None:
            queue.put_nowait(bytes(data))

        try:
            await self._client.start_notify(char_uuid, received)
        except Exception as exc:
            error = self._link_error("subscribe", char_uuid, exc)
            if error is None:
                raise
            raise error from exc
        return queue

    def _link_error(self, what: str, char_uuid: str, exc: Exception) -> LinkError | None:
        text = f"{what} {char_uuid} on {self.address}: {exc}"
        if not self._client.is_connected:
            return LinkError("disconnected", text)
        if isinstance(exc, TimeoutError):
            return LinkError("timeout", text)
        if isinstance(exc, BleakError):  # rejected by BlueZ or the device, or no such char
            return LinkError("gatt", text)
        return None  # a bug, not a radio condition: surface it unchanged


class BleakLink:
    """A `Link` that connects with bleak, preferably to a device the radio has just seen."""

    def __init__(self, radio: BleakRadio | None = None, *, adapter: str | None = None) -> None:
        self.radio = radio
        self.adapter = adapter

    @contextlib.asynccontextmanager
    async def connect(
        self, address: str, *, timeout: float = 10.0
    ) -> AsyncIterator[BleakGattSession]:
        address = address.upper()
        target: BLEDevice | str = address
        if self.radio is not None:
            seen = self.radio.ble_device(address)
            if seen is None:
                # Not heard since the scanner started: asleep or away. Scanning for it here
                # would start a second discovery session; its next advertisement is the cue.
                raise LinkError("not_found", f"{address} has not been seen by the scanner")
            target = seen
        bluez: BlueZClientArgs = {}
        if self.adapter is not None:
            bluez["adapter"] = self.adapter
        client = BleakClient(target, timeout=timeout, bluez=bluez)
        try:
            await client.connect()
        except BleakDeviceNotFoundError as exc:
            raise LinkError("not_found", f"{address}: {exc}") from exc
        except TimeoutError as exc:
            raise LinkError("timeout", f"connecting to {address} took over {timeout:g} s") from exc
        except BleakError as exc:
            raise LinkError("connect_failed", f"{address}: {exc}") from exc
        try:
            yield BleakGattSession(client, address)
        finally:
            try:
                await client.disconnect()
            except (BleakError, TimeoutError) as exc:
                # The link may already be gone (the device went back to sleep): nothing to undo.
                log.debug("disconnecting %s: %s", address, exc)

    async def write(
        self,
        address: str,
        char_uuid: str,
        data: bytes,
        *,
        response: bool = True,
        timeout: float = 10.0,
    ) -> None:
        """One write in its own connection: connect, write, disconnect."""
        async with self.connect(address, timeout=timeout) as session:
            await session.write(char_uuid, data, response=response)
