"""Broker limits and behaviour switches, as a plain value built from config.yaml."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from enum import Enum


class Overflow(Enum):
    DROP_OLDEST = "drop-oldest"
    REJECT_NEW = "reject-new"


@dataclass(frozen=True, slots=True)
class QueueLimits:
    max_messages: int = 1000  # per session; 0 = unlimited
    max_bytes: int = 0  # payload bytes per session; 0 = unlimited
    overflow: Overflow = Overflow.DROP_OLDEST
    queue_qos0: bool = False  # queue QoS 0 messages for offline persistent sessions
    # A newer queued message on the same topic whose JSON object sets every key of an older,
    # not yet sent one supersedes it (a thermostat that slept through five setpoints gets
    # the last one only). Set per session by trusted clients (see queue_policy.py).
    coalesce: bool = False
    # Message expiry applied to queued messages that carry none (e.g. from 3.1.1 publishers).
    default_expiry: int = 0


@dataclass(frozen=True, slots=True)
class QueueRule:
    """Queue limits for client ids matching a shell-style pattern (first match wins)."""

    client_id_pattern: str
    limits: QueueLimits

    def matches(self, client_id: str) -> bool:
        return fnmatch.fnmatchcase(client_id, self.client_id_pattern)


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    max_packet_size: int = 1024 * 1024  # bytes we accept (told to v5 clients)
    receive_maximum: int = 100  # QoS 1/2 publishes we accept in flight per client
    max_inflight_out: int = 100  # QoS 1/2 publishes we keep in flight per client
    max_keepalive: int = 0  # 0 = no cap; otherwise Server Keep Alive caps the client's value
    max_session_expiry: int = 0xFFFFFFFF  # seconds; caps the client's Session Expiry Interval
    # 3.1.1 has no session expiry: a clean_session=0 session lives this long offline.
    v311_session_expiry: int = 0xFFFFFFFF
    topic_alias_maximum: int = 10  # aliases a client may use towards us
    retain_available: bool = True
    max_qos: int = 2
    wildcard_subscriptions: bool = True
    shared_subscriptions: bool = True
    subscription_identifiers: bool = True
    max_topic_levels: int = 0  # 0 = no limit
    default_queue: QueueLimits = QueueLimits()
    queue_rules: tuple[QueueRule, ...] = ()
    max_retained_messages: int = 0  # 0 = unlimited
    # Sessions at once, live and persistent offline ones (0 = unlimited); the gateway's own
    # clients are never refused. About 3 KB of memory each (an idle one with a subscription).
    max_sessions: int = 10_000
    sys_interval: float = 10.0  # seconds between $SYS updates; 0 = off
    # Client identifiers only the gateway's own (in-process) clients may use: a network
    # client asking for one is refused (CONNACK 0x85 / 3.1.1 code 2). The composition root
    # sets the device bridge's prefix.
    reserved_client_id_prefixes: tuple[str, ...] = ()

    def queue_limits_for(self, client_id: str) -> QueueLimits:
        for rule in self.queue_rules:
            if rule.matches(client_id):
                return rule.limits
        return self.default_queue
