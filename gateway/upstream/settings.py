"""An upstream connection as config.yaml describes it (``upstream:``): plain, checked data."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Direction = Literal["out", "in", "both"]
Overflow = Literal["drop-oldest", "reject-new"]

# Client ids of the bridge's own sessions in the local broker (one per upstream:
# LOCAL_CLIENT_ID_PREFIX + name). Network clients are refused them, like the device bridge's.
LOCAL_CLIENT_ID_PREFIX = "edge-gateway-upstream-"

# What a default client id keeps of the host name: the characters every broker takes in a
# client id (MQTT 3.1.1 §3.1.3.1 guarantees only [0-9a-zA-Z]; '-' and '_' are universal).
_NOT_CLIENT_ID = re.compile(r"[^A-Za-z0-9_-]+")


def default_client_id(name: str, hostname: str) -> str:
    """``edge-gateway-<hostname>-<name>``: one per gateway and connection, stable across
    restarts (the upstream session, with the commands waiting in it, is found again)."""
    host = _NOT_CLIENT_ID.sub("-", hostname).strip("-") or "host"
    return f"edge-gateway-{host}-{name}"


def default_notification_topic(client_id: str) -> str:
    return f"edge-gateway/{client_id}/state"


@dataclass(frozen=True, slots=True)
class TopicRule:
    """Mosquitto's ``topic pattern direction qos local_prefix remote_prefix``: local
    ``local_prefix + T`` <-> remote ``remote_prefix + T`` for every ``T`` matching ``pattern``."""

    pattern: str
    direction: Direction = "out"
    qos: int = 1
    local_prefix: str = ""
    remote_prefix: str = ""


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """``tls: {}`` verifies the server against the system's CAs."""

    cafile: Path | None = None
    certfile: Path | None = None  # a client certificate, with keyfile
    keyfile: Path | None = None
    insecure: bool = False  # skip the host name and certificate checks (testing only)


@dataclass(frozen=True, slots=True)
class UpstreamQueue:
    """What may wait locally for the upstream (the bridge's persistent session)."""

    max_messages: int = 100_000  # 0 = unlimited
    max_bytes: int = 0  # payload bytes; 0 = unlimited
    overflow: Overflow = "drop-oldest"


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    name: str  # [a-z0-9_-]+, unique
    host: str
    port: int = 1883
    protocol: int = 5  # 5 or 4 (MQTT 3.1.1)
    client_id: str = ""  # resolved by the config reader: edge-gateway-<hostname>-<name>
    username: str | None = None
    # From `password:` or the first line of `password_file:`. Out of repr() so that no log
    # line or traceback that shows a configuration shows the password.
    password: bytes | None = field(default=None, repr=False)
    tls: UpstreamTls | None = None
    keepalive: int = 60
    session_expiry: int = 86_400
    reconnect_min: float = 1.0
    reconnect_max: float = 30.0
    notification_topic: str = ""  # resolved: edge-gateway/<client_id>/state
    topics: tuple[TopicRule, ...] = ()
    queue: UpstreamQueue = field(default_factory=UpstreamQueue)
    password_file: Path | None = None  # where `password` was read from, if from a file

    @property
    def local_client_id(self) -> str:
        return LOCAL_CLIENT_ID_PREFIX + self.name
