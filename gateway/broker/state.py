"""The state the broker core owns, and the primitive ways of changing it.

Every part of the broker (connect, routing, delivery, ...) is a mixin class built on
``BrokerState``; ``core.Broker`` combines them. So there is one owner of the state and no
extra layer between the shell's call and the code that handles it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from gateway.broker.access import AllowAll, Authorizer
from gateway.broker.effects import Action, Close, Send
from gateway.broker.queue_policy import notice
from gateway.broker.records import Message, StoreOp
from gateway.broker.retained import RetainedStore
from gateway.broker.session import Connection, QEntry, Session
from gateway.broker.settings import BrokerSettings
from gateway.broker.stats import BrokerStats
from gateway.broker.topic_tree import SubscriptionTree
from gateway.mqtt.packets import Packet, Properties

# Kinds of BrokerState._timers entries.
WILL_TIMER = 0
EXPIRY_TIMER = 1


class BrokerState:
    """Everything the broker owns; the mixins in the other modules operate on it."""

    def __init__(
        self,
        settings: BrokerSettings,
        authorizer: Authorizer | None = None,
        server_name: str = "edge-gateway",
    ) -> None:
        self.settings = settings
        self.authorizer: Authorizer = authorizer if authorizer is not None else AllowAll()
        # With no ACL the per-message authorisation calls are skipped altogether.
        self._acl = not isinstance(self.authorizer, AllowAll)
        self.server_name = server_name
        self.stats = BrokerStats()
        self._conns: dict[int, Connection] = {}
        self._sessions: dict[str, Session] = {}
        self._tree = SubscriptionTree()
        self._retained = RetainedStore(settings.max_retained_messages)
        self._actions: list[Action] = []
        self._store: list[StoreOp] = []
        self._non_send = 0  # Close/SetKeepAlive actions among _actions (for messages_sent)
        self._msg_refs: dict[int, int] = {}  # msg_id -> persistent queue entries using it
        self._next_msg_id = 1
        self._next_seq = 1
        # (due, kind, client_id): will delays and session expiry; validated when popped.
        self._timers: list[tuple[float, int, str]] = []
        # (expires_at, seq, session, entry) of queued entries whose message can expire.
        self._queue_expiry: list[tuple[float, int, Session, QEntry]] = []
        self._started_at: float | None = None
        self._next_sys = 0.0
        self._now = 0.0
        self._connack_props_cache: Properties | None = None
        self._online = 0  # sessions with a connection
        # (topic, payload) notices about undelivered queued messages, published at the end of
        # the current step so that routing never re-enters itself.
        self._notices: list[tuple[str, bytes]] = []
        # Sessions whose pending list (Session.pending_topic) must be published again.
        self._pending_dirty: dict[str, Session] = {}
        # Figures that live outside the core (connection layer, store), as (name, value)
        # pairs below $SYS/broker/; set by the composition root.
        self.sys_extra: Callable[[], Iterable[tuple[str, str]]] | None = None

    def _send(self, conn_id: int, packet: Packet) -> None:
        self._actions.append(Send(conn_id, packet))

    def _close(self, conn_id: int) -> None:
        self._actions.append(Close(conn_id))
        self._non_send += 1

    def _clock(self, now: float) -> None:
        self._now = now
        if self._started_at is None:
            self._started_at = now
            if self.settings.sys_interval > 0:
                self._next_sys = now + self.settings.sys_interval

    def _pending_changed(self, s: Session) -> None:
        if s.pending_topic is not None:
            self._pending_dirty[s.client_id] = s

    def _notify(self, s: Session, kind: str, msg: Message, **extra: object) -> None:
        if s.notify_topic is not None:
            self._notices.append((s.notify_topic, notice(kind, msg, self._now, **extra)))

    def _new_msg_id(self) -> int:
        msg_id = self._next_msg_id
        self._next_msg_id = msg_id + 1
        return msg_id
