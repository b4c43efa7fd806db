"""A device of a GATT profile declared in config.yaml, end to end: the gateway subprocess with
the real bleak, a fake BlueZ device with the profile's characteristics, paho as the user.

The valve answers a write on fff1 with a notification on fff2 (`13 01` once it carried out an
"open"), and keeps the level it was set to readable on fff3, so both kinds of confirmation of
the profile are exercised.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from fakebluez import FakeBlueZ

from tests.conftest import ProcessGateway, free_port, write_config
from tests.paho_helpers import Client

ADDRESS = "C0:FF:EE:00:00:07"
SERVICE = "0000fff0-0000-1000-8000-00805f9b34fb"
COMMAND = "0000fff1-0000-1000-8000-00805f9b34fb"
ANSWER = "0000fff2-0000-1000-8000-00805f9b34fb"
LEVEL = "0000fff3-0000-1000-8000-00805f9b34fb"

PROFILE = {
    "commands": {
        "open": {
            "char": "fff1",
            "payload": "57 01 {raw}",
            "values": {True: "01", False: "00"},
            "confirm": {"notify": "fff2", "expect": "13 01", "timeout": 2},
        },
        "level": {
            "char": "fff1",
            "payload": "57 02 {u8}",
            "min": 0,
            "max": 100,
            "confirm": {"read": "fff3"},
        },
    }
}


async def test_declared_gatt_profile_commands_reach_the_device(
    tmp_path: Path, system_bus: str
) -> None:
    port = free_port()
    config = write_config(
        tmp_path,
        port,
        {
            "devices": {
                "lan": {"enabled": False},
                "gatt_profiles": {"valve": PROFILE},
                "known": {"valve1": {"kind": "gatt", "address": ADDRESS, "profile": "valve"}},
            }
        },
    )
    gateway = ProcessGateway(config, port)
    async with FakeBlueZ(system_bus) as bluez:
        try:
            await asyncio.to_thread(gateway.start)
            watcher = await asyncio.to_thread(Client, port, "watcher")
            await asyncio.to_thread(watcher.subscribe, "gw/valve1/#", 1)

            def results() -> list[dict[str, object]]:
                return [
                    json.loads(m.payload)
                    for m in watcher.drain(0.05)
                    if m.topic == "gw/valve1/result"
                ]

            device = bluez.add_device(ADDRESS, "valve")
            command = device.add_characteristic(SERVICE, COMMAND, flags=["write"])
            answer = device.add_characteristic(SERVICE, ANSWER, flags=["notify"])
            level = device.add_characteristic(SERVICE, LEVEL, flags=["read"])

            def carry_out(data: bytes) -> None:
                if data[:2] == b"\x57\x01":
                    answer.notify(b"\x13" + data[2:3])
                elif data[:2] == b"\x57\x02":
                    level.value = data  # read back: what was written

            command.on_write = carry_out
            # The device session exists (primed) once it says it can take commands.
            for _ in range(100):
                messages = await asyncio.to_thread(watcher.drain, 0.1)
                if any(m.topic.endswith("/availability") and m.payload == b"online"
                       for m in messages):  # fmt: skip
                    break
            else:
                raise AssertionError("the device session never came up")
            sender = await asyncio.to_thread(Client, port, "phone")
            for body in ({"open": True}, {"level": 40}, {"level": 140}):
                await asyncio.to_thread(sender.publish, "gw/valve1/set", json.dumps(body), 1)
            await asyncio.to_thread(sender.disconnect)

            device.emit_advertisement()  # awake: the gateway connects and runs the queue
            seen: list[dict[str, object]] = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 15
            while len(seen) < 3 and loop.time() < deadline:
                seen += await asyncio.to_thread(results)
            assert [(r["result"], r.get("reason")) for r in seen] == [
                # 140 is out of the profile's range: refused before it was queued, while the
                # device still slept.
                ("rejected", "invalid"),
                ("delivered", None),
                ("delivered", None),
            ]
            assert str(seen[0]["detail"]).endswith("a whole number 0-100, got 140")
            assert command.writes == [bytes.fromhex("57 01 01"), bytes.fromhex("57 02 28")]
            await asyncio.to_thread(watcher.disconnect)
        finally:
            gateway.stop_if_running()
