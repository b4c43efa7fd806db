"""Broker counters and their ``$SYS`` topics (named like Mosquitto's, so that existing
dashboards and ``mosquitto_sub -t '$SYS/#'`` habits keep working)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("gateway.broker")

# Drop reasons; each has a counter ``dropped_<reason>`` and a $SYS topic.
DROP_REASONS = (
    "queue_full",  # session queue limit (messages or bytes) hit
    "expired",  # message expiry interval passed before delivery
    "too_large",  # bigger than the client's Maximum Packet Size
    "retained_full",  # max_retained_messages reached; the retained copy was not kept
    "qos0_offline",  # QoS 0 for an offline session that does not queue QoS 0
    "session_expired",  # still queued when its session expired
    "store_full",  # persistence.max_size_mb reached: not stored (or refused with 0x97)
)


@dataclass(slots=True)
class BrokerStats:
    # Totals since start. The shell adds the byte counts.
    bytes_received: int = 0
    bytes_sent: int = 0
    messages_received: int = 0  # every MQTT packet received
    messages_sent: int = 0  # every MQTT packet sent
    publish_received: int = 0
    publish_sent: int = 0
    connections_total: int = 0  # successful CONNECTs
    connections_refused: int = 0  # CONNACK with a failure code
    clients_maximum: int = 0
    protocol_violations: int = 0
    takeovers: int = 0
    # CONNECTs refused for their client id (connect.py _may_use).
    refused_reserved_client_id: int = 0
    refused_session_owner: int = 0
    refused_max_sessions: int = 0  # a new session beyond limits.max_sessions
    wills_published: int = 0
    sessions_expired: int = 0
    publish_denied: int = 0  # PUBLISH refused by ACL / $SYS rule
    dropped_queue_full: int = 0
    dropped_expired: int = 0
    dropped_too_large: int = 0
    dropped_retained_full: int = 0
    dropped_qos0_offline: int = 0
    dropped_session_expired: int = 0
    # Commands a device session's schema refused before they were queued (command_check.py).
    publish_rejected: int = 0
    dropped_store_full: int = 0
    # Told about every drop (reason, count, detail, client id): the broker's event ring.
    on_drop: Callable[[str, int, str, str | None], None] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def dropped_total(self) -> int:
        # QoS 0 not queued for offline sessions is normal MQTT behaviour, not a loss.
        return (
            self.dropped_queue_full
            + self.dropped_expired
            + self.dropped_too_large
            + self.dropped_session_expired
            + self.dropped_store_full
        )

    def dropped(self, reason: str, n: int, detail: str, client_id: str | None = None) -> None:
        """Count ``n`` messages dropped for ``reason`` and log it, rate-limited: the first
        time, then every 1000th, so that a flood cannot flood the log too."""
        if not n:
            return
        attr = "dropped_" + reason
        before = getattr(self, attr)
        after = before + n
        setattr(self, attr, after)
        if before == 0 or before // 1000 != after // 1000:
            log.warning("dropped %d message(s) (%s, %d so far): %s", n, reason, after, detail)
        if self.on_drop is not None:
            self.on_drop(reason, n, detail, client_id)

    def rejected(self, detail: str) -> None:
        """Count a refused command and log it, rate-limited like the drops."""
        self.publish_rejected += 1
        n = self.publish_rejected
        if n == 1 or n % 1000 == 0:
            log.warning("refused a command (%d so far): %s", n, detail)


@dataclass(frozen=True, slots=True)
class Gauges:
    """Point-in-time figures the broker computes when it publishes $SYS."""

    uptime: int
    clients_connected: int
    clients_disconnected: int  # persistent sessions without a connection
    retained: int
    subscriptions: int
    queued: int  # queue entries of all sessions (queued + in flight)
    stored: int  # distinct queued messages + retained messages
    inflight: int


def sys_topics(stats: BrokerStats, gauges: Gauges, version: str) -> list[tuple[str, str]]:
    """The ``$SYS`` topic/value pairs to publish (retained, QoS 0)."""
    p = "$SYS/broker/"
    out = [
        (p + "version", version),
        (p + "uptime", f"{gauges.uptime} seconds"),
        (p + "clients/connected", str(gauges.clients_connected)),
        (p + "clients/active", str(gauges.clients_connected)),
        (p + "clients/disconnected", str(gauges.clients_disconnected)),
        (p + "clients/inactive", str(gauges.clients_disconnected)),
        (p + "clients/total", str(gauges.clients_connected + gauges.clients_disconnected)),
        (p + "clients/maximum", str(stats.clients_maximum)),
        (p + "messages/received", str(stats.messages_received)),
        (p + "messages/sent", str(stats.messages_sent)),
        (p + "messages/stored", str(gauges.stored)),
        (p + "messages/inflight", str(gauges.inflight)),
        (p + "publish/messages/received", str(stats.publish_received)),
        (p + "publish/messages/sent", str(stats.publish_sent)),
        (p + "publish/messages/dropped", str(stats.dropped_total)),
        (p + "publish/messages/rejected", str(stats.publish_rejected)),
        (p + "retained messages/count", str(gauges.retained)),
        (p + "subscriptions/count", str(gauges.subscriptions)),
        (p + "load/bytes/received", str(stats.bytes_received)),
        (p + "load/bytes/sent", str(stats.bytes_sent)),
        (p + "store/queued", str(gauges.queued)),
        (p + "clients/refused/reserved_client_id", str(stats.refused_reserved_client_id)),
        (p + "clients/refused/session_owner", str(stats.refused_session_owner)),
        (p + "clients/refused/max_sessions", str(stats.refused_max_sessions)),
    ]
    for reason in DROP_REASONS:
        out.append(
            (p + "publish/messages/dropped/" + reason, str(getattr(stats, "dropped_" + reason)))
        )
    return out
