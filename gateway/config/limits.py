"""The limits section: protocol limits, queues, and the abuse limits around CONNECT."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.broker.settings import BrokerSettings, Overflow, QueueLimits, QueueRule
from gateway.config.reader import U16, U32, Map, Source, glob_problem

_BROKER_DEFAULTS = BrokerSettings()
_QUEUE_DEFAULTS = QueueLimits()


_MAX_PACKET = 268_435_460  # 4-byte remaining length (268,435,455) plus the fixed header


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_packet_size: int = _BROKER_DEFAULTS.max_packet_size
    receive_maximum: int = _BROKER_DEFAULTS.receive_maximum
    max_inflight_messages: int = _BROKER_DEFAULTS.max_inflight_out
    max_keepalive: int = _BROKER_DEFAULTS.max_keepalive
    max_session_expiry: int = _BROKER_DEFAULTS.max_session_expiry
    v311_session_expiry: int = _BROKER_DEFAULTS.v311_session_expiry
    topic_alias_maximum: int = _BROKER_DEFAULTS.topic_alias_maximum
    connect_timeout: float = 10.0
    max_connections: int = 0  # 0 = unlimited
    max_retained_messages: int = _BROKER_DEFAULTS.max_retained_messages
    # Abuse limits before and after the CONNECT (config.yaml says why each exists).
    max_pending_per_address: int = 32  # 0 = unlimited
    max_pending_connections: int = 512  # 0 = unlimited
    send_stall_timeout: float = 60.0
    password_threads: int = 2
    password_checks_per_address: int = 2
    password_checks_waiting: int = 64
    login_backoff_max: float = 4.0  # 0 = no back-off
    max_sessions: int = _BROKER_DEFAULTS.max_sessions
    queue: QueueLimits = _QUEUE_DEFAULTS
    queue_rules: tuple[QueueRule, ...] = ()


def _read_queue(section: Map, base: QueueLimits) -> QueueLimits:
    overflow = section.choice("overflow", base.overflow.value, tuple(o.value for o in Overflow))
    return QueueLimits(
        max_messages=section.integer("max_messages", base.max_messages, 0),
        max_bytes=section.integer("max_bytes", base.max_bytes, 0),
        overflow=Overflow(overflow),
        queue_qos0=section.boolean("queue_qos0", base.queue_qos0),
    )


def read_limits(src: Source, section: Map) -> LimitsConfig:
    d = LimitsConfig()
    queue_section = section.mapping("queue")
    queue = _read_queue(queue_section, d.queue)
    queue_section.finish()
    rules: list[QueueRule] = []
    for path, raw in section.items("queue_rules"):
        rule_section = Map(src, path, raw)
        pattern = rule_section.string("client_id", "*", glob_problem)
        # Unset fields inherit from limits.queue, so a rule names only what differs.
        rules.append(QueueRule(pattern, _read_queue(rule_section, queue)))
        rule_section.finish()
    result = LimitsConfig(
        max_packet_size=section.integer("max_packet_size", d.max_packet_size, 64, _MAX_PACKET),
        receive_maximum=section.integer("receive_maximum", d.receive_maximum, 1, U16),
        max_inflight_messages=section.integer(
            "max_inflight_messages", d.max_inflight_messages, 1, U16
        ),
        max_keepalive=section.integer("max_keepalive", d.max_keepalive, 0, U16),
        max_session_expiry=section.integer("max_session_expiry", d.max_session_expiry, 0, U32),
        v311_session_expiry=section.integer("v311_session_expiry", d.v311_session_expiry, 0, U32),
        topic_alias_maximum=section.integer("topic_alias_maximum", d.topic_alias_maximum, 0, U16),
        connect_timeout=section.number(
            "connect_timeout", d.connect_timeout, 0, 3600, low_open=True
        ),
        max_connections=section.integer("max_connections", d.max_connections, 0),
        max_retained_messages=section.integer("max_retained_messages", d.max_retained_messages, 0),
        max_sessions=section.integer("max_sessions", d.max_sessions, 0),
        queue=queue,
        queue_rules=tuple(rules),
        max_pending_per_address=section.integer(
            "max_pending_per_address", d.max_pending_per_address, 0
        ),
        max_pending_connections=section.integer(
            "max_pending_connections", d.max_pending_connections, 0
        ),
        send_stall_timeout=section.number(
            "send_stall_timeout", d.send_stall_timeout, 0, 86400, low_open=True
        ),
        password_threads=section.integer("password_threads", d.password_threads, 1, 64),
        password_checks_per_address=section.integer(
            "password_checks_per_address", d.password_checks_per_address, 1, 1000
        ),
        password_checks_waiting=section.integer(
            "password_checks_waiting", d.password_checks_waiting, 1, 100_000
        ),
        login_backoff_max=section.number("login_backoff_max", d.login_backoff_max, 0, 3600),
    )
    section.finish()
    return result
