"""Access control lists: ordered allow/deny rules over user, client id, topic and action.

A rule applies to a client when its ``user`` and ``client_id`` shell-style globs match (an
anonymous client is matched as the user name ``""``, so ``*`` includes it and ``?*`` does
not). Its ``topic`` is an MQTT topic filter in which ``%u`` and ``%c`` stand for the client's
user name and client id. The first applicable rule whose topic matches and whose actions
include the one asked about decides; when none does, ``default`` decides.

* ``write`` (PUBLISH from the client) and ``read`` (delivery to the client): the rule's filter
  must match the topic name.
* ``subscribe``: the rule's filter must *cover* the requested filter, i.e. every topic the
  requested filter can match is matched by the rule's filter (``a/#`` covers ``a/+/b``,
  ``a/+`` does not cover ``a/#``). Per-message ``read`` rules still apply to what a broad
  subscription delivers.

As in MQTT subscriptions, a rule filter starting with a wildcard never matches a ``$`` topic
(``#`` does not grant ``$SYS/...``). Admin users bypass every rule.

``BridgeGuard`` wraps the rules (or stands alone when there are none): the gateway's own
``<prefix>/bridge/...`` topics are protected from non-admin clients whatever the rules say.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from gateway.broker.access import Authorizer
from gateway.mqtt.topics import filter_covers, filter_matches

READ = "read"
WRITE = "write"
SUBSCRIBE = "subscribe"
ACTIONS: tuple[str, ...] = (READ, WRITE, SUBSCRIBE)

_READ_BIT, _WRITE_BIT, _SUBSCRIBE_BIT = 1, 2, 4
_BIT = {READ: _READ_BIT, WRITE: _WRITE_BIT, SUBSCRIBE: _SUBSCRIBE_BIT}

AclDefault = Literal["allow", "deny"]

NOT_AUTHORIZED = 0x87
# SUBACK failure reason codes (MQTT 5 spec 3.9.3); a refusing rule must answer with one.
SUBACK_FAILURE_CODES: frozenset[int] = frozenset(
    {0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2}
)

_CACHE_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class AclRule:
    user: str = "*"
    client_id: str = "*"
    topic: str = "#"
    actions: frozenset[str] = field(default_factory=lambda: frozenset(ACTIONS))
    allow: bool = True
    reason_code: int = NOT_AUTHORIZED  # SUBACK reason when this rule refuses a subscription


def topic_filter_problem(topic_filter: str) -> str | None:
    """Why ``topic_filter`` is not a valid MQTT topic filter (``%u``/``%c`` allowed), or None."""
    if not topic_filter:
        return "a topic filter must not be empty"
    if "\0" in topic_filter:
        return "a topic filter must not contain NUL"
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return "'#' must be a whole level and the last one"
        if "+" in level and level != "+":
            return "'+' must be a whole level"
    return None


def _glob_matcher(pattern: str) -> Callable[[str], bool]:
    if pattern == "*":
        return lambda _value: True
    if not any(ch in pattern for ch in "*?["):
        return pattern.__eq__
    compiled = re.compile(fnmatch.translate(pattern))
    return lambda value: compiled.match(value) is not None


def _strip_share(topic_filter: str) -> str:
    # "$share/<group>/<filter>": access is about the topics, not the group name.
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        if len(parts) == 3:
            return parts[2]
    return topic_filter


def _substitutable(value: str) -> bool:
    # A name holding "/", "+" or "#" would change the shape of the filter it is put into
    # (client "bob/x" must not get a share of client "bob"'s subtree), so such rules skip it.
    return bool(value) and not any(ch in value for ch in "/+#\0")


@dataclass(frozen=True, slots=True)
class _Compiled:
    user: Callable[[str], bool]
    client_id: Callable[[str], bool]
    template: str
    levels: tuple[str, ...] | None  # pre-split when the topic has no %u / %c
    mask: int
    allow: bool
    reason_code: int


# (filter levels, action mask, allow, reason code) of one rule for one client.
_Bound = tuple[tuple[str, ...], int, bool, int]


class Acl:
    """An ``Authorizer`` (gateway.broker.access) built from ordered rules."""

    def __init__(
        self,
        rules: Iterable[AclRule],
        default: AclDefault = "allow",
        admin_users: Iterable[str] = (),
    ) -> None:
        if default not in ("allow", "deny"):
            raise ValueError(f"default must be 'allow' or 'deny', not {default!r}")
        self._default_allow = default == "allow"
        self._admins = frozenset(admin_users)
        self._rules = tuple(self._compile(rule) for rule in rules)
        # Rules applicable to one (user, client id), with %u/%c substituted: computed once
        # per client rather than once per message.
        self._bound: dict[tuple[str | None, str], tuple[_Bound, ...]] = {}

    @staticmethod
    def _compile(rule: AclRule) -> _Compiled:
        problem = topic_filter_problem(rule.topic)
        if problem:
            raise ValueError(f"ACL topic {rule.topic!r}: {problem}")
        unknown = set(rule.actions) - set(ACTIONS)
        if unknown:
            raise ValueError(f"unknown ACL actions {sorted(unknown)}")
        mask = 0
        for action in rule.actions:
            mask |= _BIT[action]
        templated = "%u" in rule.topic or "%c" in rule.topic
        return _Compiled(
            user=_glob_matcher(rule.user),
            client_id=_glob_matcher(rule.client_id),
            template=rule.topic,
            levels=None if templated else tuple(rule.topic.split("/")),
            mask=mask,
            allow=rule.allow,
            reason_code=rule.reason_code,
        )

    def _rules_for(self, username: str | None, client_id: str) -> tuple[_Bound, ...]:
        key = (username, client_id)
        bound = self._bound.get(key)
        if bound is not None:
            return bound
        user = username or ""
        result: list[_Bound] = []
        for rule in self._rules:
            if not (rule.user(user) and rule.client_id(client_id)):
                continue
            levels = rule.levels
            if levels is None:
                topic = rule.template
                if "%u" in topic:
                    if username is None or not _substitutable(username):
                        continue
                    topic = topic.replace("%u", username)
                if "%c" in topic:
                    if not _substitutable(client_id):
                        continue
                    topic = topic.replace("%c", client_id)
                levels = tuple(topic.split("/"))
            result.append((levels, rule.mask, rule.allow, rule.reason_code))
        bound = tuple(result)
        if len(self._bound) >= _CACHE_LIMIT:
            self._bound.clear()
        self._bound[key] = bound
        return bound

    def _topic_allowed(self, bit: int, username: str | None, client_id: str, topic: str) -> bool:
        if username is not None and username in self._admins:
            return True
        if not self._rules:
            return self._default_allow
        levels = topic.split("/")
        for flt, mask, allow, _code in self._rules_for(username, client_id):
            if mask & bit and filter_matches(flt, levels):
                return allow
        return self._default_allow

    def can_publish(self, username: str | None, client_id: str, topic: str) -> bool:
        return self._topic_allowed(_WRITE_BIT, username, client_id, topic)

    def can_receive(self, username: str | None, client_id: str, topic: str) -> bool:
        return self._topic_allowed(_READ_BIT, username, client_id, topic)

    def subscribe_refusal(self, username: str | None, client_id: str, topic_filter: str) -> int:
        if username is not None and username in self._admins:
            return 0
        default = 0 if self._default_allow else NOT_AUTHORIZED
        if not self._rules:
            return default
        requested = _strip_share(topic_filter).split("/")
        for flt, mask, allow, code in self._rules_for(username, client_id):
            if mask & _SUBSCRIBE_BIT and filter_covers(flt, requested):
                return 0 if allow else code
        return default

    def forget(self, username: str | None, client_id: str) -> None:
        """Drop the per-client cache entry (e.g. when the client disconnects)."""
        self._bound.pop((username, client_id), None)


# Below <prefix>/bridge: what only admins may receive (whatever the ACL rules say). The
# admin API's requests and answers, its live updates and events are the gateway's own
# business; bridge/state and bridge/devices stay readable by everyone (Home Assistant).
_PRIVATE_BRIDGE_FILTERS = ("request/#", "response/#", "updates/#", "events/#")


class BridgeGuard:
    """An ``Authorizer`` protecting the gateway's own topics from non-admin clients, then
    asking ``inner`` (the ACL, if any) about everything else.

    * publish to ``<prefix>/bridge`` and below: refused (only the gateway and admins speak
      there: device commands through the admin API, policies, state);
    * receive of ``<prefix>/bridge/{request,response,updates,events}`` and below: refused;
      a subscription entirely inside them is refused (SUBACK 0x87), a broader one
      (``#``, ``<prefix>/bridge/+``) is granted and simply never carries them.

    Admin clients never get here (the broker exempts them); admin user names are also let
    through, for sessions restored before their client is back. Without ``inner`` the guard
    only restricts topics starting with ``restricted_prefix``, so the broker skips the
    per-message check for every other topic.
    """

    def __init__(
        self,
        topic_prefix: str = "gw",
        inner: Authorizer | None = None,
        admin_users: Iterable[str] = (),
    ) -> None:
        self.scope = f"{topic_prefix}/bridge"
        self._inner = inner
        self._admins = frozenset(admin_users)
        self.restricted_prefix: str | None = self.scope if inner is None else None
        self._private = tuple(
            tuple(f"{self.scope}/{flt}".split("/")) for flt in _PRIVATE_BRIDGE_FILTERS
        )

    def _in_scope(self, topic: str) -> bool:
        scope = self.scope
        return topic.startswith(scope) and (len(topic) == len(scope) or topic[len(scope)] == "/")

    def is_private(self, topic: str) -> bool:
        """Is ``topic`` one non-admins may not receive?"""
        if not self._in_scope(topic):
            return False
        levels = topic.split("/")
        return any(filter_matches(flt, levels) for flt in self._private)

    def can_publish(self, username: str | None, client_id: str, topic: str) -> bool:
        if username is not None and username in self._admins:
            return True
        if self._in_scope(topic):
            return False
        return self._inner is None or self._inner.can_publish(username, client_id, topic)

    def can_receive(self, username: str | None, client_id: str, topic: str) -> bool:
        if username is not None and username in self._admins:
            return True
        if self.is_private(topic):
            return False
        return self._inner is None or self._inner.can_receive(username, client_id, topic)

    def subscribe_refusal(self, username: str | None, client_id: str, topic_filter: str) -> int:
        if username is not None and username in self._admins:
            return 0
        requested = _strip_share(topic_filter).split("/")
        if any(filter_covers(flt, requested) for flt in self._private):
            return NOT_AUTHORIZED
        if self._inner is None:
            return 0
        return self._inner.subscribe_refusal(username, client_id, topic_filter)


def gateway_authorizer(
    topic_prefix: str,
    rules: Sequence[AclRule],
    default: AclDefault,
    admin_users: Iterable[str],
) -> Authorizer:
    """What the broker asks: the ACL rules (if any) behind the built-in guard of
    ``<topic_prefix>/bridge/...``."""
    admins = tuple(admin_users)
    inner: Authorizer | None = None
    if rules or default != "allow":
        inner = Acl(rules, default, admins)
    return BridgeGuard(topic_prefix, inner, admins)
