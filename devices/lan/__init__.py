"""LAN devices: mDNS discovery (real zeroconf) and HTTP drivers for Shelly Gen2+ and WLED."""

from devices.lan.discovery import DEFAULT_SERVICE_TYPES, LanDeviceInfo, LanDiscovery, device_id
from devices.lan.http import (
    CommandRejected,
    DeviceAuthRequired,
    DeviceDetails,
    DeviceHTTPError,
    DeviceUnreachable,
    LanDeviceError,
)
from devices.lan.shelly import ShellyGen2, ShellyRpcError
from devices.lan.wled import Wled, WledError

DRIVERS: dict[str, type[ShellyGen2] | type[Wled]] = {"shelly": ShellyGen2, "wled": Wled}

__all__ = [
    "DEFAULT_SERVICE_TYPES",
    "DRIVERS",
    "CommandRejected",
    "DeviceAuthRequired",
    "DeviceDetails",
    "DeviceHTTPError",
    "DeviceUnreachable",
    "LanDeviceError",
    "LanDeviceInfo",
    "LanDiscovery",
    "ShellyGen2",
    "ShellyRpcError",
    "Wled",
    "WledError",
    "device_id",
]
