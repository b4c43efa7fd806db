"""Retained messages: one per topic name, looked up by topic filter on subscribe."""

from __future__ import annotations

import heapq

from gateway.broker.records import Message
from gateway.broker.topic_tree import filter_matches, has_wildcard


class RetainedStore:
    """In-memory retained messages. Durability is the broker's business (it emits the
    PutRetained / DeleteRetained ops); this class only holds and finds them."""

    def __init__(self, max_messages: int = 0) -> None:
        self.max_messages = max_messages  # 0 = unlimited
        self._by_topic: dict[str, Message] = {}
        # (expires_at, topic, msg_id) of messages with an expiry; stale entries are skipped.
        self._expiry: list[tuple[float, str, int]] = []

    def __len__(self) -> int:
        return len(self._by_topic)

    def __contains__(self, topic: str) -> bool:
        return topic in self._by_topic

    def get(self, topic: str) -> Message | None:
        return self._by_topic.get(topic)

    def messages(self) -> list[Message]:
        return list(self._by_topic.values())

    def can_store(self, topic: str) -> bool:
        """False when the store is full and ``topic`` would be a new entry."""
        return (
            not self.max_messages
            or topic in self._by_topic
            or len(self._by_topic) < self.max_messages
        )

    def put(self, message: Message) -> None:
        self._by_topic[message.topic] = message
        if message.expires_at is not None:
            heapq.heappush(self._expiry, (message.expires_at, message.topic, message.msg_id))

    def remove(self, topic: str) -> Message | None:
        return self._by_topic.pop(topic, None)

    def matching(self, topic_filter: str, now: float) -> list[Message]:
        """Unexpired retained messages whose topic matches a (non-shared) filter."""
        if not has_wildcard(topic_filter):
            msg = self._by_topic.get(topic_filter)
            found = [] if msg is None else [msg]
        else:
            levels = topic_filter.split("/")
            found = [m for t, m in self._by_topic.items() if filter_matches(levels, t)]
        return [m for m in found if m.expires_at is None or m.expires_at > now]

    def expire(self, now: float) -> list[Message]:
        """Remove and return the messages whose expiry has passed."""
        gone: list[Message] = []
        heap = self._expiry
        while heap and heap[0][0] <= now:
            _, topic, msg_id = heapq.heappop(heap)
            msg = self._by_topic.get(topic)
            if msg is not None and msg.msg_id == msg_id:
                del self._by_topic[topic]
                gone.append(msg)
        return gone
