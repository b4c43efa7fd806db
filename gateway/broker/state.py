"""The state the broker core owns, and the primitive ways of changing it.

Every part of the broker (connect, routing, delivery, ...) is a mixin class built on
``BrokerState``; ``core.Broker`` combines them. So there is one owner of the state and no
extra layer between the shell's call and the code that handles it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from gateway.broker.access import AllowAll, Authorizer
from gateway.broker.effects import Action, Close, Send
from gateway.broker.journal import Journal
from gateway.broker.ledger import Ledger
from gateway.broker.outbox import Outbox
from gateway.broker.router import Router
from gateway.broker.session_table import SessionTable
from gateway.broker.settings import BrokerSettings
from gateway.broker.stats import BrokerStats
from gateway.broker.timers import Timers
from gateway.mqtt.packets import Packet, Properties


class BrokerState:
    """Everything the broker owns; the mixins in the other modules operate on it."""

    def __init__(
        self,
        settings: BrokerSettings,
        authorizer: Authorizer | None = None,
        server_name: str = "edge-gateway",
    ) -> None:
        self.settings = settings
        self.server_name = server_name
        self.stats = BrokerStats()
        # What the shell must do (Send, Close, SetKeepAlive) since the last take_effects();
        # the outbox appends to the same list.
        self._actions: list[Action] = []
        self._non_send = 0  # Close/SetKeepAlive actions among _actions (for messages_sent)
        self.journal = Journal()
        self.sessions = SessionTable(self.journal)
        self.ledger = Ledger()
        self.timers = Timers()
        self.router = Router(
            settings.max_retained_messages,
            authorizer if authorizer is not None else AllowAll(),
            self.ledger,
            self.stats,
        )
        self.outbox = Outbox(self._actions, self.stats, self.ledger, self.journal, self.timers)
        self._started_at: float | None = None
        self._next_sys = 0.0
        self._now = 0.0
        self._connack_props_cache: Properties | None = None
        # Figures that live outside the core (connection layer, store), as (name, value)
        # pairs below $SYS/broker/; set by the composition root.
        self.sys_extra: Callable[[], Iterable[tuple[str, str]]] | None = None
        self.stats.on_drop = self._on_drop

    @property
    def authorizer(self) -> Authorizer:
        return self.router.authorizer

    def set_authorizer(self, authorizer: Authorizer) -> None:
        """Use ``authorizer`` from now on (also on a configuration reload)."""
        self.router.set_authorizer(authorizer)

    def _event(self, kind: str, client_id: str | None, detail: str) -> None:
        self.journal.event(kind, client_id, detail, self._now)

    def _on_drop(self, reason: str, n: int, detail: str, client_id: str | None) -> None:
        self._event("dropped", client_id, f"{n} message(s), {reason}: {detail}")
        if client_id is not None:
            s = self.sessions.get(client_id)
            if s is not None:
                s.dropped += n

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
