"""Demo mode: simulated devices, so the gateway can be tried without any hardware.

`devices.demo.demo.start_demo` brings up three devices and hands back what the supervisor
needs to drive them through the same device sessions as real ones:

* ``demo-sensor``: a BTHome v2 thermometer (temperature around 21 °C, humidity, battery),
  advertising every few seconds through `DemoRadio`;
* ``demo-thermostat``: an eQ-3 radiator thermostat that sleeps, wakes every ~30 s for ~5 s
  (advertising, connectable) and carries out GATT writes through `DemoLink`: commands sent
  while it sleeps wait in its session and are delivered at its next wake;
* ``demo-plug``: a Shelly plug with one switch, a small HTTP server on 127.0.0.1.

Nothing leaves the machine: no radio is used and the plug listens on loopback only. This
module holds only what configuration checks need (the ids, the timings), so that importing it
pulls in neither aiohttp nor asyncio machinery.
"""

from __future__ import annotations

from dataclasses import dataclass

# The ids are shared with the config check (no declared device may take one).
from gateway.devicetypes.demo import DEMO_IDS as DEMO_IDS
from gateway.devicetypes.demo import PLUG_ID as PLUG_ID
from gateway.devicetypes.demo import SENSOR_ID as SENSOR_ID
from gateway.devicetypes.demo import THERMOSTAT_ID as THERMOSTAT_ID

# Locally administered addresses (second hex digit 2/6/A/E): no real device has them.
SENSOR_ADDRESS = "DE:4D:00:00:00:01"
THERMOSTAT_ADDRESS = "DE:4D:00:00:00:02"


@dataclass(frozen=True, slots=True)
class DemoTimings:
    """How fast the simulated devices live (seconds); tests use short ones."""

    sensor_interval: float = 5.0  # between two sensor advertisements
    thermostat_period: float = 30.0  # between two thermostat wake-ups
    thermostat_awake: float = 5.0  # how long the thermostat stays awake without a connection
    advert_interval: float = 1.0  # between two thermostat advertisements while awake


@dataclass(frozen=True, slots=True)
class DemoDevice:
    """A device the demo declares, as devices.known would (BLE address or LAN host:port)."""

    id: str
    kind: str
    name: str
    address: str | None = None
    host: str | None = None
    port: int = 80
