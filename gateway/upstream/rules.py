"""Which topics an upstream connection carries, and their names on either side.

A rule is Mosquitto's ``topic pattern direction qos local_prefix remote_prefix``: the local
topic ``local_prefix + T`` and the remote topic ``remote_prefix + T`` are the same message for
every ``T`` that ``pattern`` matches. Rules are tried in order; the first that matches decides.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.mqtt.topics import topic_matches
from gateway.upstream.settings import TopicRule


def _outgoing(rule: TopicRule) -> bool:
    return rule.direction in ("out", "both")


def _incoming(rule: TopicRule) -> bool:
    return rule.direction in ("in", "both")


def _strip(topic: str, prefix: str, pattern: str) -> str | None:
    """``T`` if ``topic`` is ``prefix + T`` with ``T`` matching ``pattern``."""
    if not topic.startswith(prefix):
        return None
    rest = topic[len(prefix) :]
    return rest if rest and topic_matches(pattern, rest) else None


class TopicMap:
    """The rules of one upstream connection, as the bridge uses them."""

    def __init__(self, rules: Sequence[TopicRule], topic_prefix: str = "gw") -> None:
        self.rules = tuple(rules)
        # Local topics an upstream message may never be published on: the gateway's own
        # (admin API, policies, bridge state) and the broker's.
        self._private_local = f"{topic_prefix}/bridge/"
        self.local_subscriptions: tuple[tuple[str, int], ...] = tuple(
            (r.local_prefix + r.pattern, r.qos) for r in self.rules if _outgoing(r)
        )
        self.remote_subscriptions: tuple[tuple[str, int], ...] = tuple(
            (r.remote_prefix + r.pattern, r.qos) for r in self.rules if _incoming(r)
        )

    def to_remote(self, local_topic: str) -> tuple[str, int] | None:
        """(remote topic, the rule's QoS) for a local message that goes up; None if none."""
        for rule in self.rules:
            if _outgoing(rule):
                rest = _strip(local_topic, rule.local_prefix, rule.pattern)
                if rest is not None:
                    return rule.remote_prefix + rest, rule.qos
        return None

    def to_local(self, remote_topic: str) -> tuple[str, int] | None:
        """(local topic, the rule's QoS) for an upstream message that comes down; None if no
        rule takes it or its local name would be one of the gateway's own or a $ topic."""
        for rule in self.rules:
            if _incoming(rule):
                rest = _strip(remote_topic, rule.remote_prefix, rule.pattern)
                if rest is not None:
                    local = rule.local_prefix + rest
                    if local.startswith("$") or (local + "/").startswith(self._private_local):
                        return None
                    return local, rule.qos
        return None
