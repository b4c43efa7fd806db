"""The admin API's lists come in pages (issue 9 §2): thousands of sessions made one answer
larger than the broker's max packet size (8,000 sessions: more than 1 MiB)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from paho_helpers import V5
from raw_client import RawClient
from test_admin_api import Env, by, env  # noqa: F401  (env is a fixture)

from gateway.admin import protocol as p
from gateway.mqtt.packets import Connect, Disconnect
from gateway.tui.model import Model

pytestmark = [pytest.mark.filterwarnings("ignore::ResourceWarning")]

SESSIONS = 3000
# Long client ids make each entry ~450 bytes: 3,000 of them are well over 1 MiB.
PREFIX = "a-client-with-a-long-identifier-as-some-libraries-make-them-" + "x" * 40


def size(answer: object) -> int:
    """Bytes of an answer as the gateway sends it (compact JSON)."""
    return len(json.dumps(answer, separators=(",", ":"), ensure_ascii=False).encode())


def make_sessions(port: int, n: int) -> None:
    """n persistent offline sessions, made by real CONNECTs (3.1.1, clean session 0)."""
    for i in range(n):
        c = RawClient(port)
        ack = c.connect(Connect(f"{PREFIX}-{i:05d}", clean_start=False))
        assert getattr(ack, "reason_code", 1) == 0, ack
        c.send(Disconnect())
        c.close()


async def test_thousands_of_sessions_page_within_the_packet_size(env: Env) -> None:  # noqa: F811
    w = await env.watch("gw/bridge/updates/sessions", "gw/bridge/status")
    await asyncio.to_thread(make_sessions, env.port, SESSIONS)
    admin = await env.admin(V5)

    first = await admin.call("sessions")
    assert first["ok"] is True, first.get("error")
    assert size(first) <= p.PAGE_BYTES + 1024  # well under the 1 MiB packets
    page = first["page"]
    assert page["offset"] == 0 and page["limit"] == p.DEFAULT_PAGE
    assert page["total"] >= SESSIONS and page["next"] == len(first["data"])

    seen: list[str] = []
    offset: int | None = 0
    pages = 0
    while offset is not None:
        answer = await admin.call("sessions", {"offset": offset, "limit": p.MAX_PAGE})
        assert answer["ok"] is True and size(answer) <= p.PAGE_BYTES + 1024
        seen += [s["client_id"] for s in answer["data"]]
        offset = answer["page"]["next"]
        pages += 1
    assert len(seen) == len(set(seen)) == page["total"] and pages >= 3
    assert seen == sorted(seen)  # in client id order, so that paging is stable
    assert sum(1 for cid in seen if cid.startswith(PREFIX)) == SESSIONS

    # The live updates carry the first page; the status says how many there are.
    await w.until(lambda w: bool(w.on("gw/bridge/updates/sessions")), timeout=15)
    assert all(0 < len(u) <= p.DEFAULT_PAGE for u in w.on("gw/bridge/updates/sessions"))
    # The status is sent at most every admin_status_interval: wait for the one that counts
    # every session the listing had (one sent while the last sessions came in says fewer).
    total = page["total"]
    await w.until(lambda w: (w.on("gw/bridge/status") or [{}])[-1].get("sessions", 0) == total)

    # A terminal UI fed with both shows the first page and the total.
    model = Model()
    model.apply_response("sessions", first["data"])
    model.set_status(w.on("gw/bridge/status")[-1])
    assert model.count_text("sessions") == f"{len(first['data'])} of {page['total']}"


async def test_pending_pages_count_commands(env: Env) -> None:  # noqa: F811
    admin = await env.admin(V5)
    # Five commands that stay queued side by side: no coalescing.
    await admin.ok("set_policy", {"device": "sleeper", "policy": {"coalesce": False}})
    for n in range(5):
        await admin.ok("send", {"device": "sleeper", "command": {"on": n % 2 == 0}, "ttl": n + 600})
    got: list[int] = []
    offset: int | None = 0
    while offset is not None:
        answer = await admin.call("pending", {"device": "sleeper", "offset": offset, "limit": 2})
        assert answer["ok"] is True and len(answer["data"]["sleeper"]) <= 2
        assert answer["page"]["total"] == 5
        got += [round(e["expires_at"] - e["queued_at"]) - 600 for e in answer["data"]["sleeper"]]
        offset = answer["page"]["next"]
    assert got == [0, 1, 2, 3, 4]
    everyone = await admin.call("pending", {"limit": 3})
    assert everyone["page"] == {"offset": 0, "limit": 3, "total": 5, "next": 3}
    devices = await admin.call("devices", {"offset": 1, "limit": 1})
    assert [d["id"] for d in devices["data"]] == ["sleeper"]
    assert devices["page"] == {"offset": 1, "limit": 1, "total": 2, "next": None}
    assert by(devices["data"], "id", "sleeper")["pending"] == 5  # type: ignore[index]


async def test_bad_page_arguments_are_clear_errors(env: Env) -> None:  # noqa: F811
    admin = await env.admin(V5)
    for body, error in [
        ({"offset": -1}, "'offset' must be a whole number >= 0"),
        ({"offset": "10"}, "'offset' must be a whole number >= 0"),
        ({"limit": 0}, f"'limit' must be a whole number from 1 to {p.MAX_PAGE}"),
        ({"limit": p.MAX_PAGE + 1}, f"'limit' must be a whole number from 1 to {p.MAX_PAGE}"),
        ({"limit": True}, "'limit'"),
    ]:
        answer = await admin.call("sessions", body)
        assert answer["ok"] is False and error in answer["error"], (body, answer)
    past_the_end = await admin.call("devices", {"offset": 50})
    assert past_the_end["data"] == []
    assert past_the_end["page"] == {"offset": 50, "limit": p.DEFAULT_PAGE, "total": 2, "next": None}


# --- the page builder ----------------------------------------------------------------------------


def test_build_page_stops_at_the_limit_or_the_byte_budget() -> None:
    items = list(range(10))

    def entry(i: int) -> dict[str, Any]:
        return {"n": i, "text": "x" * 90}  # ~110 bytes of JSON

    built, after = p.build_page(items, p.PageRequest(2, 3), entry)
    assert [e["n"] for e in built] == [2, 3, 4] and after == 5
    built, after = p.build_page(items, p.PageRequest(8, 5), entry)
    assert [e["n"] for e in built] == [8, 9] and after is None
    built, after = p.build_page(items, p.PageRequest(0, 10), entry, budget=250)
    assert [e["n"] for e in built] == [0, 1] and after == 2
    built, after = p.build_page(items, p.PageRequest(0, 10), entry, budget=10)
    assert [e["n"] for e in built] == [0] and after == 1  # one at least: paging moves on
    assert p.build_page(items, p.PageRequest(20, 5), entry) == ([], None)


def test_tui_says_how_many_there_are_beyond_the_first_page() -> None:
    model = Model()
    assert model.count_text("sessions") == "0"
    model.set_status({"sessions": 8000, "devices": 2, "pending": 3})
    assert model.count_text("sessions") == "0"  # not loaded yet: no "0 of 8000"
    model.apply_response("sessions", [{"client_id": f"c{i}"} for i in range(500)])
    assert model.count_text("sessions") == "500 of 8000"
    model.apply_response("devices", [{"id": "a", "kind": "k"}, {"id": "b", "kind": "k"}])
    assert model.count_text("devices") == "2"
    model.set_status({"sessions": 400})
    assert model.count_text("sessions") == "500"  # the status lags: never "500 of 400"
