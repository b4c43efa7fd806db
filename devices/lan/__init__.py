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
from devices.lan.static import identify, make_driver
from devices.lan.wled import Wled, WledError

__all__ = [
    "DEFAULT_SERVICE_TYPES",
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
    "identify",
    "make_driver",
]
