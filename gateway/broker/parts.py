"""The parts the broker is made of, as one record the input handlers are given.

Each part owns its data and says what may be done with it; the handlers (connect.py,
inbound_publish.py, subscribe.py, disconnect.py, wills.py, routing.py, tick.py, admin.py,
restore.py) are functions that orchestrate them for one input. The few fields that are
not a part are the step's output and the time.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(slots=True, eq=False)
class Parts:
    settings: BrokerSettings
    stats: BrokerStats
    journal: Journal
    sessions: SessionTable
    ledger: Ledger
    timers: Timers
    router: Router
    outbox: Outbox
    # What the shell must do (Send, Close, SetKeepAlive) since the last take_effects(); the
    # outbox appends to the same list object.
    actions: list[Action]
    connack_properties: Properties  # the CONNACK properties every v5 client gets
    now: float = 0.0  # the time of the current input: the core never reads a clock
    non_send: int = 0  # Close/SetKeepAlive actions among ``actions`` (for messages_sent)
    # Why the last command was refused (command_check.py), for the publisher's reason string.
    refusal: str | None = None


def send(p: Parts, conn_id: int, packet: Packet) -> None:
    p.actions.append(Send(conn_id, packet))


def close(p: Parts, conn_id: int) -> None:
    p.actions.append(Close(conn_id))
    p.non_send += 1


def event(p: Parts, kind: str, client_id: str | None, detail: str) -> None:
    p.journal.event(kind, client_id, detail, p.now)
