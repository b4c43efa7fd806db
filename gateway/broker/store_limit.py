"""A full store (``persistence.max_size_mb``): what the broker stops storing, and how it says so.

The store measures its size and tells the broker when it is full and when it is no longer
(``set_store_full``, with hysteresis on the store's side); the core decides what to refuse:

* a QoS 1/2 PUBLISH from an MQTT 5 client that would add to the store (a message for a
  persistent session, a retained message that grows) is refused whole: PUBACK/PUBREC 0x97
  Quota exceeded, with a reason string (which the connection leaves out for a client that
  asked for none). It was not
  acknowledged, so nothing is lost: the client knows and may send it again later;
* anything else that would be stored for a persistent session (an MQTT 3.1.1 publisher, QoS 0
  queued for an offline session, the broker's own messages) follows that session's overflow
  policy, as a full queue does: ``drop-oldest`` drops the session's oldest queued messages
  to make room, ``reject-new`` (or a session with nothing queued) drops the new one;
* a retained message is kept only if it replaces one of its topic at least as large, or is
  small (RETAINED_SLACK): device states stay current, and each topic that had a retained
  message can grow by that much at most.

What shrinks the store carries on: deliveries and acknowledgements, QoS 0, clean sessions,
expiry, deletions. Every message not stored is counted (``$SYS/broker/publish/messages/
dropped/store_full``), logged (rate-limited) and an event; so is each change of state.
"""

from __future__ import annotations

import logging

from gateway.broker.effects import Send
from gateway.broker.parts import Parts, event
from gateway.broker.session import Connection
from gateway.mqtt.packets import Properties, PubAck, PubRec
from gateway.mqtt.reason_codes import ReasonCode

log = logging.getLogger("gateway.broker")

_QUOTA = ReasonCode.QUOTA_EXCEEDED.value
REASON = "the broker's store is full (persistence.max_size_mb); try again later"


def set_store_full(p: Parts, full: bool, detail: str = "") -> None:
    """The store says it is full (True) or has room again (False); ``detail`` (its size
    and limit) is for the log and the event."""
    if full == p.ledger.full:
        return
    p.ledger.full = full
    if full:
        log.warning(
            "store full (%s): new messages for persistent sessions and retained messages "
            "are refused until deliveries make room (MQTT 5 publishers get 0x97)",
            detail,
        )
        event(p, "store_full", None, detail)
    else:
        log.warning("store has room again (%s): storing new messages again", detail)
        event(p, "store_ok", None, detail)


# --- refusing ---------------------------------------------------------------------------


def refuse_for_store(p: Parts, conn: Connection, packet_id: int, qos: int, topic: str) -> None:
    """Refuse an MQTT 5 QoS 1/2 PUBLISH whole: 0x97, nothing routed or kept."""
    p.stats.dropped("store_full", 1, f"store full: PUBLISH on {topic} refused with 0x97", None)
    # The connection leaves the reason string out where the client asked for no problem
    # information or it would not fit (mqtt/packet_size.py).
    props = Properties(reason_string=REASON)
    if qos == 1:
        p.actions.append(Send(conn.conn_id, PubAck(packet_id, _QUOTA, props)))
    else:
        # A PUBREC >= 0x80 ends the exchange: the packet id is not kept.
        p.actions.append(Send(conn.conn_id, PubRec(packet_id, _QUOTA, props)))
