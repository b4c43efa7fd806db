"""Topic names, topic filters and the subscription trie (MQTT 3.1.1 §4.7, MQTT 5.0 §4.7-4.8).

The trie is the routing hot path. ``match`` returns, per matching client, the subscription
options already folded together (maximum QoS, every subscription identifier), so that the
broker does no per-message grouping; results are cached per topic name and the cache is
dropped whenever a subscription is added or removed.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.broker.records import SubscriptionRecord
from gateway.broker.shared_empty import NO_ITEMS

SHARE_PREFIX = "$share/"

# Topics seen in one stretch without a (un)subscribe. Clearing the whole cache when it is
# full keeps the bookkeeping trivial; a home gateway has far fewer live topics than this.
_CACHE_LIMIT = 20_000


def is_sys_topic(topic: str) -> bool:
    """A topic of the ``$SYS`` tree, which only the broker publishes to."""
    return topic == "$SYS" or topic.startswith("$SYS/")


def split_shared(topic_filter: str) -> tuple[str | None, str] | None:
    """Split ``$share/<group>/<filter>`` into (group, filter); (None, filter) for a normal
    filter; None when the shared form is malformed (empty or wildcard group, no filter)."""
    if not topic_filter.startswith(SHARE_PREFIX):
        return None, topic_filter
    rest = topic_filter[len(SHARE_PREFIX) :]
    group, sep, inner = rest.partition("/")
    if not sep or not group or not inner or "+" in group or "#" in group:
        return None
    return group, inner


def has_wildcard(topic_filter: str) -> bool:
    return "+" in topic_filter or "#" in topic_filter


def filter_matches(filter_levels: list[str], topic: str) -> bool:
    """Does a (valid, non-shared) filter, already split on ``/``, match a topic name?"""
    if topic.startswith("$") and filter_levels[0] in ("+", "#"):
        return False  # §4.7.2: a leading wildcard never matches a $-topic
    topic_levels = topic.split("/")
    n = len(topic_levels)
    for i, level in enumerate(filter_levels):
        if level == "#":
            return True  # also matches the parent level itself ("a/#" matches "a")
        if i >= n:
            return False
        if level != "+" and level != topic_levels[i]:
            return False
    return len(filter_levels) == n


class Target:
    """One client's matching subscriptions on one topic, folded together.

    ``qos`` is -1 when nothing applies. The ``local_*`` fields are the same fold without the
    No Local subscriptions: they apply when the client itself is the publisher.
    """

    __slots__ = (
        "client_id",
        "local_qos",
        "local_rap",
        "local_sub_ids",
        "qos",
        "rap",
        "sub_ids",
    )

    def __init__(self, client_id: str, records: list[SubscriptionRecord]) -> None:
        self.client_id = client_id
        self.qos, self.rap, self.sub_ids = _fold(records)
        local = [r for r in records if not r.no_local]
        if len(local) == len(records):
            self.local_qos, self.local_rap, self.local_sub_ids = self.qos, self.rap, self.sub_ids
        else:
            self.local_qos, self.local_rap, self.local_sub_ids = _fold(local)


def _fold(records: list[SubscriptionRecord]) -> tuple[int, bool, tuple[int, ...]]:
    if not records:
        return -1, False, ()
    qos = max(r.qos for r in records)
    rap = any(r.retain_as_published for r in records)
    ids = tuple(r.subscription_id for r in records if r.subscription_id is not None)
    return qos, rap, ids


class SharedGroup:
    """The members of one ``$share/<name>/<filter>``; the broker picks one per message."""

    __slots__ = ("members", "name", "next_index", "order", "topic_filter")

    def __init__(self, name: str, topic_filter: str) -> None:
        self.name = name
        self.topic_filter = topic_filter
        self.members: dict[str, SubscriptionRecord] = {}
        self.order: tuple[str, ...] = ()  # member client ids, for round robin
        self.next_index = 0


@dataclass(frozen=True, slots=True)
class Match:
    targets: tuple[Target, ...]
    groups: tuple[SharedGroup, ...]

    @property
    def empty(self) -> bool:
        return not self.targets and not self.groups


NO_MATCH = Match((), ())


class _Node:
    # Most nodes use one or two of their three dicts: the others are the shared NO_ITEMS.
    __slots__ = ("children", "shared", "subs")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = NO_ITEMS
        self.subs: dict[str, SubscriptionRecord] = NO_ITEMS
        self.shared: dict[str, SharedGroup] = NO_ITEMS

    def empty(self) -> bool:
        return not self.children and not self.subs and not self.shared


class SubscriptionTree:
    """Every subscription of every session, indexed by filter level."""

    def __init__(self) -> None:
        self._root = _Node()
        self._cache: dict[str, Match] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, record: SubscriptionRecord) -> bool:
        """Insert or replace the client's subscription on ``record.topic_filter`` (which must
        be valid, shared form included). Returns True if it did not exist before."""
        parts = split_shared(record.topic_filter)
        if parts is None:
            raise ValueError(f"invalid shared subscription filter {record.topic_filter!r}")
        group_name, topic_filter = parts
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                if node.children is NO_ITEMS:
                    node.children = {}
                child = node.children[level] = _Node()
            node = child
        self._cache.clear()
        if group_name is None:
            new = record.client_id not in node.subs
            if node.subs is NO_ITEMS:
                node.subs = {}
            node.subs[record.client_id] = record
        else:
            group = node.shared.get(group_name)
            if group is None:
                if node.shared is NO_ITEMS:
                    node.shared = {}
                group = node.shared[group_name] = SharedGroup(group_name, topic_filter)
            new = record.client_id not in group.members
            group.members[record.client_id] = record
            group.order = tuple(group.members)
        if new:
            self._count += 1
        return new

    def remove(self, client_id: str, topic_filter: str) -> bool:
        parts = split_shared(topic_filter)
        if parts is None:
            return False
        group_name, inner = parts
        path: list[tuple[_Node, str]] = []
        node = self._root
        for level in inner.split("/"):
            child = node.children.get(level)
            if child is None:
                return False
            path.append((node, level))
            node = child
        if group_name is None:
            if node.subs.pop(client_id, None) is None:
                return False
        else:
            group = node.shared.get(group_name)
            if group is None or group.members.pop(client_id, None) is None:
                return False
            if group.members:
                group.order = tuple(group.members)
                group.next_index %= len(group.order)
            else:
                del node.shared[group_name]
        self._count -= 1
        self._cache.clear()
        # Prune branches left empty so that long-lived brokers don't accumulate dead nodes.
        while path and node.empty():
            parent, level = path.pop()
            del parent.children[level]
            node = parent
        return True

    def match(self, topic: str) -> Match:
        found = self._cache.get(topic)
        if found is not None:
            return found
        found = self._match(topic)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[topic] = found
        return found

    def _match(self, topic: str) -> Match:
        levels = topic.split("/")
        n = len(levels)
        subs: list[SubscriptionRecord] = []
        groups: list[SharedGroup] = []
        dollar = topic.startswith("$")
        stack: list[tuple[_Node, int]] = [(self._root, 0)]
        while stack:
            node, i = stack.pop()
            children = node.children
            if not (i == 0 and dollar):
                hash_node = children.get("#")
                if hash_node is not None:
                    subs.extend(hash_node.subs.values())
                    groups.extend(hash_node.shared.values())
            if i == n:
                subs.extend(node.subs.values())
                groups.extend(node.shared.values())
                continue
            if not (i == 0 and dollar):
                plus = children.get("+")
                if plus is not None:
                    stack.append((plus, i + 1))
            exact = children.get(levels[i])
            if exact is not None:
                stack.append((exact, i + 1))
        if not subs and not groups:
            return NO_MATCH
        by_client: dict[str, list[SubscriptionRecord]] = {}
        for rec in subs:
            lst = by_client.get(rec.client_id)
            if lst is None:
                by_client[rec.client_id] = [rec]
            else:
                lst.append(rec)
        targets = tuple(Target(cid, recs) for cid, recs in by_client.items())
        return Match(targets, tuple(groups))
