"""What the broker core asks its I/O shell to do, and what the shell tells it about a connection."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.broker.records import StoreOp
from gateway.mqtt.packets import Packet


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    conn_id: int  # unique for the process lifetime; never reused
    listener: str  # listener name from config, e.g. "tcp:127.0.0.1:1883"
    peer: str  # "127.0.0.1:53422", "unix", "in-process"
    allow_anonymous: bool = True
    trusted: bool = False  # in-process clients of the gateway itself


@dataclass(frozen=True, slots=True)
class Identity:
    """The outcome of authenticating a CONNECT; computed by the shell (it may be slow)."""

    ok: bool
    username: str | None = None
    reason_code: int = 0  # MQTT 5 CONNACK reason when not ok (0x86, 0x87, 0x8C ...)
    is_admin: bool = False


@dataclass(frozen=True, slots=True)
class Send:
    conn_id: int
    packet: Packet


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection after everything queued before it was written."""

    conn_id: int


@dataclass(frozen=True, slots=True)
class SetKeepAlive:
    """The negotiated keep-alive (seconds, 0 = none); the shell drops the link after 1.5x."""

    conn_id: int
    seconds: int


Action = Send | Close | SetKeepAlive


@dataclass(slots=True)
class Effects:
    """Accumulated output of the broker since the last ``take_effects()``.

    The shell must commit ``store`` durably *before* performing any of ``actions``: the
    actions may acknowledge or deliver what the store ops make durable.
    """

    actions: list[Action] = field(default_factory=list)
    store: list[StoreOp] = field(default_factory=list)
