"""The ids of demo mode's simulated devices (devices/demo/).

Config checks that no declared device takes one of them (``run --demo``), so they live here,
where the config loader can see them without importing the device layer.
"""

from __future__ import annotations

from collections.abc import Iterable

SENSOR_ID = "demo-sensor"
THERMOSTAT_ID = "demo-thermostat"
PLUG_ID = "demo-plug"
DEMO_IDS = (SENSOR_ID, THERMOSTAT_ID, PLUG_ID)


def clashing_ids(ids: Iterable[str]) -> list[str]:
    """The ids among `ids` that the demo's devices use."""
    return [device_id for device_id in ids if device_id in DEMO_IDS]
