"""Gateways with an ``upstream:`` section for the upstream bridge tests, in a thread (for paho
clients in the test) or as a subprocess (for kill -9).

Tests describe an upstream as the UpstreamConfig the reader should make of it; it is written
into config.yaml (as_yaml) and read back by the real config reader.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from conftest import ProcessGateway, ThreadGateway, wait_for, write_config

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


def as_yaml(config: UpstreamConfig) -> dict[str, Any]:
    """``config`` as its entry under ``upstream:`` in config.yaml."""
    entry: dict[str, Any] = {
        "name": config.name,
        "host": config.host,
        "port": config.port,
        "protocol": "3.1.1" if config.protocol == 4 else 5,
        "client_id": config.client_id or None,
        "keepalive": config.keepalive,
        "session_expiry": config.session_expiry,
        "reconnect_min": config.reconnect_min,
        "reconnect_max": config.reconnect_max,
        "notification_topic": config.notification_topic or None,
        "topics": [
            {
                "pattern": r.pattern,
                "direction": r.direction,
                "qos": r.qos,
                "local_prefix": r.local_prefix,
                "remote_prefix": r.remote_prefix,
            }
            for r in config.topics
        ],
        "queue": {
            "max_messages": config.queue.max_messages,
            "max_bytes": config.queue.max_bytes,
            "overflow": config.queue.overflow,
        },
    }
    if config.username is not None:
        entry["username"] = config.username
    if config.password_file is not None:
        entry["password_file"] = str(config.password_file)
    elif config.password is not None:
        entry["password"] = config.password.decode()
    if config.tls is not None:
        tls: dict[str, Any] = {"insecure": config.tls.insecure}
        for key in ("cafile", "certfile", "keyfile"):
            value = getattr(config.tls, key)
            if value is not None:
                tls[key] = str(value)
        entry["tls"] = tls
    return entry


def write_upstream_config(
    directory: Path,
    port: int,
    upstreams: Sequence[UpstreamConfig],
    overrides: dict[str, Any] | None = None,
) -> Path:
    """config.yaml as the other tests write it, with an ``upstream:`` section."""
    return write_config(
        directory, port, {**(overrides or {}), "upstream": [as_yaml(u) for u in upstreams]}
    )


class UpstreamThreadGateway(ThreadGateway):
    """ThreadGateway, and what its upstream bridges report."""

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
    path = write_upstream_config(directory, port, upstreams, overrides)
    gateway = UpstreamThreadGateway(path)
    gateway.start()
    return gateway


def start_process_gateway(
    directory: Path,
    port: int,
    upstreams: Sequence[UpstreamConfig],
    overrides: dict[str, Any] | None = None,
) -> ProcessGateway:
    """`edge-gateway run --config config.yaml` in a subprocess."""
    path = write_upstream_config(directory, port, upstreams, overrides)
    return ProcessGateway(path, port).start()


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
