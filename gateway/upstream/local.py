"""What the bridge needs from the gateway's own broker, as plain values and callables.

The bridge talks to the broker over MQTT like any client (an in-process connection); the few
figures MQTT cannot tell it (how long its queue is, what the broker dropped from it, which
packet ids the broker holds state for) come through these callables, which the composition
root (gateway/app.py) builds. The bridge never imports the broker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.client.mqtt import Connector


@dataclass(frozen=True, slots=True)
class SessionFigures:
    """The bridge's local session as the broker sees it."""

    queued: int  # waiting to go up: queued and in flight to the bridge
    dropped: int  # dropped by the broker (queue limits, expiry), since the process started
    subscriptions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LocalBroker:
    connect: Connector  # a trusted in-process MQTT connection
    figures: Callable[[str], SessionFigures | None]  # by client id; None: no such session
    # (ids in flight to the client, inbound QoS 2 ids awaiting PUBREL), by client id
    packet_ids: Callable[[str], tuple[frozenset[int], frozenset[int]]]
    receive_maximum: int = 100  # QoS 1/2 messages the broker accepts in flight from a client
    max_inflight_out: int = 100  # QoS 1/2 messages it sends a client in flight at most
    max_packet_size: int = 1024 * 1024
