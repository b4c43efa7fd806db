"""Which topics an upstream connection carries, and their names on either side.

A rule is Mosquitto's ``topic pattern direction qos local_prefix remote_prefix``: the local
topic ``local_prefix + T`` and the remote topic ``remote_prefix + T`` are the same message for
every non-empty ``T`` that ``pattern`` matches. Rules are tried in order; the first that
matches decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gateway.mqtt.codec import is_valid_topic_filter
from gateway.mqtt.topics import topic_matches
from gateway.upstream.settings import TopicRule


def sends_up(rule: TopicRule) -> bool:
    return rule.direction in ("out", "both")


def takes_down(rule: TopicRule) -> bool:
    return rule.direction in ("in", "both")


def strip_prefix(topic: str, prefix: str, pattern: str) -> str | None:
    """``T`` if ``topic`` is ``prefix + T`` with a non-empty ``T`` matching ``pattern``."""
    if not topic.startswith(prefix):
        return None
    rest = topic[len(prefix) :]
    return rest if rest and topic_matches(pattern, rest) else None


def _rule_problem(rule: TopicRule) -> str | None:
    if rule.direction not in ("out", "in", "both"):
        return f"direction {rule.direction!r} is not out, in or both"
    if not 0 <= rule.qos <= 2:
        return f"qos {rule.qos} is not 0, 1 or 2"
    for prefix in (rule.local_prefix, rule.remote_prefix):
        if any(char in prefix for char in "+#\0"):
            return f"prefix {prefix!r} holds a wildcard or NUL"
    for side in (rule.local_prefix + rule.pattern, rule.remote_prefix + rule.pattern):
        if side.startswith("$share/") or not is_valid_topic_filter(side):
            return f"{side!r} is not a topic filter"
    return None


def _subscriptions(filters: Iterable[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    # One filter once, at the highest QoS a rule asks of it: a second SUBSCRIBE to the same
    # filter would replace the first, and with it the QoS the earlier rule needs.
    best: dict[str, int] = {}
    for topic_filter, qos in filters:
        best[topic_filter] = max(qos, best.get(topic_filter, 0))
    return tuple(best.items())


class TopicMap:
    """The rules of one upstream connection, as the bridge uses them. ValueError for a rule
    that names no valid filters (the config reader has refused it already, with its line)."""

    def __init__(self, rules: Sequence[TopicRule], topic_prefix: str = "gw") -> None:
        for index, rule in enumerate(rules):
            problem = _rule_problem(rule)
            if problem:
                raise ValueError(f"topic rule {index}: {problem}")
        self.rules = tuple(rules)
        # Local topics an upstream message may never be published on: the gateway's own
        # (admin API, policies, bridge state) and the broker's.
        self._private_local = f"{topic_prefix}/bridge/"
        self.local_subscriptions: tuple[tuple[str, int], ...] = _subscriptions(
            (r.local_prefix + r.pattern, r.qos) for r in self.rules if sends_up(r)
        )
        self.remote_subscriptions: tuple[tuple[str, int], ...] = _subscriptions(
            (r.remote_prefix + r.pattern, r.qos) for r in self.rules if takes_down(r)
        )

    def to_remote(self, local_topic: str) -> tuple[str, int] | None:
        """(remote topic, the rule's QoS) for a local message that goes up; None if none."""
        for rule in self.rules:
            if sends_up(rule):
                rest = strip_prefix(local_topic, rule.local_prefix, rule.pattern)
                if rest is not None:
                    return rule.remote_prefix + rest, rule.qos
        return None

    def to_local(self, remote_topic: str) -> tuple[str, int] | None:
        """(local topic, the rule's QoS) for an upstream message that comes down; None if no
        rule takes it or its local name would be one of the gateway's own or a $ topic."""
        for rule in self.rules:
            if takes_down(rule):
                rest = strip_prefix(remote_topic, rule.remote_prefix, rule.pattern)
                if rest is not None:
                    local = rule.local_prefix + rest
                    if local.startswith("$") or (local + "/").startswith(self._private_local):
                        return None
                    return local, rule.qos
        return None
