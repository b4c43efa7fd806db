"""Devices declared by host in config.yaml: no mDNS needed, the device says what it is.

`identify` asks the device itself (Shelly `Shelly.GetDeviceInfo`, WLED `/json/info`) and
returns the same `LanDeviceInfo` discovery would have produced, with the same id, so a device
that is both declared and discovered stays one device.
"""

from __future__ import annotations

import aiohttp

from devices.lan import shelly, wled
from devices.lan.discovery import LanDeviceInfo, device_id
from devices.lan.http import DEFAULT_TIMEOUT, DeviceUnreachable, LanDeviceError
from devices.lan.shelly import ShellyGen2
from devices.lan.wled import Wled
from gateway.commands.schema import CommandSchema

STATIC = "static"
KINDS = ("shelly", "wled")
# The commands each kind takes (devices/lan/shelly.py, wled.py).
LAN_SCHEMAS: dict[str, CommandSchema] = {
    "shelly": shelly.COMMAND_SCHEMA,
    "wled": wled.COMMAND_SCHEMA,
}


def make_driver(
    kind: str,
    host: str,
    port: int = 80,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    session: aiohttp.ClientSession | None = None,
) -> ShellyGen2 | Wled:
    if kind == "shelly":
        return ShellyGen2(host, port, timeout=timeout, session=session)
    if kind == "wled":
        return Wled(host, port, timeout=timeout, session=session)
    raise ValueError(f"unknown LAN device kind {kind!r} (known: {', '.join(KINDS)})")


async def identify(
    host: str,
    port: int = 80,
    *,
    kind: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> LanDeviceInfo:
    """Ask the device at host:port who it is; with `kind=None`, try each known API in turn.

    Raises DeviceUnreachable when nothing answers, or the last LanDeviceError when something
    answers but speaks none of the APIs.
    """
    kinds = KINDS if kind is None else (kind,)
    last: LanDeviceError | None = None
    for k in kinds:
        async with make_driver(k, host, port, timeout=timeout) as drv:
            try:
                details = await drv.get_info()
            except DeviceUnreachable:
                raise  # the next API would not get an answer either
            except LanDeviceError as exc:
                last = exc
                continue
        props = {"model": details.model}
        if details.sw_version:
            props["ver"] = details.sw_version
        if details.mac:
            props["mac"] = details.mac
        if k == "shelly":
            for key in ("gen", "app", "profile"):
                if details.raw.get(key) is not None:
                    props[key] = str(details.raw[key])
        return LanDeviceInfo(
            id=device_id(details.id),
            kind=k,
            name=details.name or details.id,
            host=host,
            port=port,
            properties=props,
            service_type=STATIC,
        )
    assert last is not None
    raise last
