"""What the broker core asks its I/O shell to do, and what the shell tells it about a connection."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

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


# The actions are NamedTuples rather than frozen dataclasses: one is built per outgoing
# packet, and a frozen dataclass __init__ (object.__setattr__ per field) cost several percent
# of a delivery (bench/).


class Send(NamedTuple):
    conn_id: int
    packet: Packet


class Close(NamedTuple):
    """Close the connection after everything queued before it was written."""

    conn_id: int


class SetKeepAlive(NamedTuple):
    """The negotiated keep-alive (seconds, 0 = none); the shell drops the link after 1.5x."""

    conn_id: int
    seconds: int


Action = Send | Close | SetKeepAlive

# ``new_action(Send, (conn_id, packet))`` builds one without the NamedTuple's Python-level
# __new__: the routing and delivery paths build one per outgoing PUBLISH (bench/).
new_action = tuple.__new__


@dataclass(slots=True)
class Effects:
    """Accumulated output of the broker since the last ``take_effects()``.

    The shell must commit ``store`` durably *before* performing any of ``actions``: the
    actions may acknowledge or deliver what the store ops make durable.
    """

    actions: list[Action] = field(default_factory=list)
    store: list[StoreOp] = field(default_factory=list)
