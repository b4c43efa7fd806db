"""The checks of an ``upstream:`` connection that the config reader runs before the gateway
starts: names, MQTT strings, topic rules, the local side an upstream may write to, and loops.

Every check is pure. A problem is an ``UpstreamProblem`` naming the key below the connection
(``topics[1].pattern``) so that the reader can report file, line and key path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from gateway.mqtt.topics import filter_covers, filter_intersection
from gateway.upstream.rules import sends_up, strip_prefix, takes_down
from gateway.upstream.settings import TopicRule, UpstreamConfig

# The name is part of a local client id and of <prefix>/bridge/upstream/<name>; 64 characters
# keep both readable and well inside every broker's client id limit.
NAME = re.compile(r"^[a-z0-9_-]{1,64}$")
_MAX_MQTT_STRING = 65_535  # bytes of UTF-8 (a 2-byte length prefix)


class UpstreamProblem(ValueError):
    """``key``: the key path below the connection ('' = the connection itself); ``index``:
    which connection, for problems found by comparing connections."""

    def __init__(self, key: str, message: str, index: int | None = None) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message
        self.index = index


def mqtt_string_problem(value: str) -> str | None:
    """Why ``value`` cannot go into an MQTT packet as a UTF-8 string, or None.

    Control characters and non-characters are only discouraged by the standard (MQTT 5.0
    §1.5.4), but Mosquitto 2.0 drops a client whose SUBSCRIBE contains one: refused here rather
    than found out as a connection that never stays up.
    """
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return "expected well-formed text (it contains a lone surrogate)"
    if size > _MAX_MQTT_STRING:
        return f"expected at most {_MAX_MQTT_STRING} bytes of UTF-8, got {size}"
    for char in value:
        code = ord(char)
        if code == 0:
            return "expected no NUL character"
        if code < 0x20 or 0x7F <= code <= 0x9F:
            return f"expected no control character (found U+{code:04X})"
        if 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE:
            return f"expected no Unicode non-character (found U+{code:04X})"
    return None


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a usable topic rule pattern (an MQTT topic filter), or None."""
    if not pattern:
        return "expected a topic filter such as '#' or '+/set'"
    if pattern.startswith("$share/"):
        return "expected a topic filter, not a shared subscription ('$share/...')"
    for index, level in enumerate(levels := pattern.split("/")):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return "'#' must be a whole level and the last one"
        if "+" in level and level != "+":
            return "'+' must be a whole level"
    return mqtt_string_problem(pattern)


def prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` is not a usable local_prefix/remote_prefix, or None ('' is fine).

    A non-empty prefix must end with '/': it then adds whole topic levels. Mosquitto glues
    prefix and topic together as they are, so that 'gw' + 'thermostat/set' is
    'gwthermostat/set' (nothing a user publishes) and 'gw' + '#' is no filter at all; nothing
    is added behind the user's back here either, the mistake is named instead.
    """
    if "+" in prefix or "#" in prefix:
        return "expected a prefix without wildcards ('+', '#')"
    if prefix.startswith("$share/"):
        return "expected a topic prefix, not a shared subscription ('$share/...')"
    problem = mqtt_string_problem(prefix)
    if problem:
        return problem
    if prefix and not prefix.endswith("/"):
        return (
            f"expected '' or a prefix ending with '/' (such as {prefix + '/'!r}): a prefix is "
            "glued to the topic as it is"
        )
    return None


def client_id_problem(client_id: str) -> str | None:
    if not client_id:
        return "expected a non-empty client id (null: edge-gateway-<hostname>-<name>)"
    return mqtt_string_problem(client_id)


def topic_name_problem(topic: str) -> str | None:
    """Why ``topic`` cannot be published on (by a client, upstream), or None."""
    if not topic:
        return "expected a topic name, got an empty string"
    if "+" in topic or "#" in topic:
        return "expected a topic name without wildcards ('+', '#')"
    if topic.startswith("$"):
        return "expected a topic name not starting with '$' (brokers refuse client publishes there)"
    return mqtt_string_problem(topic)


# --------------------------------------------------------------------------- topic rules


def local_filter(rule: TopicRule) -> str:
    return rule.local_prefix + rule.pattern


def remote_filter(rule: TopicRule) -> str:
    return rule.remote_prefix + rule.pattern


def only_private_local(rule: TopicRule, topic_prefix: str) -> bool:
    """Can the rule only name local topics an upstream may never publish on: the gateway's
    own ``<topic_prefix>/bridge/...`` (admin API, bridge state) and ``$`` topics?"""
    levels = local_filter(rule).split("/")
    if levels[0].startswith("$"):
        return True
    return filter_covers((*topic_prefix.split("/"), "bridge", "#"), levels)


def _example(levels: Sequence[str]) -> str:
    # Any level value the wildcards allow; "x" cannot start with '$', so a topic made of it
    # passes the '$' rules of both filters.
    return "/".join("x" if level in ("+", "#") else level for level in levels)


def remote_overlap(out_rule: TopicRule, in_rule: TopicRule) -> str | None:
    """A remote topic that ``out_rule`` may send up and ``in_rule`` would take down, or None.

    The meet of the two remote filters holds every candidate. It is exact but for the topics
    a rule never carries: its prefix itself (an empty rest) and, below a wildcard pattern, a
    rest starting with '$'. A meet with a wildcard holds endless topics and its example is
    carried by both; a meet without one is one topic, checked as it is.
    """
    meet = filter_intersection(
        remote_filter(out_rule).split("/"), remote_filter(in_rule).split("/")
    )
    if meet is None:
        return None
    topic = _example(meet)
    for rule in (out_rule, in_rule):
        if strip_prefix(topic, rule.remote_prefix, rule.pattern) is None:
            return None
    return topic


def check_local_safety(rules: Sequence[TopicRule], topic_prefix: str) -> None:
    for index, rule in enumerate(rules):
        if takes_down(rule) and only_private_local(rule, topic_prefix):
            raise UpstreamProblem(
                f"topics[{index}]",
                f"an {rule.direction!r} rule whose local topics ({local_filter(rule)!r}) are all "
                f"the gateway's own ({topic_prefix}/bridge/...: admin API, bridge state) or "
                "'$' topics; the upstream may never publish there",
            )


def check_v311_loops(rules: Sequence[TopicRule]) -> None:
    """MQTT 3.1.1 has no No Local: whatever the bridge sends up on a topic that one of its
    own subscriptions upstream matches comes straight back down."""
    for out_index, out_rule in enumerate(rules):
        if not sends_up(out_rule):
            continue
        for in_index, in_rule in enumerate(rules):
            if not takes_down(in_rule):
                continue
            example = remote_overlap(out_rule, in_rule)
            if example is None:
                continue
            if out_index == in_index:
                raise UpstreamProblem(
                    f"topics[{out_index}].direction",
                    "'both' with protocol 3.1.1 would loop: MQTT 3.1.1 has no No Local, so "
                    f"what the bridge sends up on {remote_filter(out_rule)!r} comes straight "
                    "back down. Use protocol 5, or an out and an in rule whose remote topics "
                    "do not overlap",
                )
            later, earlier = max(out_index, in_index), min(out_index, in_index)
            raise UpstreamProblem(
                f"topics[{later}]",
                f"with protocol 3.1.1 this rule and topics[{earlier}] would loop: "
                f"topics[{out_index}] sends up on {remote_filter(out_rule)!r} and "
                f"topics[{in_index}] takes down {remote_filter(in_rule)!r}, both hold e.g. "
                f"{example!r}, and MQTT 3.1.1 has no No Local to keep the bridge's own messages "
                "from coming back. Use protocol 5, or remote topics that do not overlap",
            )


def check_connection(cfg: UpstreamConfig, topic_prefix: str) -> None:
    """The checks that need the whole connection: raises UpstreamProblem."""
    if not cfg.topics:
        raise UpstreamProblem("topics", "expected at least one topic rule")
    check_local_safety(cfg.topics, topic_prefix)
    if cfg.protocol == 4:
        check_v311_loops(cfg.topics)


# --------------------------------------------------------------------------- connections


def _broker(cfg: UpstreamConfig) -> tuple[str, int]:
    return cfg.host.lower().rstrip("."), cfg.port


def _cross_loop(first: UpstreamConfig, second: UpstreamConfig) -> tuple[int, int, str] | None:
    """(out rule of ``first``, in rule of ``second``, example topic) if they would loop."""
    for out_index, out_rule in enumerate(first.topics):
        if not sends_up(out_rule):
            continue
        for in_index, in_rule in enumerate(second.topics):
            if takes_down(in_rule):
                example = remote_overlap(out_rule, in_rule)
                if example is not None:
                    return out_index, in_index, example
    return None


def check_connections(configs: Sequence[UpstreamConfig]) -> None:
    """Names are unique; two connections to one broker neither share a client id (each would
    take the other's session over, endlessly) nor loop through it (No Local only spares a
    connection its own messages, not those of its neighbour)."""
    seen: dict[str, int] = {}
    for index, cfg in enumerate(configs):
        if cfg.name in seen:
            raise UpstreamProblem(
                "name", f"{cfg.name!r} is already the name of upstream[{seen[cfg.name]}]", index
            )
        seen[cfg.name] = index
    for index, cfg in enumerate(configs):
        for other_index, other in enumerate(configs[:index]):
            if _broker(cfg) != _broker(other):
                continue
            if cfg.client_id == other.client_id:
                raise UpstreamProblem(
                    "client_id",
                    f"{cfg.client_id!r} is already the client id of upstream[{other_index}] "
                    "on the same broker: each would disconnect the other, endlessly",
                    index,
                )
            for out_cfg, out_at, in_cfg, in_at in (
                (cfg, index, other, other_index),
                (other, other_index, cfg, index),
            ):
                loop = _cross_loop(out_cfg, in_cfg)
                if loop is not None:
                    out_rule, in_rule, example = loop
                    raise UpstreamProblem(
                        "topics",
                        f"upstream[{out_at}].topics[{out_rule}] sends up and "
                        f"upstream[{in_at}].topics[{in_rule}] takes down the same topics of "
                        f"one broker (e.g. {example!r}): a message would go round between "
                        "them for ever (No Local only works within one connection)",
                        index,
                    )
