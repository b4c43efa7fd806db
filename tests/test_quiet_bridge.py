"""gw/# stays quiet: a real subscriber (mosquitto_sub, admin, over the Unix socket) counts what
the gateway publishes under gw/bridge/ while nothing happens, and while commands wait.

The gateway runs as users run it (`python -m gateway run`, demo devices with their real
timings: the sensor reports every 5 s, the plug is polled, the thermostat sleeps 30 s). Status
and lists are sent when something in them changed; a sensor's last-seen time or RSSI alone
is not worth a message every few seconds.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ProcessGateway, free_port, write_config

pytestmark = [pytest.mark.filterwarnings("ignore::ResourceWarning")]


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[ProcessGateway, Path]]:
    port = free_port()
    listeners = [
        {"type": "tcp", "host": "127.0.0.1", "port": port},
        {"type": "unix", "path": str(tmp_path / "gw.sock"), "admin": True},
    ]
    overrides = {"listeners": listeners, "demo": True, "devices": {"ble": {"enabled": False}}}
    config = write_config(tmp_path, port, overrides)
    gateway = ProcessGateway(config, port).start()
    try:
        time.sleep(3)  # the demo devices connect and report once
        yield gateway, tmp_path / "gw.sock"
    finally:
        gateway.stop_if_running()


def count(sock: Path, seconds: float, during: list[list[str]] | None = None) -> Counter[str]:
    """Messages per topic a subscriber to gw/bridge/# receives in `seconds` (retained ones
    included), running the commands `during` one second apart meanwhile."""
    with subprocess.Popen(
        ["mosquitto_sub", "--unix", str(sock), "-t", "gw/bridge/#", "-v", "-W", str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as sub:
        time.sleep(1)
        for command in during or []:
            subprocess.run(command, check=True, timeout=10)
            time.sleep(1)
        out, _ = sub.communicate(timeout=seconds + 10)
    return Counter(line.split(b" ", 1)[0].decode() for line in out.splitlines() if line)


def test_bridge_topics_quiet_while_nothing_changes(demo: tuple[ProcessGateway, Path]) -> None:
    _, sock = demo
    seen = count(sock, 20)
    # The retained status, then at most one for the subscriber's own connection; before:
    # one every 2 s as long as any device reported (10 in 20 s).
    assert 1 <= seen["gw/bridge/status"] <= 2, seen
    # Devices heard from (last seen, RSSI) but no change in the list: before, every 5 s (4).
    # Now: a first observed wake interval (news), and the 30 s refresh at most.
    assert seen["gw/bridge/updates/devices"] <= 2, seen
    assert seen["gw/bridge/devices"] == 1, seen  # the retained one


def test_bridge_devices_only_when_the_list_changes(demo: tuple[ProcessGateway, Path]) -> None:
    gateway, sock = demo
    publish = ["mosquitto_pub", "-p", str(gateway.port), "-q", "1", "-t",
               "gw/demo-thermostat/set", "-m"]  # fmt: skip
    # Commands queue for the sleeping thermostat: its pending count changes, its entry in
    # gw/bridge/devices (id, kind, session, link) does not. Before: one message per command.
    seen = count(sock, 8, [[*publish, f'{{"target_temp": {t}}}'] for t in (20, 21, 22)])
    assert seen["gw/bridge/devices"] == 1, seen
