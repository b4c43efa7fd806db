"""The admin API's pure parts: request parsing, response shapes, rate limits."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devices.model import DevicePolicy
from gateway.admin import protocol as p
from gateway.admin.limits import EventLimiter, Throttle
from gateway.broker.records import Message
from gateway.broker.session_info import SessionInfo


def test_request_with_id_and_arguments() -> None:
    req = p.parse_request("gw/bridge/request/cancel", b'{"device": "x", "id": 7, "n": 1}', "gw")
    assert req == p.Request("cancel", {"device": "x", "id": 7, "n": 1}, 7)
    assert req.error is None


def test_empty_payload_is_an_empty_request() -> None:
    req = p.parse_request("home/bridge/request/sessions", b"", "home")
    assert req.action == "sessions" and req.body == {} and req.id is p.MISSING
    assert req.error is None


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{nope", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"text"', "must be a JSON object"),
    ],
)
def test_unreadable_requests(payload: bytes, message: str) -> None:
    req = p.parse_request("gw/bridge/request/devices", payload, "gw")
    assert req.error is not None and message in req.error
    assert req.action == "devices"


def test_unknown_action_keeps_the_id() -> None:
    req = p.parse_request("gw/bridge/request/explode", b'{"id": "abc"}', "gw")
    assert req.error is not None and "unknown action 'explode'" in req.error
    assert "sessions" in req.error  # the known ones are listed
    assert req.id == "abc"


def test_response_shapes() -> None:
    assert json.loads(p.response(data=[1])) == {"ok": True, "data": [1]}
    assert json.loads(p.response(data=None, request_id=None)) == {
        "ok": True,
        "data": None,
        "id": None,
    }
    body = json.loads(p.response(error="no such device", request_id={"n": 1}))
    assert body == {"ok": False, "error": "no such device", "id": {"n": 1}}


def test_arguments() -> None:
    body: dict[str, object] = {"device": "a", "id": 3, "flag": True, "obj": {}, "empty": ""}
    assert p.required_str(body, "device") == "a"
    assert p.optional_str(body, "missing") is None
    assert p.required_int(body, "id") == 3
    assert p.required_object(body, "obj") == {}
    with pytest.raises(p.RequestError, match="missing argument 'nope'"):
        p.required_str(body, "nope")
    with pytest.raises(p.RequestError, match="non-empty string"):
        p.required_str(body, "empty")
    with pytest.raises(p.RequestError, match="whole number"):
        p.required_int(body, "flag")  # a bool is not a number here
    with pytest.raises(p.RequestError, match="JSON object"):
        p.required_object(body, "device")
    with pytest.raises(p.RequestError, match="missing argument 'command'"):
        p.required_object(body, "command")


def test_ttl() -> None:
    assert p.optional_ttl({}) is None
    assert p.optional_ttl({"ttl": 30}) == 30
    assert p.optional_ttl({"ttl": 0.2}) == 1  # rounded up: never "expire at once"
    for bad in (0, -5, True, "10", float("inf"), 2**33):
        with pytest.raises(p.RequestError):
            p.optional_ttl({"ttl": bad})


def test_policy_argument() -> None:
    assert p.policy_overrides({"policy": None}) is None
    assert p.policy_overrides({"policy": {"queue_depth": 1}}) == {"queue_depth": 1}
    with pytest.raises(p.RequestError, match="missing argument 'policy'"):
        p.policy_overrides({})
    with pytest.raises(p.RequestError, match="object of policy keys"):
        p.policy_overrides({"policy": [1]})


def test_session_entry() -> None:
    info = SessionInfo(
        client_id="c1",
        username="bob",
        owner="user:bob",
        protocol_version=5,
        persistent=True,
        connected=False,
        disconnected_at=1000.12345,
        expiry_interval=3600,
        expires_at=4600.12345,
        subscriptions=("a/#", "b"),
        queued=2,
        queued_bytes=10,
        inflight=1,
        inflight_bytes=4,
        inbound_qos2=0,
        will_pending=False,
        listener=None,
        peer=None,
        keep_alive=0,
    )
    assert p.session_entry(info, "dev1") == {
        "client_id": "c1",
        "username": "bob",
        "owner": "user:bob",
        "protocol": 5,
        "persistent": True,
        "connected": False,
        "offline_since": 1000.123,
        "session_expiry": 3600,
        "expires_at": 4600.123,
        "subscriptions": ["a/#", "b"],
        "queued": 2,
        "queued_bytes": 10,
        "inflight": 1,
        "inflight_bytes": 4,
        "listener": None,
        "address": None,
        "device": "dev1",
    }


def test_pending_entry() -> None:
    msg = Message(1, "gw/x/set", b'{"on":true}', 1, False, created_at=5.0, expires_at=65.0)
    assert p.pending_entry(9, msg, True, 2) == {
        "id": 9,
        "command": {"on": True},
        "queued_at": 5.0,
        "expires_at": 65.0,
        "state": "in_flight",
        "attempts": 2,
        "topic": "gw/x/set",
    }
    raw = Message(2, "gw/x/set", b"\xffnot json", 1, False)
    entry = p.pending_entry(10, raw, False, 0)
    assert entry["state"] == "queued" and entry["expires_at"] is None
    assert isinstance(entry["command"], str)


def test_policy_dict_has_every_field() -> None:
    d = p.policy_dict(DevicePolicy(session="persistent", queue_depth=3))
    assert d["session"] == "persistent" and d["queue_depth"] == 3
    assert set(d) == set(DevicePolicy.__dataclass_fields__)
    json.dumps(d)


def test_command_event() -> None:
    outcome = {"result": "failed", "reason": "invalid", "detail": "bad key", "command": {"x": 1}}
    event = p.command_event("plug", json.dumps({**outcome, "ts": 12.5}).encode(), 99.0)
    assert event == {
        "type": "command",
        "ts": 12.5,
        "device": "plug",
        "result": "failed",
        "detail": '{"x":1}: bad key',
    }
    plain = p.command_event("plug", b'{"result": "cancelled"}', 99.0)
    assert plain is not None and plain["ts"] == 99.0 and plain["detail"] == ""
    assert p.command_event("plug", b"not json", 1.0) is None
    assert p.command_event("plug", b'{"no": "result"}', 1.0) is None
    assert p.command_event("plug", b"[1]", 1.0) is None


def test_event_limiter_bounds_each_window_and_reports_the_rest() -> None:
    lim = EventLimiter(per_second=50)
    admitted = sum(lim.admit(10.0 + i * 0.001) for i in range(200))
    assert admitted == 50
    assert lim.dropped == 150
    assert lim.take_report(10.5) == 0  # this window is full
    assert lim.take_report(11.01) == 150  # the next one starts with the report
    assert lim.take_report(11.02) == 0
    # The report used one slot of the new window.
    assert sum(lim.admit(11.03) for _ in range(60)) == 49
    lim.count_dropped(5)
    assert lim.dropped_total == 150 + 11 + 5


def test_event_limiter_quiet_traffic_passes() -> None:
    lim = EventLimiter(per_second=3)
    assert all(lim.admit(t) for t in (0.0, 0.5, 1.2, 1.3, 2.5))
    assert lim.take_report(3.0) == 0


def test_throttle() -> None:
    t = Throttle(1.0)
    assert t.due(0.0)
    t.mark(0.0)
    assert not t.due(0.99)
    assert t.due(1.0)


# --- the live publisher, with a fake broker and clock --------------------------------------------


class FakeBroker:
    started_at = 1000.0

    def __init__(self) -> None:
        self.sessions_v = self.queues_v = 0
        self.events: list[dict[str, object]] = []
        self.listed = 0

    def sessions_info(self) -> list[SessionInfo]:
        self.listed += 1
        return []

    def queue_entries(self, client_id: str) -> list[tuple[int, Message, bool]] | None:
        return None

    def cancel_queued(self, client_id: str, seqs: object) -> list[int]:
        return []

    def kick(self, client_id: str) -> bool:
        return False

    def delete_session(self, client_id: str) -> bool:
        return False

    def versions(self) -> tuple[int, int]:
        return self.sessions_v, self.queues_v

    def event(self) -> None:
        seq = len(self.events) + 1
        self.events.append({"seq": seq, "type": "connect", "client_id": f"c{seq}"})

    def events_since(self, seq: int) -> tuple[int, list[dict[str, object]]]:
        last = len(self.events)
        return last, [e for e in self.events[-1000:] if int(e["seq"]) > seq]  # type: ignore[call-overload]

    def stats_snapshot(self) -> dict[str, float | int]:
        return {"clients_connected": 1, "sessions": 1, "publish_received": 0, "publish_sent": 0}


async def _live() -> tuple[Any, FakeBroker, list[tuple[str, Any]], list[float]]:
    from gateway.admin.data import AdminData
    from gateway.admin.live import LivePublisher

    broker = FakeBroker()
    sent: list[tuple[str, Any]] = []
    now = [2000.0]

    async def publish(topic: str, payload: bytes, retain: bool) -> bool:
        sent.append((topic, json.loads(payload)))
        return True

    data = AdminData(broker, lambda: None)
    live = LivePublisher(data, publish, "gw", clock=lambda: now[0])
    live.prime()
    return live, broker, sent, now


async def test_live_events_limited_and_dropped_reported() -> None:
    live, broker, sent, now = await _live()
    for _ in range(200):
        broker.event()
    await live.step()
    events = [p for t, p in sent if t == "gw/bridge/events"]
    assert len(events) == 50 and events[0]["seq"] == 1
    now[0] += 0.5
    await live.step()
    assert len([t for t, _ in sent if t == "gw/bridge/events"]) == 50  # window still full
    now[0] += 0.6
    sent.clear()
    broker.event()
    await live.step()
    events = [p for t, p in sent if t == "gw/bridge/events"]
    assert events[0]["type"] == "events_dropped" and events[0]["count"] == 150 + 0
    assert events[1]["seq"] == 201
    # A ring that overflowed between two polls: the missed events are counted too.
    for _ in range(1500):
        broker.event()
    sent.clear()
    for _ in range(3):
        now[0] += 1.0
        await live.step()
    events = [p for t, p in sent if t == "gw/bridge/events"]
    reports = [e["count"] for e in events if e["type"] == "events_dropped"]
    passed = [e for e in events if e["type"] != "events_dropped"]
    assert len(passed) == 49 and len(reports) == 2  # the first report took a slot
    assert sum(reports) + len(passed) == 1500
    assert [e["seq"] for e in passed] == list(range(702, 751))  # in order; the ring kept 1000


async def test_live_lists_only_when_changed_and_at_most_once_per_second() -> None:
    live, broker, sent, now = await _live()
    await live.step()
    first = [t for t, _ in sent]
    assert "gw/bridge/updates/sessions" in first and "gw/bridge/status" in first
    listed = broker.listed
    sent.clear()
    for _ in range(10):  # nothing changed: nothing computed, nothing sent
        now[0] += 0.25
        await live.step()
    assert broker.listed == listed
    assert not [t for t, _ in sent if t.startswith("gw/bridge/updates/sessions")]
    for _ in range(8):  # changes every poll for two seconds: listed again each second at most
        broker.sessions_v += 1
        now[0] += 0.25
        await live.step()
    assert broker.listed - listed <= 2


async def test_live_list_slow_to_build_is_built_less_often() -> None:
    from gateway.admin.data import AdminData
    from gateway.admin.live import LivePublisher

    timer = [0.0]
    cost = [0.0625]  # seconds one sessions list takes to build (thousands of sessions)

    class SlowBroker(FakeBroker):
        def sessions_info(self) -> list[SessionInfo]:
            timer[0] += cost[0]
            return super().sessions_info()

    async def publish(topic: str, payload: bytes, retain: bool) -> bool:
        return True

    broker = SlowBroker()
    now = [2000.0]
    data = AdminData(broker, lambda: None)
    live = LivePublisher(
        data, publish, "gw", clock=lambda: now[0], busy_share=0.025, timer=lambda: timer[0]
    )
    built: list[float] = []

    async def run_until(end: float) -> None:
        while now[0] < end:
            broker.sessions_v += 1  # under load: changes all the time
            now[0] += 0.25
            listed = broker.listed
            await live.step()
            if broker.listed > listed:
                built.append(now[0] - 2000.0)

    await live.step()
    await run_until(2006.0)
    # 62.5 ms each, at most 2.5% of the time: every 2.5 s instead of every second.
    assert built == [2.5, 5.0]
    cost[0] = 0.0  # cheap again: back to once per second
    await run_until(2010.0)
    assert built == [2.5, 5.0, 7.5, 8.5, 9.5]
