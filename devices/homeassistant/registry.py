"""Home Assistant's device registry: who makes a device, how it ties to Home Assistant's
own integrations, and who publishes its configs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from devices.homeassistant.entity import DeviceFacts, Origin
from devices.model import Device

ORIGIN_NAME = "edge-gateway"

# Manufacturer and model per device kind, until (or unless) the device tells better. The eQ-3
# thermostat never tells: its GATT service has no device information; BTHome adverts carry a
# firmware version at most. Shelly and WLED say it over HTTP (`DeviceFacts`).
_KIND_INFO: dict[str, tuple[str, str]] = {
    "bthome": ("BTHome", "BTHome v2 sensor"),
    "eq3": ("eQ-3", "CC-RT-BLE-EQ"),
    "shelly": ("Shelly", "Shelly Gen2+ device"),
    "wled": ("WLED", "WLED controller"),
}
# Kinds whose `Device.address` is a Bluetooth address (the device registry's `bluetooth`
# connection, the one Home Assistant's own Bluetooth integrations use).
_BLE_KINDS = frozenset({"bthome", "eq3", "gatt", "sleepy", "thermostat", "switchbot"})

GATEWAY_MANUFACTURER = "edge-gateway"
GATEWAY_MODEL = "MQTT broker and BLE/LAN bridge"


def _mac(text: str) -> str | None:
    """A MAC address as the device registry writes it (``aa:bb:cc:dd:ee:ff``), from any of the
    spellings devices report (Shelly: ``A8032AB12345``); None if it is not one."""
    digits = re.sub(r"[^0-9A-Fa-f]", "", text)
    if len(digits) != 12 or len(re.sub(r"[:.-]", "", text)) != 12:
        return None
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2)).lower()


def _connections(device: Device, facts: DeviceFacts | None) -> list[list[str]]:
    """Ties to Home Assistant's other integrations: a device seen by its own Bluetooth or
    network integration too is one device in the registry, not two."""
    if device.kind in _BLE_KINDS and device.address and (ble := _mac(device.address)):
        return [["bluetooth", ble]]
    if facts is not None and facts.mac and (mac := _mac(facts.mac)):
        return [["mac", mac]]
    return []


def device_payload(
    device: Device, gateway_id: str, facts: DeviceFacts | None, found: Mapping[str, str]
) -> dict[str, Any]:
    manufacturer, model = _KIND_INFO.get(device.kind, ("unknown", device.kind))
    block: dict[str, Any] = {
        "identifiers": [f"{gateway_id}_{device.id}"],
        "name": device.name or device.id,
        "manufacturer": (facts.manufacturer if facts else None) or manufacturer,
        "model": (facts.model if facts else None) or model,
    }
    sw_version = (facts.sw_version if facts else None) or found.get("sw_version")
    if sw_version:
        block["sw_version"] = sw_version
    connections = _connections(device, facts)
    if connections:
        block["connections"] = connections
    block["via_device"] = gateway_id
    return block


def origin_block(origin: Origin | None) -> dict[str, str]:
    out = {"name": ORIGIN_NAME}
    if origin is not None and origin.sw_version:
        out["sw_version"] = origin.sw_version
    if origin is not None and origin.support_url:
        out["support_url"] = origin.support_url
    return out
