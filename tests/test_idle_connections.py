"""Many idle connections at once (issue 13): held, served, and costing no per-connection
timer, task or empty buffer while idle; keep-alive still exact among them.

Memory figures belong to bench/ (bench_broker.py idle-conns, census_idle_conns.py); these
tests check the structure that keeps an idle connection small, and the behaviour around it.
"""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import REPO, ThreadGateway, wait_for
from fuzz_helpers import RawConn, disconnect_reason
from paho_helpers import V5, Client

from gateway.mqtt.codec import encode
from gateway.mqtt.packets import PROTOCOL_V5, PROTOCOL_V311, PingResp, Publish, Will
from gateway.mqtt.reason_codes import ReasonCode as RC
from gateway.server.sockets import OPEN_FILES_CEILING

GatewayFactory = Callable[..., tuple[ThreadGateway, int]]

IDLE = 1000
PINGREQ = b"\xc0\x00"


@pytest.fixture
def enough_open_files() -> Iterator[None]:
    """The clients and the in-thread gateway share this process's open-files limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * IDLE + 512
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"open-files limit {hard} below {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _open_idle(port: int, count: int) -> list[RawConn]:
    conns = []
    for i in range(count):
        conn = RawConn(port, PROTOCOL_V311)
        assert conn.connect(f"idle-{i}", keep_alive=60).reason_code == 0
        conns.append(conn)
    return conns


def _all_answer_pings(conns: list[RawConn]) -> bool:
    for conn in conns:
        conn.send(PINGREQ)
    return all(isinstance(conn.recv(), PingResp) for conn in conns)


def test_a_thousand_idle_connections_are_held_and_served(
    gateway_factory: GatewayFactory, enough_open_files: None
) -> None:
    gw, port = gateway_factory()
    server = gw.gateway.server
    watcher = Client(port, "idle-watcher", version=V5)
    assert watcher.subscribe("idle/#", qos=1) == [1]
    conns = _open_idle(port, IDLE)
    try:
        assert gw.call(lambda: server.outside_connections) == IDLE + 1
        # Served: every one of them answers, and any of them can publish.
        assert _all_answer_pings(conns)
        conns[IDLE // 2].send(encode(Publish("idle/x", b"hello"), PROTOCOL_V311))
        msg = watcher.get(timeout=5)
        assert (msg.topic, msg.payload) == ("idle/x", b"hello")

        def idle_state() -> list[tuple[object, ...]]:
            return [
                (c._pending, c._out, c._early, c._connect_task)
                for c in server.connections.values()
                if c.listener_name == "tcp" and c is not None
            ]

        # Idle: nothing made on demand is left over from the CONNECT, the pings, the publish.
        states = gw.call(idle_state)
        assert len(states) == IDLE + 1
        assert set(states) == {(None, None, None, None)}
        queues = gw.call(
            lambda: {
                s.queue._entries is None and not s.inbound_qos2
                for cid, s in gw.gateway.broker._p.sessions.by_id.items()
                if cid.startswith("idle-")
            }
        )
        assert queues == {True}

        # No timer handle and no task per connection: one wheel holds every deadline.
        def loop_load() -> tuple[int, int, int, int, bool]:
            loop = asyncio.get_running_loop()
            scheduled = len(loop._scheduled)  # type: ignore[attr-defined]
            tcp = [c for c in server.connections.values() if c.listener_name == "tcp"]
            in_wheel = all(c.timer_slot is not None for c in tcp)
            counts = len(asyncio.all_tasks()), len(server._timers), len(server.connections)
            return scheduled, *counts, in_wheel

        scheduled, tasks, in_wheel, connections, all_in_wheel = gw.call(loop_load)
        assert scheduled < 100 and tasks < 100, (scheduled, tasks)
        assert all_in_wheel and in_wheel <= connections  # each at most once
    finally:
        for conn in conns:
            conn.close()
        watcher.disconnect()
    assert wait_for(lambda: gw.call(lambda: server.outside_connections) == 0, timeout=10)
    # Closed connections leave the wheel (only the gateway's own in-process ones are left).
    assert gw.call(lambda: len(server._timers) <= len(server.connections) < 10)


@pytest.mark.parametrize("version", [PROTOCOL_V5, PROTOCOL_V311])
def test_among_many_idle_connections_a_silent_one_expires_at_one_and_a_half_keep_alives(
    gateway_factory: GatewayFactory, enough_open_files: None, version: int
) -> None:
    """The wheel holds hundreds of later deadlines; the silent client's comes first and is
    met: dropped after 1.5 x its keep-alive, not before and at most a tick after, its will
    published; the idle ones (keep-alive 60) all stay."""
    gw, port = gateway_factory()
    watcher = Client(port, f"ka-watcher-{version}", version=V5)
    assert watcher.subscribe("ka/#", qos=1) == [1]
    conns = _open_idle(port, 300)
    silent = RawConn(port, version)
    try:
        started = time.monotonic()
        ack = silent.connect("ka-silent", keep_alive=2, will=Will("ka/gone", b"quiet", qos=1))
        assert ack.reason_code == 0
        packets = silent.until_closed(10)
        dropped_after = time.monotonic() - started
        msg = watcher.get(timeout=5)
        assert (msg.topic, msg.payload) == ("ka/gone", b"quiet")
        # 1.5 x 2 s; the wheel's granularity is the tick (1 s), plus slack for a loaded host.
        assert 3.0 < dropped_after < 3.0 + 1.0 + 2.0, dropped_after
        if version == PROTOCOL_V5:
            assert disconnect_reason(packets) == RC.KEEP_ALIVE_TIMEOUT
        assert gw.call(lambda: gw.gateway.server.stats.keepalive_timeouts) == 1
        assert _all_answer_pings(conns)
    finally:
        silent.close()
        for conn in conns:
            conn.close()
        watcher.disconnect()


def test_the_open_files_soft_limit_is_raised_to_the_hard_one() -> None:
    """systemd gives services a soft limit of 1024 open files: that many clients at most,
    unless the gateway raises it (it does, at start: Server.start)."""
    script = (
        "import resource\n"
        "from gateway.server.sockets import raise_open_files_limit\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "before, after = raise_open_files_limit()\n"
        "print(before, after, resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout.split()
    before, after, now, hard = (int(x) for x in out)
    assert before == 256
    assert after == now == min(hard, OPEN_FILES_CEILING) > 256
