"""Gateways with an ``upstream:`` section for the upstream bridge tests, in a thread (for paho
clients in the test) or in a child process (for kill -9).

The configuration is config.yaml as the other tests write it, with the upstream entries built
in code (UpstreamConfig); a child process gets them pickled next to its config file.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from conftest import REPO, ProcessGateway, ThreadGateway, wait_for, write_config

from gateway.config import GatewayConfig, load_config
from gateway.upstream.settings import TopicRule, UpstreamConfig, UpstreamQueue


def upstream(
    port: int,
    name: str = "cloud",
    *,
    topics: Sequence[TopicRule] | None = None,
    **fields: Any,
) -> UpstreamConfig:
    """An upstream on 127.0.0.1:<port>, reconnecting fast, with the issue's example rules
    unless ``topics`` says otherwise."""
    if topics is None:
        topics = (
            TopicRule("#", "out", 1, "gw/", "site1/gw/"),
            TopicRule("+/set", "in", 1, "gw/", "site1/gw/"),
        )
    defaults: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "client_id": f"edge-{name}",
        "keepalive": 5,
        "reconnect_min": 0.1,
        "reconnect_max": 0.5,
        "notification_topic": f"edge/{name}/state",
        "queue": UpstreamQueue(max_messages=0),
    }
    defaults.update(fields)
    return UpstreamConfig(name=name, topics=tuple(topics), **defaults)


def gateway_config(
    directory: Path,
    port: int,
    upstreams: Sequence[UpstreamConfig],
    overrides: dict[str, Any] | None = None,
) -> GatewayConfig:
    path = write_config(directory, port, overrides)
    return replace(load_config(path), upstream=tuple(upstreams))


class UpstreamThreadGateway(ThreadGateway):
    """ThreadGateway with a config built in code."""

    def __init__(self, config: GatewayConfig, config_path: Path) -> None:
        super().__init__(config_path)
        self.config = config

    def start(self) -> UpstreamThreadGateway:
        import threading

        from gateway.app import Gateway

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.gateway = Gateway(self.config)
        asyncio.run_coroutine_threadsafe(self.gateway.start(), self.loop).result(20)
        return self

    def statuses(self) -> list[dict[str, object]]:
        def read() -> list[dict[str, object]]:
            upstream = self.gateway.upstream
            if upstream is None:
                return []
            return [s.as_json() for s in upstream.upstream_statuses()]

        result: list[dict[str, object]] = self.call(read)
        return result

    def status(self, name: str = "cloud") -> dict[str, object]:
        for s in self.statuses():
            if s["name"] == name:
                return s
        raise KeyError(name)

    def wait_state(self, state: str, name: str = "cloud", timeout: float = 10.0) -> bool:
        return wait_for(lambda: self.status(name)["state"] == state, timeout, 0.05)


def start_thread_gateway(
    directory: Path,
    port: int,
    upstreams: Sequence[UpstreamConfig],
    overrides: dict[str, Any] | None = None,
) -> UpstreamThreadGateway:
    config = gateway_config(directory, port, upstreams, overrides)
    return UpstreamThreadGateway(config, directory / "config.yaml").start()


class UpstreamProcessGateway(ProcessGateway):
    """ProcessGateway whose upstream section comes pickled (tests/upstream_child.py)."""

    def __init__(self, config_path: Path, port: int, upstreams: Sequence[UpstreamConfig]) -> None:
        super().__init__(config_path, port)
        self.upstream_path = config_path.parent / "upstream.pickle"
        self.upstream_path.write_bytes(pickle.dumps(tuple(upstreams)))

    def start(self, timeout: float = 20.0) -> UpstreamProcessGateway:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.upstream_child",
                str(self.config_path),
                str(self.upstream_path),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.config_path.parent,
        )
        log.close()
        import socket

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
            self.stop_if_running()
            raise RuntimeError(f"gateway did not start: {self.log_path.read_text()[-3000:]}")
        return self


def retained_json(port: int, topic: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """The retained JSON on ``topic`` (mosquitto_sub -C 1), or None."""
    try:
        out = subprocess.run(
            ["mosquitto_sub", "-p", str(port), "-t", topic, "-C", "1", "-W", str(int(timeout))],
            capture_output=True,
            timeout=timeout + 5,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    text = out.stdout.decode().strip()
    if not text:
        return None
    value: dict[str, Any] = json.loads(text)
    return value


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()
