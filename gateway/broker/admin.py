"""What an administrator may do to sessions and queues (the admin API and the TUI), and
what the broker tells pollers: change counters, recent events, figures.

Like every other input, these calls leave their packets and store operations to
``take_effects()``; the shell flushes them right after the call.
"""

from __future__ import annotations

from collections.abc import Collection

from gateway.broker.disconnect import after_disconnect, detach, end_session
from gateway.broker.parts import Parts, event
from gateway.broker.queue_policy import pending_list
from gateway.broker.records import Message
from gateway.broker.router import Publication
from gateway.broker.routing import accept
from gateway.broker.session import Session
from gateway.broker.session_info import SessionInfo, session_info
from gateway.mqtt.packets import NO_PROPERTIES
from gateway.mqtt.reason_codes import ReasonCode

_ADMINISTRATIVE_ACTION = ReasonCode.ADMINISTRATIVE_ACTION.value


def kick(p: Parts, client_id: str, now: float) -> bool:
    """Close the client's connection (v5: DISCONNECT 0x98 Administrative action) as if
    the link had dropped: the will is published, a persistent session stays. False if
    the client is not connected."""
    s = p.sessions.get(client_id)
    if s is None or s.conn is None:
        return False
    conn = s.conn
    event(p, "kick", client_id, "disconnected by an administrator")
    detach(p, conn, _ADMINISTRATIVE_ACTION)
    after_disconnect(p, s, conn.will, now)
    return True


def delete_session(p: Parts, client_id: str, now: float) -> bool:
    """Remove the session with its subscriptions and queue, from memory and the store.
    A connected client is disconnected first (0x98 for v5) and no will is published:
    an administrator removing a client does not want its last words sent. False if
    there is no such session."""
    s = p.sessions.get(client_id)
    if s is None:
        return False
    conn = s.conn
    if conn is not None:
        conn.will = None
        detach(p, conn, _ADMINISTRATIVE_ACTION)
    s.will = None
    s.will_due_at = None
    pending_topic = s.pending_topic
    dropped = len(s.queue) + len(s.inflight)
    event(
        p,
        "session_deleted",
        client_id,
        "deleted by an administrator" + (f", {dropped} message(s) dropped" if dropped else ""),
    )
    end_session(p, s, now)
    if pending_topic is not None:
        # Its commands are gone: a retained pending list must not keep showing them.
        _publish_report(p, pending_topic, pending_list(()))
    return True


def _publish_report(p: Parts, topic: str, payload: bytes) -> None:
    """A retained QoS 1 report of the broker's own (a pending list)."""
    accept(p, Publication(topic, payload, 1, True, NO_PROPERTIES, None, "", p.now))


def session_info_of(p: Parts, client_id: str) -> SessionInfo | None:
    """One session's entry of sessions_info(), without building all the others."""
    s = p.sessions.get(client_id)
    return None if s is None else session_info(s)


def session_packet_ids(p: Parts, client_id: str) -> tuple[frozenset[int], frozenset[int]]:
    """(packet ids in flight to the client, QoS 2 packet ids from it awaiting PUBREL).
    A client that relays a session's packet ids to a broker of its own (the upstream
    bridge) needs them to know which ids the far side may still hold state for."""
    s = p.sessions.get(client_id)
    if s is None:
        return frozenset(), frozenset()
    return frozenset(s.inflight), frozenset(s.inbound_qos2)


def queue_entries(p: Parts, client_id: str) -> list[tuple[int, Message, bool]] | None:
    """(seq, message, in flight) of the session's undelivered messages in delivery order:
    in flight first, then queued; None if there is no such session."""
    s = p.sessions.get(client_id)
    if s is None:
        return None
    return entries_of(s)


def cancel_queued(p: Parts, client_id: str, seqs: Collection[int] | None, now: float) -> list[int]:
    """Remove queued (not yet sent) messages of a session durably: those whose seq is in
    ``seqs``, or all of them for None. A session with a queue policy gets a ``cancelled``
    notice for each and its pending list again. Returns the seqs removed, in delivery
    order; in-flight and unknown seqs are skipped."""
    s = p.sessions.get(client_id)
    if s is None:
        return []
    wanted = None if seqs is None else set(seqs)
    chosen = [e for e in s.queue if wanted is None or e.seq in wanted]
    for e in chosen:
        s.queue.discard(e)
        p.outbox.finish(s, e)
        p.outbox.notify(s, "cancelled", e.message, now, id=e.seq)
    return [e.seq for e in chosen]


def stats_snapshot(p: Parts) -> dict[str, float | int]:
    """Point-in-time figures and running totals (a caller computes rates from two)."""
    stats = p.stats
    connected = queued = inflight = 0
    for s in p.sessions.by_id.values():
        if s.conn is not None:
            connected += 1
        queued += len(s.queue)
        inflight += len(s.inflight)
    return {
        "clients_connected": connected,
        "sessions": len(p.sessions),
        "subscriptions": len(p.router.tree),
        "retained": len(p.router.retained),
        "queued": queued,
        "inflight": inflight,
        "messages_received": stats.messages_received,
        "messages_sent": stats.messages_sent,
        "publish_received": stats.publish_received,
        "publish_sent": stats.publish_sent,
        "publish_dropped": stats.dropped_total,
        "bytes_received": stats.bytes_received,
        "bytes_sent": stats.bytes_sent,
        "connections_total": stats.connections_total,
    }


def entries_of(s: Session) -> list[tuple[int, Message, bool]]:
    entries = [(e.seq, e.message, True) for e in s.inflight.values()]
    entries.sort(key=lambda t: t[0])
    entries.extend((e.seq, e.message, False) for e in s.queue)
    return entries
