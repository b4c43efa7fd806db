"""Wake-to-delivery of a sleepy BLE device (issue 3 performance; figures only, no thresholds).

The gateway runs as users run it (a subprocess, `python -m gateway run`) with one declared
eQ-3 thermostat; this process runs a fake BlueZ on a private dbus-daemon (tests/fakebluez.py,
tests/fake_eq3.py), so the gateway's real bleak talks D-Bus to it. Each round: a setpoint is
published (paho, QoS 1) while the thermostat sleeps; once the pending list shows it, the
thermostat wakes and advertises; the time from that advertisement to the GATT write of the
command arriving at the fake device is measured. Both ends use this process's clock.

The GATT connect time of the fake BlueZ itself is measured separately (bleak connect and
disconnect from this process), so that the gateway's own share can be read off:
issue 3 asks for p50 <= 300 ms plus that connect time.

Run: python bench/bench_wake.py [--rounds N] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import paho.mqtt.client as paho  # noqa: E402
import yaml  # noqa: E402
from fake_eq3 import FakeEq3  # noqa: E402
from fakebluez import FakeBlueZ, private_bus  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from devices.ble import eq3  # noqa: E402

ADDRESS = "00:1A:22:0A:BC:99"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Watch:
    """A paho client on gw/trv/#: the last payload per topic, and a publisher."""

    def __init__(self, port: int) -> None:
        self.last: dict[str, bytes] = {}
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-wake")
        self.client.on_message = lambda c, u, m: self.last.__setitem__(m.topic, bytes(m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("gw/trv/#", 1)
        self.client.loop_start()

    async def until(
        self, topic: str, predicate: Callable[[bytes], bool], timeout: float = 20.0
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            payload = self.last.get(topic)
            if payload is not None and predicate(payload):
                return
            await asyncio.sleep(0.005)
        raise TimeoutError(f"{topic}: last {self.last.get(topic)!r}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def _connect_times(rounds: int) -> list[float]:
    from bleak import BleakClient, BleakScanner

    device = await BleakScanner.find_device_by_address(ADDRESS, timeout=5)
    if device is None:
        raise RuntimeError("the fake thermostat was not found by bleak")
    times = []
    for _ in range(rounds):
        client = BleakClient(device)
        start = time.monotonic()
        await client.connect()
        times.append(time.monotonic() - start)
        await client.disconnect()
    return times


async def run(rounds: int, workdir: Path) -> dict[str, float]:
    port = _free_port()
    config = {
        "listeners": [{"type": "tcp", "host": "127.0.0.1", "port": port}],
        "persistence": {"path": str(workdir / "gw.db")},
        "sys_interval": 0,
        "logging": {"level": "warning"},
        "devices": {
            "lan": {"enabled": False},
            "ble": {"state_refresh": 7 * 24 * 3600},
            "known": {"trv": {"kind": "eq3", "address": ADDRESS}},
        },
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    log = (workdir / "gateway.log").open("wb")
    gateway = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(workdir / "config.yaml")],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    latencies: list[float] = []
    try:
        async with FakeBlueZ(os.environ["DBUS_SYSTEM_BUS_ADDRESS"]) as bluez:
            deadline = time.monotonic() + 20
            while True:
                try:
                    watch = Watch(port)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)
            try:
                await watch.until("gw/trv/availability", lambda p: p == b"online")
                trv = FakeEq3(bluez, ADDRESS)
                for n in range(rounds):
                    target = 5.0 + (n % 50) / 2
                    watch.client.publish("gw/trv/set", json.dumps({"target_temp": target}), qos=1)
                    await watch.until("gw/trv/pending", lambda p: p != b"[]")
                    before = len(trv.writes)
                    expected = bytes((eq3.OP_TARGET, round(target * 2)))
                    start = time.monotonic()
                    trv.wake()  # emits its advertisement now
                    while expected not in trv.writes[before:]:
                        await asyncio.sleep(0.001)
                        if time.monotonic() - start > 20:
                            raise TimeoutError("the command was not written")
                    latencies.append(time.monotonic() - start)
                    await watch.until("gw/trv/pending", lambda p: p == b"[]")
                    await asyncio.sleep(0.3)  # the window closes (quiet period)
                    trv.sleep()
                    await asyncio.sleep(0.2)
                trv.wake()
                connects = await _connect_times(min(rounds, 20))
                trv.sleep()
            finally:
                watch.close()
    finally:
        gateway.terminate()
        gateway.wait(20)
        log.close()
    p50 = statistics.median(latencies)
    connect_p50 = statistics.median(connects)
    return {
        "rounds": len(latencies),
        "wake_to_write_p50_ms": p50 * 1000,
        "wake_to_write_p90_ms": _percentile(latencies, 0.9) * 1000,
        "wake_to_write_max_ms": max(latencies) * 1000,
        "fake_bluez_connect_p50_ms": connect_p50 * 1000,
        "gateway_share_p50_ms": (p50 - connect_p50) * 1000,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else args.rounds
    with tempfile.TemporaryDirectory(prefix="bench-wake") as tmp:
        workdir = Path(tmp)
        with private_bus(workdir) as bus:
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = bus.address
            figures = asyncio.run(run(rounds, workdir))
    print(f"{'figure':<28} {'value':>10}")
    for key, value in figures.items():
        print(f"{key:<28} {value:>10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
