"""The records discovery is made of (entities, device facts, origin) and the topics and names
Home Assistant derives from them.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Any

from devices.model import Device

Message = tuple[str, bytes]

TARGET_TEMP = "target_temp"  # the setpoint key of DESIGN §2's command example
DIAGNOSTIC = "diagnostic"

# Keys in a state object that are bookkeeping, not readings.
SKIP_KEYS = frozenset({"ts", "packet_id", "errors", "segments", "link"})

_TOPIC_LEVEL_OK = re.compile(r"[A-Za-z0-9_-]+")
_NOT_TOPIC_CHAR = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """What a device said about itself (Shelly.GetDeviceInfo, WLED /json/info, ...).

    ``effects`` and ``presets`` are a WLED's effect names (by index) and preset names (by id).
    """

    manufacturer: str | None = None
    model: str | None = None
    sw_version: str | None = None
    mac: str | None = None
    effects: tuple[str, ...] = ()
    presets: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Origin:
    """Who publishes the configs (`origin` in every payload); `support_url` only when the
    project declares a home page: Home Assistant rejects a payload whose URL is invalid."""

    sw_version: str | None = None
    support_url: str | None = None


@dataclass(frozen=True, slots=True)
class Entity:
    component: str  # sensor, binary_sensor, switch, light, cover, event, climate, select
    key: str  # unique within the device; the tail of unique_id and object_id
    config: dict[str, Any]  # the component-specific part of the discovery payload
    # The device's main feature (`name: null`): its entity id is the device's alone,
    # `climate.demo_thermostat` rather than `climate.demo_thermostat_climate`.
    main: bool = False


# --- topics and names -------------------------------------------------------------------------


def topic_level(text: str) -> str:
    """`text` as a node/object id (``[a-zA-Z0-9_-]`` only).

    Characters outside that class become ``_``; a short checksum of the original then keeps two
    ids that differ only in such characters (``a.b``, ``a:b``) on different topics.
    """
    if _TOPIC_LEVEL_OK.fullmatch(text):
        return text
    return f"{_NOT_TOPIC_CHAR.sub('_', text)}_{zlib.crc32(text.encode()):08x}"


def config_topic(
    component: str, device: Device, key: str, *, discovery_prefix: str, gateway_id: str
) -> str:
    """``<discovery_prefix>/<component>/<gateway>_<device>/<key>/config``.

    The node is the device as this gateway sees it: two gateways never overwrite each other's
    configs, and since the key is a level of its own, device ``a`` with key ``b_c`` and device
    ``a_b`` with key ``c`` cannot meet on one topic.
    """
    node = topic_level(f"{gateway_id}_{device.id}")
    return f"{discovery_prefix}/{component}/{node}/{topic_level(key)}/config"


def slug(text: str) -> str:
    """`text` as the object part of an entity id (``[a-z0-9_]``, no leading, trailing or double
    underscores), as Home Assistant's slugify makes it for ASCII text."""
    out = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return out or "unnamed"
