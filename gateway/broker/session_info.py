"""A session as the admin API and the TUI show it."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.broker.records import OWNER_GATEWAY
from gateway.broker.session import Session


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session as the admin API and the TUI show it."""

    client_id: str
    username: str | None
    owner: str  # who may connect to it: "gateway", "user:<name>" or "anonymous"
    protocol_version: int
    persistent: bool
    connected: bool
    disconnected_at: float | None
    expiry_interval: int
    expires_at: float | None
    subscriptions: tuple[str, ...]
    queued: int
    queued_bytes: int
    inflight: int
    inflight_bytes: int
    inbound_qos2: int
    will_pending: bool
    listener: str | None
    peer: str | None
    keep_alive: int
    dropped: int = 0  # messages for it dropped (queue limits, expiry, size) since start


def session_info(s: Session) -> SessionInfo:
    conn = s.conn
    return SessionInfo(
        client_id=s.client_id,
        username=s.username,
        owner=owner_label(s.owner),
        protocol_version=s.version,
        persistent=s.persistent,
        connected=conn is not None,
        disconnected_at=s.disconnected_at if conn is None else None,
        expiry_interval=s.expiry,
        expires_at=s.expires_at(),
        subscriptions=tuple(s.subscriptions),
        queued=len(s.queue),
        queued_bytes=s.queue.bytes,
        inflight=len(s.inflight),
        inflight_bytes=sum(len(e.message.payload) for e in s.inflight.values()),
        inbound_qos2=len(s.inbound_qos2),
        will_pending=s.will is not None,
        listener=conn.info.listener if conn is not None else None,
        peer=conn.info.peer if conn is not None else None,
        keep_alive=conn.keep_alive if conn is not None else 0,
        dropped=s.dropped,
    )


def owner_label(owner: str | None) -> str:
    if owner == OWNER_GATEWAY:
        return "gateway"
    return "anonymous" if owner is None else "user:" + owner
