"""Where publications go: the subscription tree (shared groups included), the retained
messages, and the authorizer's say on who may publish and receive what.

The router owns that data; handing a message to a session's queue is the outbox's
business, and the broker (routing.py) walks a match and calls it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from gateway.broker.access import AllowAll, Authorizer
from gateway.broker.ledger import Ledger
from gateway.broker.records import Message, SubscriptionRecord
from gateway.broker.retained import RetainedStore
from gateway.broker.session import Session
from gateway.broker.stats import BrokerStats
from gateway.broker.topic_tree import SharedGroup, SubscriptionTree, is_sys_topic
from gateway.mqtt.packets import Properties, Publish

# A retained message that replaces a smaller one may grow by this much while the store is
# full (store_limit.py): device states stay current.
RETAINED_SLACK = 1024


class Publication(NamedTuple):
    """One message to route, as it came in (a NamedTuple: one is built per PUBLISH)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties
    expires_at: float | None
    origin: str  # the publisher's client id; "" for the broker's own messages
    now: float
    packet: Publish | None = None  # the PUBLISH it came in, reused for QoS 0 where it fits

    def message(self, msg_id: int, retain: bool) -> Message:
        return Message(
            msg_id,
            self.topic,
            self.payload,
            self.qos,
            retain,
            self.properties,
            self.expires_at,
            self.origin,
            self.now,
        )


class Router:
    def __init__(
        self,
        max_retained: int,
        authorizer: Authorizer,
        ledger: Ledger,
        stats: BrokerStats,
    ) -> None:
        self.tree = SubscriptionTree()
        self.retained = RetainedStore(max_retained)
        self.authorizer: Authorizer = authorizer
        # The prefix of the topics the authorizer is asked about ("" = all, None = none).
        self.acl_scope: str | None = None
        self._ledger = ledger
        self._stats = stats
        self.set_authorizer(authorizer)

    def set_authorizer(self, authorizer: Authorizer) -> None:
        """Use ``authorizer`` from now on (also on a configuration reload).

        The per-message checks are skipped for topics the authorizer cannot refuse: all of
        them with AllowAll, and every topic outside its ``restricted_prefix`` when it has one
        (an authorizer that only guards the gateway's own topics).
        """
        self.authorizer = authorizer
        if isinstance(authorizer, AllowAll):
            self.acl_scope = None
        else:
            restricted = getattr(authorizer, "restricted_prefix", None)
            self.acl_scope = restricted if isinstance(restricted, str) and restricted else ""

    def checked(self, topic: str) -> bool:
        """Must the authorizer be asked about ``topic``?"""
        scope = self.acl_scope
        return scope is not None and topic.startswith(scope)

    def may_publish(self, username: str | None, client_id: str, topic: str) -> bool:
        """Could a client that is not ACL-exempt publish on ``topic`` itself?"""
        if is_sys_topic(topic):
            return False
        return not self.checked(topic) or self.authorizer.can_publish(username, client_id, topic)

    def may_receive(self, s: Session, topic: str) -> bool:
        return (
            s.acl_exempt
            or not self.checked(topic)
            or self.authorizer.can_receive(s.username, s.client_id, topic)
        )

    # --- retained ---------------------------------------------------------------------

    def keep_retained(self, pub: Publication) -> Message | None:
        """Keep (or, for an empty payload, remove) the retained copy of ``pub``, durably
        unless it is $SYS. Returns the message kept, for routing to share."""
        topic = pub.topic
        retained = self.retained
        durable = not is_sys_topic(topic)
        if not pub.payload:
            if retained.remove(topic) is not None and durable:
                self._ledger.delete_retained(topic)
            return None
        if self._ledger.full and durable and self.retained_refused(topic, pub.payload):
            return None  # the store is full (store_limit.py): counted there
        if not retained.can_store(topic):
            self._stats.dropped("retained_full", 1, f"retained store full; {topic} not retained")
            return None
        msg = pub.message(self._ledger.new_msg_id(), True)
        retained.put(msg)
        if durable:
            self._ledger.put_retained(msg)
        return msg

    def expire_retained(self, now: float) -> None:
        for msg in self.retained.expire(now):
            if not is_sys_topic(msg.topic):
                self._ledger.delete_retained(msg.topic)

    def retain_grows(self, topic: str, payload: bytes) -> bool:
        if is_sys_topic(topic):
            return False  # $SYS is never stored
        old = self.retained.get(topic)
        return old is None or len(payload) > max(len(old.payload), RETAINED_SLACK)

    def retained_refused(self, topic: str, payload: bytes) -> bool:
        """While the store is full a retained message that would grow it is not kept (the
        previous one, if any, stays; see retain_grows). True if refused (and counted)."""
        if not self._ledger.full or not self.retain_grows(topic, payload):
            return False
        self._stats.dropped("store_full", 1, f"store full; {topic} not retained")
        return True

    # --- subscriptions ----------------------------------------------------------------

    def would_store(self, pub: Publication, sessions: Mapping[str, Session]) -> bool:
        """Would routing ``pub`` add to the store? Only asked while it is full, so a walk of
        the matching subscriptions costs nothing in normal operation. Errs towards yes (the
        ACL and shared-group choice are not considered)."""
        topic = pub.topic
        if pub.retain and pub.payload and self.retain_grows(topic, pub.payload):
            return True
        match = self.tree.match(topic)
        for t in match.targets:
            s = sessions.get(t.client_id)
            if s is None or not s.stored:
                continue
            dq = t.local_qos if t.client_id == pub.origin else t.qos
            if dq < 0:
                continue  # No Local
            conn = s.conn
            if min(pub.qos, dq) > 0 or conn is None or not conn.window:
                return True  # stored in flight, or queued (QoS 0 too, if the session does)
        for group in match.groups:
            for client_id in group.order:
                s = sessions.get(client_id)
                if s is not None and s.stored:
                    return True
        return False

    def pick(
        self, group: SharedGroup, topic: str, sessions: Mapping[str, Session]
    ) -> tuple[Session, SubscriptionRecord] | None:
        """Round robin over the connected members; if none is connected, over all of them
        (the message waits in that member's session queue)."""
        order = group.order
        n = len(order)
        if not n:
            return None
        start = group.next_index % n
        fallback: tuple[int, Session] | None = None
        acl = self.checked(topic)
        for k in range(n):
            i = (start + k) % n
            s = sessions.get(order[i])
            if s is None:
                continue
            if (
                acl
                and not s.acl_exempt
                and not self.authorizer.can_receive(s.username, s.client_id, topic)
            ):
                continue
            if s.conn is not None:
                group.next_index = i + 1
                return s, group.members[order[i]]
            if fallback is None:
                fallback = (i, s)
        if fallback is None:
            return None
        i, s = fallback
        group.next_index = i + 1
        return s, group.members[order[i]]
