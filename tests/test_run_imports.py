"""What `edge-gateway run` imports: each optional package costs several MB of RSS on a
Raspberry-Pi-class gateway (issue 13), so the run path loads one only when its part is
configured: textual never (the TUI is a separate command), bleak only with BLE on, zeroconf
only with mDNS interfaces, aiohttp only for a LAN device or the demo, cryptography only for
an encrypted BTHome sensor, the upstream bridge only with an upstream, websockets only with
a ws/wss listener.

The check is on a real `python -m gateway run` subprocess: a sitecustomize on its path
writes `sys.modules` at exit, after it served a client, so an eager import added anywhere on
the way (the CLI, the app, the device bridge at start-up) fails it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from conftest import REPO, free_port, wait_for, write_config

# Written next to the config: the modules at interpreter exit, one per line.
SITECUSTOMIZE = """
import atexit, os, sys

def _write_modules():
    with open(os.environ["RUN_IMPORTS_OUT"], "w") as f:
        f.write("\\n".join(sorted(sys.modules)))

atexit.register(_write_modules)
"""
CONNECT = bytes.fromhex("101000044d5154540402003c0004746573") + b"t"  # MQTT 3.1.1, id "test"


def _connack(port: int) -> bool:
    """One real client round trip: CONNECT answered by CONNACK."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(CONNECT)
            return sock.recv(4)[:1] == b"\x20"
    except OSError:
        return False


def run_modules(
    tmp_path: Path,
    overrides: dict[str, Any],
    *args: str,
    extra_listener: dict[str, Any] | None = None,
) -> set[str]:
    """The modules a `gateway run` with this config had loaded by the time it exited."""
    port = free_port()
    config = write_config(tmp_path, port, overrides)
    if extra_listener is not None:
        cfg = yaml.safe_load(config.read_text())
        cfg["listeners"].append(extra_listener)
        config.write_text(yaml.safe_dump(cfg))
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    out = tmp_path / "modules.txt"
    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{REPO}", RUN_IMPORTS_OUT=str(out))
    log = (tmp_path / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(config), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    log.close()
    try:
        served = wait_for(lambda: proc.poll() is None and _connack(port), 30, 0.1)
        assert served, (tmp_path / "gateway.log").read_text()[-3000:]
        proc.terminate()
        assert proc.wait(30) == 0, (tmp_path / "gateway.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return set(out.read_text().split())


def _loaded(modules: set[str], package: str) -> list[str]:
    return sorted(m for m in modules if m == package or m.startswith(package + "."))


def test_run_with_ble_off_loads_no_optional_package(tmp_path: Path) -> None:
    modules = run_modules(tmp_path, {"devices": {"ble": {"enabled": False}}})
    assert "gateway.server.server" in modules  # the file is the gateway's, not an empty one
    optional = (
        "textual",
        "bleak",
        "dbus_fast",
        "zeroconf",
        "aiohttp",
        "cryptography",
        "websockets",
    )
    for package in optional:
        assert not _loaded(modules, package), f"{package} imported: {_loaded(modules, package)}"
    assert "gateway.upstream.service" not in modules  # no upstream configured
    assert "devices.demo.demo" not in modules


def test_run_with_ble_on_never_loads_the_tui(tmp_path: Path) -> None:
    modules = run_modules(tmp_path, {})
    assert "devices.ble.scanner" in modules  # BLE on: its radio was started
    assert not _loaded(modules, "textual")
    assert not _loaded(modules, "gateway.tui.app")


def test_demo_mode_loads_what_its_devices_need(tmp_path: Path) -> None:
    """The other side: the check sees an import made while the gateway starts (the demo
    plug serves HTTP with aiohttp)."""
    modules = run_modules(tmp_path, {"devices": {"ble": {"enabled": False}}}, "--demo")
    assert _loaded(modules, "aiohttp")
    assert not _loaded(modules, "textual")


def test_a_ws_listener_loads_websockets(tmp_path: Path) -> None:
    ws = {"type": "ws", "name": "ws", "host": "127.0.0.1", "port": free_port()}
    modules = run_modules(tmp_path, {"devices": {"ble": {"enabled": False}}}, extra_listener=ws)
    assert _loaded(modules, "websockets")
