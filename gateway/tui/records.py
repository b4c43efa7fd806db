"""The records the terminal UI keeps, each parsed from one entry of an admin API message.

``parse`` returns None for an entry that does not look right (no id, not an object); a field
of the wrong type is read as its default (see payload.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.tui.payload import (
    is_object,
    read_bool,
    read_int,
    read_opt_float,
    read_opt_int,
    read_str,
    read_str_pairs,
    schema_text,
)


@dataclass(frozen=True, slots=True)
class Session:
    client_id: str
    username: str = ""
    protocol: int = 0
    persistent: bool = False
    connected: bool = False
    offline_since: float | None = None
    session_expiry: int = 0
    expires_at: float | None = None
    subscriptions: tuple[str, ...] = ()
    queued: int = 0
    queued_bytes: int = 0
    inflight: int = 0
    inflight_bytes: int = 0
    listener: str = ""
    address: str = ""
    device: str | None = None

    @classmethod
    def parse(cls, obj: object) -> Session | None:
        if not is_object(obj):
            return None
        assert isinstance(obj, dict)
        client_id = obj.get("client_id")
        if not isinstance(client_id, str):
            return None
        subs = obj.get("subscriptions")
        device = obj.get("device")
        return cls(
            client_id=client_id,
            username=read_str(obj, "username"),
            protocol=read_int(obj, "protocol"),
            persistent=read_bool(obj, "persistent"),
            connected=read_bool(obj, "connected"),
            offline_since=read_opt_float(obj, "offline_since"),
            session_expiry=read_int(obj, "session_expiry"),
            expires_at=read_opt_float(obj, "expires_at"),
            subscriptions=tuple(s for s in subs if isinstance(s, str))
            if isinstance(subs, list)
            else (),
            queued=read_int(obj, "queued"),
            queued_bytes=read_int(obj, "queued_bytes"),
            inflight=read_int(obj, "inflight"),
            inflight_bytes=read_int(obj, "inflight_bytes"),
            listener=read_str(obj, "listener"),
            address=read_str(obj, "address"),
            device=device if isinstance(device, str) else None,
        )


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    kind: str = ""
    name: str = ""
    policy: tuple[tuple[str, object], ...] = ()
    link: str = "unknown"
    last_seen: float | None = None
    address: str = ""
    rssi: int | None = None
    wake_interval: float | None = None
    pending: int = 0
    schema: str = ""  # its command schema as compact JSON; "" when it takes no commands
    wake_observed: float | None = None  # seconds between its last two wake-ups, as heard
    # Where each policy key's value comes from: "default", "config" or "admin".
    policy_from: tuple[tuple[str, str], ...] = ()

    @property
    def policy_dict(self) -> dict[str, object]:
        return dict(self.policy)

    @classmethod
    def parse(cls, obj: object) -> Device | None:
        if not is_object(obj):
            return None
        assert isinstance(obj, dict)
        device_id = obj.get("id")
        if not isinstance(device_id, str):
            return None
        policy = obj.get("policy")
        return cls(
            id=device_id,
            kind=read_str(obj, "kind"),
            name=read_str(obj, "name"),
            policy=tuple(sorted(policy.items())) if is_object(policy) else (),  # type: ignore[union-attr]
            link=read_str(obj, "link", "unknown"),
            last_seen=read_opt_float(obj, "last_seen"),
            address=read_str(obj, "address"),
            rssi=read_opt_int(obj, "rssi"),
            wake_interval=read_opt_float(obj, "wake_interval"),
            pending=read_int(obj, "pending"),
            schema=schema_text(obj.get("schema")),
            wake_observed=read_opt_float(obj, "wake_observed"),
            policy_from=read_str_pairs(obj.get("policy_from")),
        )


@dataclass(frozen=True, slots=True)
class Pending:
    device: str
    id: int | str
    command: object = None
    queued_at: float | None = None
    expires_at: float | None = None
    state: str = "queued"
    attempts: int = 0
    topic: str = ""

    @classmethod
    def parse(cls, device: str, obj: object) -> Pending | None:
        if not is_object(obj):
            return None
        assert isinstance(obj, dict)
        ident = obj.get("id")
        if isinstance(ident, bool) or not isinstance(ident, int | str):
            return None
        return cls(
            device=device,
            id=ident,
            command=obj.get("command"),
            queued_at=read_opt_float(obj, "queued_at"),
            expires_at=read_opt_float(obj, "expires_at"),
            state=read_str(obj, "state", "queued"),
            attempts=read_int(obj, "attempts"),
            topic=read_str(obj, "topic"),
        )


@dataclass(frozen=True, slots=True)
class Upstream:
    """One upstream connection (gateway/upstream/status.py has the gateway's side)."""

    name: str
    host: str = ""
    port: int = 0
    protocol: int = 0
    client_id: str = ""
    state: str = "unknown"
    since: float | None = None
    queued: int = 0
    forwarded: int = 0
    received: int = 0
    dropped: int = 0
    duplicates: int = 0
    rate_out: float = 0.0
    rate_in: float = 0.0
    last_error: str = ""

    @classmethod
    def parse(cls, obj: object) -> Upstream | None:
        if not is_object(obj):
            return None
        assert isinstance(obj, dict)
        name = obj.get("name")
        if not isinstance(name, str) or not name:
            return None
        return cls(
            name=name,
            host=read_str(obj, "host"),
            port=read_int(obj, "port"),
            protocol=read_int(obj, "protocol"),
            client_id=read_str(obj, "client_id"),
            state=read_str(obj, "state", "unknown"),
            since=read_opt_float(obj, "since"),
            queued=read_int(obj, "queued"),
            forwarded=read_int(obj, "forwarded"),
            received=read_int(obj, "received"),
            dropped=read_int(obj, "dropped"),
            duplicates=read_int(obj, "duplicates"),
            rate_out=read_opt_float(obj, "rate_out") or 0.0,
            rate_in=read_opt_float(obj, "rate_in") or 0.0,
            last_error=read_str(obj, "last_error"),
        )


@dataclass(frozen=True, slots=True)
class Event:
    seq: int  # our own arrival counter: events may come without one
    ts: float | None
    type: str
    who: str
    detail: str
    result: str = ""  # command events: their outcome


@dataclass(frozen=True, slots=True)
class Status:
    version: str = ""
    started_at: float | None = None
    uptime: float | None = None
    clients: int | None = None
    sessions: int | None = None
    devices: int | None = None
    pending: int | None = None  # commands waiting, all devices
    msgs_in_per_s: float | None = None
    msgs_out_per_s: float | None = None
    store_bytes: int | None = None
    upstreams: int | None = None  # connections configured
    upstreams_connected: int | None = None

    @classmethod
    def parse(cls, obj: object) -> Status | None:
        if not is_object(obj):
            return None
        assert isinstance(obj, dict)
        return cls(
            version=read_str(obj, "version"),
            started_at=read_opt_float(obj, "started_at"),
            uptime=read_opt_float(obj, "uptime"),
            clients=read_opt_int(obj, "clients"),
            sessions=read_opt_int(obj, "sessions"),
            devices=read_opt_int(obj, "devices"),
            pending=read_opt_int(obj, "pending"),
            msgs_in_per_s=read_opt_float(obj, "msgs_in_per_s"),
            msgs_out_per_s=read_opt_float(obj, "msgs_out_per_s"),
            store_bytes=read_opt_int(obj, "store_bytes"),
            upstreams=read_opt_int(obj, "upstreams"),
            upstreams_connected=read_opt_int(obj, "upstreams_connected"),
        )
