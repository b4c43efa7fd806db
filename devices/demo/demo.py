"""The running demo: its devices, the radio and link the supervisor drives them through."""

from __future__ import annotations

import random

from devices.demo import (
    PLUG_ID,
    SENSOR_ADDRESS,
    SENSOR_ID,
    THERMOSTAT_ADDRESS,
    THERMOSTAT_ID,
    DemoDevice,
    DemoTimings,
)
from devices.demo.ble import DemoLink, DemoRadio, DemoSensor, DemoThermostat
from devices.demo.plug import DemoPlug


class Demo:
    """The running demo devices; `radio` and `link` go to the supervisor, `devices` to the
    declared ones."""

    def __init__(
        self,
        timings: DemoTimings,
        sensor: DemoSensor,
        thermostat: DemoThermostat,
        plug: DemoPlug,
    ) -> None:
        self.timings = timings
        self.sensor = sensor
        self.thermostat = thermostat
        self.plug = plug
        self.radio = DemoRadio(
            sensor,
            thermostat,
            sensor_interval=timings.sensor_interval,
            advert_interval=timings.advert_interval,
        )
        self.link = DemoLink(thermostat)

    @property
    def devices(self) -> tuple[DemoDevice, ...]:
        return (
            DemoDevice(SENSOR_ID, "bthome", "Demo sensor", address=self.sensor.address),
            DemoDevice(THERMOSTAT_ID, "eq3", "Demo thermostat", address=self.thermostat.address),
            DemoDevice(PLUG_ID, "shelly", "Demo plug", host=self.plug.host, port=self.plug.port),
        )

    def describe(self) -> list[str]:
        t = self.timings
        return [
            f"{SENSOR_ID}: BTHome v2 sensor {self.sensor.address}, a reading every "
            f"{t.sensor_interval:g} s",
            f"{THERMOSTAT_ID}: eQ-3 radiator thermostat {self.thermostat.address}, asleep "
            f"except {t.thermostat_awake:g} s every {t.thermostat_period:g} s; its state "
            "appears once it has carried out a command",
            f"{PLUG_ID}: Shelly plug (one switch) at http://{self.plug.host}:{self.plug.port}/rpc",
        ]

    async def stop(self) -> None:
        await self.radio.stop()
        await self.thermostat.stop()
        await self.plug.stop()


async def start_demo(
    timings: DemoTimings | None = None, *, host: str = "127.0.0.1", seed: int | None = None
) -> Demo:
    """Start the simulated devices (the plug's server on `host`, a free port)."""
    timings = timings or DemoTimings()
    rng = random.Random(seed)
    sensor = DemoSensor(SENSOR_ADDRESS, rng=rng)
    thermostat = DemoThermostat(
        THERMOSTAT_ADDRESS, period=timings.thermostat_period, awake_for=timings.thermostat_awake
    )
    plug = DemoPlug(host, rng=rng)
    await plug.start()
    demo = Demo(timings, sensor, thermostat, plug)
    thermostat.start()
    return demo
