"""The broker's view of authorisation: a small protocol that the auth package implements."""

from __future__ import annotations

from typing import Protocol


class Authorizer(Protocol):
    """ACL decisions, synchronous and cheap (called on the hot path).

    An authorizer that can only refuse topics starting with some prefix may say so with an
    attribute ``restricted_prefix: str``; the broker then never asks it about other topics
    (see Router.set_authorizer).
    """

    def can_publish(self, username: str | None, client_id: str, topic: str) -> bool: ...

    def can_receive(self, username: str | None, client_id: str, topic: str) -> bool:
        """May a message on ``topic`` be delivered to this client ("read" rules)?"""
        ...

    def subscribe_refusal(self, username: str | None, client_id: str, topic_filter: str) -> int:
        """0 if the subscription is allowed, otherwise the MQTT 5 reason code to refuse it
        with (0x87 Not authorized by default; a rule may name another, e.g. 0x80)."""
        ...


class AllowAll:
    """Authorizer used when no ACL is configured."""

    def can_publish(self, username: str | None, client_id: str, topic: str) -> bool:
        return True

    def can_receive(self, username: str | None, client_id: str, topic: str) -> bool:
        return True

    def subscribe_refusal(self, username: str | None, client_id: str, topic_filter: str) -> int:
        return 0
