"""A data source that needs no gateway: fixed, deterministic sample data.

For the snapshot tests (same screen on every run: fixed timestamps, no clock) and the TUI
benchmark (any number of devices and sessions). Requests are recorded and answered from the
same data, so actions can be exercised without a broker.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from gateway.tui.client import LinkState, LinkStatus, RequestError

NOW = 1_790_000_000.0  # the sample's "now" (a fixed instant in 2026)

# What the gateway lists for an eQ-3 thermostat (devices/ble/eq3.py), shortened.
THERMOSTAT_SCHEMA: dict[str, object] = {
    "type": "object",
    "properties": {
        "mode": {"enum": ["auto", "manual"]},
        "target_temp": {"type": "number", "minimum": 4.5, "maximum": 30, "multipleOf": 0.5},
        "boost": {"type": "boolean"},
    },
    "additionalProperties": False,
    "minProperties": 1,
}


def sample_devices(count: int = 4, now: float = NOW) -> list[dict[str, object]]:
    """The demo devices (one of each kind the screens show), then numbered BTHome sensors
    up to `count`."""
    base = [*_demo_plug_and_sensor(now), *_demo_thermostats(now)]
    base.extend(_numbered_sensor(n, now) for n in range(len(base), count))
    return base[:count]


def _demo_plug_and_sensor(now: float) -> list[dict[str, object]]:
    return [
        {
            "id": "demo-plug",
            "kind": "shelly",
            "name": "Demo plug",
            "policy": {"session": "persistent", "command_ttl": 3600, "queue_depth": 10},
            "link": "online",
            "last_seen": now - 2,
            "address": "127.0.0.1:8080",
            "rssi": None,
            "wake_interval": None,
            "pending": 0,
        },
        {
            "id": "demo-sensor",
            "kind": "bthome",
            "name": "Demo sensor",
            "policy": {"session": "clean"},
            "link": "online",
            "last_seen": now - 5,
            "address": "A4:C1:38:00:00:01",
            "rssi": -67,
            "wake_interval": 300,  # the kind's default: not what the Wake column shows
            "wake_observed": 5.0,
            "pending": 0,
        },
    ]


def _demo_thermostats(now: float) -> list[dict[str, object]]:
    """Two eq3 valves that take commands: one asleep with commands waiting, one never heard."""
    return [
        {
            "id": "demo-thermostat",
            "kind": "eq3",
            "name": "Demo thermostat",
            "policy": {
                "session": "persistent",
                "command_ttl": 600,
                "coalesce": True,
                "wake_interval": 30,
            },
            "link": "offline",
            "last_seen": now - 95,
            "address": "00:1A:22:0A:0B:0C",
            "rssi": -80,
            "wake_interval": 30,
            "wake_observed": 30.2,
            "policy_from": {
                "session": "default",
                "command_ttl": "config",
                "wake_interval": "admin",
            },
            "pending": 2,
            "schema": THERMOSTAT_SCHEMA,
        },
        {
            "id": "hall-valve",  # declared in config.yaml, not heard from since start
            "kind": "eq3",
            "name": "Hall valve",
            "policy": {"session": "persistent", "command_ttl": 43200, "wake_interval": 600},
            "link": "unknown",
            "last_seen": None,
            "address": "00:1A:22:0A:0B:0D",
            "rssi": None,
            "wake_interval": 600,
            "pending": 0,
            "schema": THERMOSTAT_SCHEMA,
        },
    ]


def _numbered_sensor(n: int, now: float) -> dict[str, object]:
    return {
        "id": f"sensor-{n:04d}",
        "kind": "bthome",
        "name": f"Sensor {n}",
        "policy": {"session": "clean"},
        "link": "online" if n % 7 else "offline",
        "last_seen": now - n % 300,
        "address": f"A4:C1:38:{n >> 16 & 255:02X}:{n >> 8 & 255:02X}:{n & 255:02X}",
        "rssi": -40 - n % 50,
        "wake_interval": 300,
        "pending": 0,
    }


def sample_sessions(count: int = 5, now: float = NOW) -> list[dict[str, object]]:
    """The demo sessions (the TUI, two device sessions, two LAN clients), then numbered
    clients up to `count`."""
    base = _demo_sessions(now)
    for n in range(len(base), count):
        base.append(
            _session(
                f"client-{n:05d}",
                protocol=4 if n % 3 else 5,
                subscriptions=[f"room/{n % 20}/#"],
                address=f"10.0.{n >> 8 & 255}.{n & 255}:1883",
            )
        )
    return base[:count]


def _session(client_id: str, **extra: object) -> dict[str, object]:
    """A clean MQTT 5 client online over TCP with nothing queued, but for `extra`."""
    record: dict[str, object] = {
        "client_id": client_id,
        "username": None,
        "protocol": 5,
        "persistent": False,
        "connected": True,
        "offline_since": None,
        "session_expiry": 0,
        "expires_at": None,
        "subscriptions": [],
        "queued": 0,
        "queued_bytes": 0,
        "inflight": 0,
        "inflight_bytes": 0,
        "listener": "tcp:127.0.0.1:1883",
        "address": "127.0.0.1:50000",
        "device": None,
    }
    record.update(extra)
    return record


def _demo_sessions(now: float) -> list[dict[str, object]]:
    return [
        _session(
            "edge-gateway-tui",
            listener="unix:edge-gateway.sock",
            address="unix",
            subscriptions=["gw/bridge/updates/+", "gw/bridge/events"],
        ),
        _session(
            "gw-device-demo-plug",
            persistent=True,
            session_expiry=86400,
            device="demo-plug",
            subscriptions=["gw/demo-plug/set"],
            listener="in-process",
            address="in-process",
        ),
        _session(
            "gw-device-demo-thermostat",
            persistent=True,
            connected=False,
            offline_since=now - 95,
            session_expiry=86400,
            expires_at=now + 86305,
            queued=2,
            queued_bytes=41,
            device="demo-thermostat",
            subscriptions=["gw/demo-thermostat/set"],
            listener="in-process",
            address="in-process",
        ),
        _session(
            "home-assistant",
            username="ha",
            protocol=4,
            persistent=True,
            session_expiry=4294967295,
            subscriptions=["gw/#", "homeassistant/status"],
            address="192.168.1.20:43122",
        ),
        _session(
            "logger",
            username="logger",
            protocol=5,
            persistent=True,
            connected=False,
            offline_since=now - 7200,
            session_expiry=604800,
            expires_at=now + 597600,
            queued=130,
            queued_bytes=18250,
            subscriptions=["gw/+/state"],
            address="192.168.1.30:51515",
        ),
    ]


def sample_pending(now: float = NOW) -> dict[str, list[dict[str, object]]]:
    return {
        "demo-thermostat": [
            {
                "id": 17,
                "command": {"target_temp": 22.5},
                "queued_at": now - 80,
                "expires_at": now + 520,
                "state": "queued",
                "attempts": 0,
                "topic": "gw/demo-thermostat/set",
            },
            {
                "id": 18,
                "command": {"mode": "manual"},
                "queued_at": now - 12,
                "expires_at": now + 588,
                "state": "queued",
                "attempts": 1,
                "topic": "gw/demo-thermostat/set",
            },
        ]
    }


def sample_events(now: float = NOW) -> list[dict[str, object]]:
    return [
        {
            "seq": 1,
            "ts": now - 300,
            "type": "connect",
            "client_id": "home-assistant",
            "detail": "tcp:127.0.0.1:1883 192.168.1.20:43122",
        },
        {
            "type": "command",
            "ts": now - 200,
            "device": "demo-thermostat",
            "result": "superseded",
            "detail": {"command": {"target_temp": 21}},
        },
        {
            "seq": 2,
            "ts": now - 95,
            "type": "disconnect",
            "client_id": "gw-device-demo-thermostat",
            "detail": "asleep",
        },
        {
            "type": "command",
            "ts": now - 60,
            "device": "demo-plug",
            "result": "delivered",
            "detail": {"command": {"on": True}},
        },
        {"seq": 3, "ts": now - 30, "type": "kick", "client_id": "old-client", "detail": None},
    ]


def sample_upstreams(now: float = NOW) -> list[dict[str, object]]:
    """One upstream of each state, as the admin API lists them (gateway/upstream/status.py)."""

    def upstream(name: str, host: str, port: int, **extra: object) -> dict[str, object]:
        record: dict[str, object] = {
            "name": name,
            "host": host,
            "port": port,
            "protocol": 5,
            "client_id": f"edge-gateway-pi-{name}",
            "state": "connected",
            "since": now - 7300,
            "queued": 0,
            "forwarded": 0,
            "received": 0,
            "dropped": 0,
            "duplicates": 0,
            "rate_out": 0.0,
            "rate_in": 0.0,
            "last_error": None,
        }
        record.update(extra)
        return record

    return [
        upstream(
            "cloud", "broker.example.org", 8883,
            forwarded=48213, received=37, duplicates=2, rate_out=12.4, rate_in=0.1,
        ),
        upstream(
            "backup", "10.0.0.5", 1883,
            protocol=4, state="disconnected", since=now - 95, queued=1520, forwarded=9120,
            last_error="[Errno 111] Connect call failed ('10.0.0.5', 1883)",
        ),
        upstream(
            "site-b", "mqtt.site-b.lan", 1883,
            state="connecting", since=now - 4, queued=3, forwarded=870, dropped=250,
            last_error="keep-alive: no answer from the broker within 90 s",
        ),
    ]  # fmt: skip


def sample_status(
    now: float = NOW,
    devices: int = 4,
    sessions: int = 5,
    upstreams: list[dict[str, object]] | None = None,
) -> dict[str, object]:
    upstreams = sample_upstreams(now) if upstreams is None else upstreams
    return {
        "version": "0.1.0",
        "started_at": now - 7384,
        "uptime": 7384,
        "clients": 3,
        "sessions": sessions,
        "devices": devices,
        "msgs_in_per_s": 12.4,
        "msgs_out_per_s": 30.1,
        "store_bytes": 1_572_864,
        "upstreams": len(upstreams),
        "upstreams_connected": sum(1 for u in upstreams if u["state"] == "connected"),
    }


class StaticSource:
    """Serves sample data as if it came from a gateway; `connected=False` plays a gateway
    that is down, `upstreams=False` one with no upstream configured. Requests are recorded in
    `requests` and answered with `answers[action]` (or the list data)."""

    def __init__(
        self,
        devices: int = 4,
        sessions: int = 5,
        *,
        now: float = NOW,
        connected: bool = True,
        with_events: bool = True,
        upstreams: bool = True,
    ) -> None:
        self.now = now
        upstream_list = sample_upstreams(now) if upstreams else []
        self.data: dict[str, object] = {
            "devices": sample_devices(devices, now),
            "sessions": sample_sessions(sessions, now),
            "pending": sample_pending(now),
            "upstreams": upstream_list,
        }
        self.events = sample_events(now) if with_events else []
        self.status_payload = sample_status(now, devices, sessions, upstream_list)
        self.connected = connected
        if connected:
            self.status = LinkStatus(LinkState.CONNECTED, "connected to the sample")
        else:
            self.status = LinkStatus(
                LinkState.UNREACHABLE,
                "cannot reach the broker: [Errno 111] Connection refused",
                retry_in=5.0,
            )
        self.requests: list[tuple[str, dict[str, object]]] = []
        self.answers: dict[str, object] = {}
        self.on_message: Callable[[str, bytes], None] = lambda _t, _p: None
        self.on_status: Callable[[LinkStatus], None] = lambda _s: None

    def start(
        self,
        on_message: Callable[[str, bytes], None],
        on_status: Callable[[LinkStatus], None],
    ) -> None:
        self.on_message, self.on_status = on_message, on_status
        on_message("gw/bridge/status", json.dumps(self.status_payload).encode())
        for event in self.events:
            on_message("gw/bridge/events", json.dumps(event).encode())
        if self.connected:
            # As a real link does: CONNECTED is reported after start, which loads the lists.
            on_status(LinkStatus(LinkState.CONNECTING, "connecting"))
            on_status(self.status)

    async def stop(self) -> None:
        return None

    def retry_now(self) -> None:
        return None

    async def request(
        self, action: str, body: dict[str, object] | None = None, timeout: float | None = None
    ) -> object:
        if not self.connected:
            raise RequestError("not connected to the sample")
        self.requests.append((action, body or {}))
        if action in self.answers:
            return self.answers[action]
        if action in self.data:
            return self.data[action]
        raise RequestError(f"{action}: not available in the sample")
