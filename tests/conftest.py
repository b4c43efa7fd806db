"""Shared test fixtures: a real gateway on a free loopback port, in a thread or a subprocess."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run soak/benchmark style tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def write_config(directory: Path, port: int, overrides: dict[str, Any] | None = None) -> Path:
    """A config.yaml for a test gateway: TCP on 127.0.0.1:<port>, Unix socket, store in dir."""
    cfg: dict[str, Any] = {
        "listeners": [
            {"type": "tcp", "name": "tcp", "host": "127.0.0.1", "port": port},
            {"type": "unix", "name": "unix", "path": str(directory / "gw.sock")},
        ],
        "persistence": {"path": str(directory / "gw.db")},
        "sys_interval": 0,
        "logging": {"level": "info"},
    }
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class ThreadGateway:
    """The real gateway (app.Gateway) on its own event loop in a background thread, so that
    blocking clients such as paho-mqtt can be used from plain test functions."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.gateway: Any = None

    def start(self) -> ThreadGateway:
        from gateway.app import Gateway
        from gateway.config import load_config

        config = load_config(self.config_path)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.gateway = Gateway(config)
        asyncio.run_coroutine_threadsafe(self.gateway.start(), self.loop).result(20)
        return self

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run fn on the gateway's loop (to read broker state safely)."""
        assert self.loop is not None

        async def wrapper() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(10)

    def stop(self) -> None:
        if self.loop is None:
            return
        asyncio.run_coroutine_threadsafe(self.gateway.stop(), self.loop).result(20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        assert self.thread is not None
        self.thread.join(10)
        self.loop.close()
        self.loop = None


class ProcessGateway:
    """The gateway as users run it: `python -m gateway run --config FILE` in a subprocess."""

    def __init__(self, config_path: Path, port: int) -> None:
        self.config_path = config_path
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = config_path.parent / "gateway.log"

    def start(self, timeout: float = 20.0) -> ProcessGateway:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.config_path.parent,
        )
        log.close()

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log_path.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False

        if not wait_for(up, timeout, 0.05):
            self.stop_if_running()  # never leave a half-started gateway behind
            raise RuntimeError(f"gateway did not start: {self.log_path.read_text()[-3000:]}")
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop_if_running(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait(20)


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Callable[..., tuple[ThreadGateway, int]]]:
    started: list[ThreadGateway] = []

    def make(
        overrides: dict[str, Any] | None = None, port: int | None = None
    ) -> tuple[ThreadGateway, int]:
        port = port or free_port()
        path = write_config(tmp_path, port, overrides)
        gw = ThreadGateway(path).start()
        started.append(gw)
        return gw, port

    yield make
    for gw in started:
        gw.stop()


@pytest.fixture
def gateway(gateway_factory: Callable[..., tuple[ThreadGateway, int]]) -> tuple[ThreadGateway, int]:
    return gateway_factory()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Any]:
    """A gateway in the test's event loop (tests/device_harness.py), stopped afterwards."""
    from tests.device_harness import Harness  # here: device_harness imports this module

    h = Harness(tmp_path)
    await h.start()
    yield h
    for client in h.clients:
        await client.close()
    await h.stop()


@pytest.fixture
def system_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private dbus-daemon as the system bus (for a fake BlueZ); its address."""
    from fakebluez import private_bus  # here: only BLE tests need dbus-fast

    with private_bus(tmp_path) as bus:
        # Read by dbus-fast whenever bleak opens its bus (on first use in a loop), and
        # inherited by gateway subprocesses.
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
        yield bus.address


@pytest.fixture
async def bleak_released(system_bus: str) -> AsyncIterator[None]:
    yield
    # bleak keeps one BlueZ manager (and bus connection) per event loop for the process's
    # lifetime; close this loop's one so that the next test's daemon starts from scratch.
    from bleak.backends.bluezdbus import manager

    instance = manager._global_instances.pop(asyncio.get_running_loop(), None)
    if instance is not None and instance._bus is not None:
        instance._bus.disconnect()
        await asyncio.sleep(0)
