"""No client can starve the others before it is authenticated (issue 9 §2): password floods
and connections that never finish their TLS handshake or CONNECT.

Attackers connect from 127.0.0.2 (tests/abuse_tools.py), real users from 127.0.0.1; the
gateway runs as a subprocess where memory or the event loop as users see it is the point.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from abuse_tools import (
    ATTACKER,
    HALF_CLIENT_HELLO,
    PasswordFlood,
    close_all,
    connect_packet,
    open_connections,
    rss_bytes,
    self_signed_cert,
    tls_connect,
    wait_closed,
)
from conftest import ProcessGateway, ThreadGateway, free_port, wait_for, write_config
from fuzz_helpers import RawConn
from notify_helpers import NotifySocket, abstract_notify_socket
from paho_helpers import V5, V311, Client

from gateway.auth import authenticator as authenticator_module
from gateway.auth.passwords import hash_password, set_user
from gateway.config import ConfigError, parse_config
from gateway.mqtt.packets import PROTOCOL_V5, PROTOCOL_V311, ConnAck
from gateway.reload import plan_reload
from gateway.server.pending import PendingConnections, Verdict
from gateway.wiring import check_limits

GatewayFactory = Callable[..., tuple[ThreadGateway, int]]


@pytest.fixture
def notify(monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    sock = abstract_notify_socket()
    monkeypatch.setenv("NOTIFY_SOCKET", sock.address)  # inherited by ProcessGateway
    yield sock
    sock.close()


def _sys_values(
    client: Client, prefix: str, done: Callable[[dict[str, int]], bool], timeout: float = 5
) -> dict[str, int]:
    """The $SYS values under ``prefix``, as updated every sys_interval, once ``done`` holds
    for them (or at the timeout)."""
    client.subscribe(prefix + "#", qos=0)
    values: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in client.drain(0.3):
            values[message.topic[len(prefix) :]] = int(message.payload)
        try:
            if done(values):
                break
        except KeyError:
            pass
    return values


# ------------------------------------------------------------------ 1. password flood


def test_password_flood_starves_neither_users_nor_reloads(
    tmp_path: Path, notify: NotifySocket
) -> None:
    """300 connections from one address keep sending wrong passwords; a real user from
    another address still gets in quickly, a reload still completes, and every attacker
    CONNECT gets an answer (refusal, not silence)."""
    passwords = tmp_path / "passwd"
    set_user(passwords, "alice", hash_password("alice-pw"))
    set_user(passwords, "bob", hash_password("bob-pw"))
    port = free_port()
    path = write_config(
        tmp_path,
        port,
        {
            "auth": {"password_file": str(passwords)},
            "sys_interval": 1,
            # Only the password checks are under test here: every attacker CONNECT must be
            # read and answered (the pending cap would close some before that).
            "limits": {"max_pending_per_address": 0},
        },
    )
    gw = ProcessGateway(path, port).start()
    flood = PasswordFlood(port, connections=300, source=ATTACKER).start()
    try:
        notify.wait_for(lambda m: "READY" in m)
        assert wait_for(lambda: flood.answers() >= 300, 20), flood.tally
        for version, user in ((V5, "alice"), (V311, "bob")):
            started = time.monotonic()
            user_client = Client(
                port, f"real-{user}", version=version, username=user, password=f"{user}-pw",
                connect=False,
            )  # fmt: skip
            _, rc, _ = user_client.connect(timeout=5)
            elapsed = time.monotonic() - started
            assert not rc.is_failure, rc
            print(f"CONNACK for {user} during the flood after {elapsed * 1000:.0f} ms")
            user_client.disconnect()
        # A reload reads its config in asyncio's default executor; hashing must not be there.
        started = time.monotonic()
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGHUP)
        notify.wait_for(lambda m: m.get("RELOADING") == "1", timeout=5)
        status = notify.wait_for(lambda m: "READY" in m, timeout=5)
        print(f"reload during the flood took {(time.monotonic() - started) * 1000:.0f} ms")
        assert "reload failed" not in status.get("STATUS", "")
        answers_before = flood.answers()
        assert wait_for(lambda: flood.answers() > answers_before + 100, 10)
    finally:
        tally = flood.stop()
    try:
        print(f"attackers' answers: {dict(tally)}")
        # Checks ran and failed (0x86), the surplus was refused at once (0x9F); no attacker
        # got in, and no CONNECT was dropped without a CONNACK.
        assert tally["0x86"] > 0 and tally["0x9F"] > 0, tally
        assert set(tally) <= {"0x86", "0x9F", "0x89", "connect-error"}, tally
        # Counted in $SYS; logged rate-limited.
        watcher = Client(port, "sys-watcher", username="alice", password="alice-pw")
        figures = _sys_values(
            watcher,
            "$SYS/broker/connections/",
            lambda v: v["auth/failed"] > 0 and v["refused/auth_rate"] > 0,
        )
        watcher.disconnect()
        assert figures["auth/failed"] > 0 and figures["refused/auth_rate"] > 0, figures
        log_text = gw.log_path.read_text()
        refusal_lines = log_text.count("password check refused")
        assert 1 <= refusal_lines <= 20, f"{refusal_lines} refusal lines for {tally['0x9F']}"
        assert "failed login from 127.0.0.2" in log_text
    finally:
        gw.stop_if_running()


def _slow_hash(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, list[bytes]]:
    """Make every password check block until released; returns (release, passwords seen)."""
    release = threading.Event()
    seen: list[bytes] = []

    def verify(password: bytes, encoded: str) -> bool:
        seen.append(password)
        release.wait(10)
        return password == b"right"

    monkeypatch.setattr(authenticator_module, "verify_password", verify)
    return release, seen


@pytest.mark.parametrize("version", [PROTOCOL_V5, PROTOCOL_V311])
def test_a_connect_still_waiting_at_the_connect_timeout_is_answered_busy(
    gateway_factory: GatewayFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    version: int,
) -> None:
    passwords = tmp_path / "passwd"
    set_user(passwords, "alice", hash_password("x"))
    release, seen = _slow_hash(monkeypatch)
    _, port = gateway_factory(
        {
            "auth": {"password_file": str(passwords)},
            "limits": {"connect_timeout": 1, "password_threads": 1},
        }
    )
    hashing = RawConn(port, version)
    hashing.send(connect_packet("first", "alice", b"right", version))
    assert wait_for(lambda: len(seen) == 1)
    waiting = RawConn(port, version)
    started = time.monotonic()
    waiting.send(connect_packet("second", "alice", b"right", version))
    # Told "busy" at its connect timeout instead of being cut off without a word.
    ack = waiting.recv(timeout=5)
    assert isinstance(ack, ConnAck)
    assert ack.reason_code == (0x89 if version == PROTOCOL_V5 else 3)
    assert time.monotonic() - started < 5
    assert waiting.until_closed() == []
    # The check that had begun is let finish, past the connect timeout, and answered.
    time.sleep(0.5)
    release.set()
    ack = hashing.recv(timeout=5)
    assert isinstance(ack, ConnAck) and ack.reason_code == 0
    assert seen == [b"right"]
    hashing.close()
    waiting.close()


def test_a_check_whose_client_left_never_runs(
    gateway_factory: GatewayFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    passwords = tmp_path / "passwd"
    set_user(passwords, "alice", hash_password("x"))
    release, seen = _slow_hash(monkeypatch)
    gw, port = gateway_factory(
        {"auth": {"password_file": str(passwords)}, "limits": {"password_threads": 1}}
    )
    first = RawConn(port)
    first.send(connect_packet("first", "alice", b"first", PROTOCOL_V5))
    assert wait_for(lambda: len(seen) == 1)
    leaver = RawConn(port)
    leaver.send(connect_packet("leaver", "alice", b"leaver", PROTOCOL_V5))
    checks = gw.gateway.password_checks
    assert wait_for(lambda: gw.call(lambda: checks._waiting_count) == 1)
    leaver.close()
    assert wait_for(lambda: gw.call(lambda: checks.stats.cancelled) == 1)
    release.set()
    ack = first.recv()
    assert isinstance(ack, ConnAck) and ack.reason_code == 0x86
    # A third client is checked next: the one that left was never hashed.
    third = RawConn(port)
    assert third.connect("third").reason_code == 0  # anonymous: no hash at all
    time.sleep(0.3)
    assert seen == [b"first"]
    first.close()
    third.close()


# ------------------------------------------------------------------ 2. before the handshake


def _tls_config(tmp_path: Path, tcp_port: int, tls_port: int, **limits: Any) -> Path:
    cert, key = self_signed_cert(tmp_path)
    return write_config(
        tmp_path,
        tcp_port,
        {
            "listeners": [
                {"type": "tcp", "name": "tcp", "host": "127.0.0.1", "port": tcp_port},
                {
                    "type": "tls",
                    "name": "tls",
                    "host": "127.0.0.1",
                    "port": tls_port,
                    "certfile": str(cert),
                    "keyfile": str(key),
                    "allow_anonymous": True,
                },
            ],
            "sys_interval": 1,
            "limits": limits,
        },
    )


def _tls_client(tls_port: int, cafile: Path, client_id: str) -> tuple[Client, float]:
    client = Client(tls_port, client_id, version=V5, connect=False)
    client.c.tls_set(ca_certs=str(cafile), cert_reqs=ssl.CERT_REQUIRED)
    started = time.monotonic()
    _, rc, _ = client.connect(timeout=5)
    assert not rc.is_failure, rc
    return client, time.monotonic() - started


def test_silent_and_half_tls_handshakes_cost_little_and_are_closed_in_time(
    tmp_path: Path,
) -> None:
    """1,500 connections from one address that never finish their TLS handshake: bounded
    memory, all closed within the connect timeout, and a real TLS client still gets in."""
    tcp_port, tls_port = free_port(), free_port()
    timeout = 2.0
    path = _tls_config(tmp_path, tcp_port, tls_port, connect_timeout=timeout)
    gw = ProcessGateway(path, tcp_port).start()
    socks = []
    try:
        assert gw.proc is not None
        warm, _ = _tls_client(tls_port, tmp_path / "cert.pem", "warm-up")
        warm.disconnect()
        before = rss_bytes(gw.proc.pid)
        started = time.monotonic()
        socks = open_connections(tls_port, 750, source=ATTACKER)
        socks += open_connections(tls_port, 750, source=ATTACKER, first_bytes=HALF_CLIENT_HELLO)
        opened = time.monotonic() - started
        grown = rss_bytes(gw.proc.pid) - before
        took = tls_connect(tls_port, tmp_path / "cert.pem", "real-user")
        print(
            f"1500 sockets opened in {opened:.1f} s; RSS +{grown / 2**20:.1f} MB; "
            f"a real TLS client connected in {took * 1000:.0f} ms meanwhile"
        )
        assert grown <= 60 * 2**20, f"RSS grew by {grown / 2**20:.0f} MB"
        closed, last = wait_closed(socks, timeout + 5)
        print(f"{closed} closed, the last {last:.1f} s after they were all open")
        assert closed == len(socks)
        assert opened + last <= timeout + 3  # the connect timeout, plus one housekeeping tick
        close_all(socks)
        client, _ = _tls_client(tls_port, tmp_path / "cert.pem", "after-the-attack")
        figures = _sys_values(
            client,
            "$SYS/broker/connections/",
            lambda v: v["refused/pending_per_address"] >= 1500 - 64 and v["connect_timeouts"] > 0,
        )
        assert figures["refused/pending_per_address"] >= 1500 - 64, figures  # 32 + 32 waiting
        assert figures["connect_timeouts"] >= 1, figures
        client.publish("still/fine", b"x", qos=1)
        client.disconnect()
    finally:
        close_all(socks)
        gw.stop_if_running()


def test_pending_connections_are_capped_per_address(gateway_factory: GatewayFactory) -> None:
    gw, port = gateway_factory({"limits": {"max_pending_per_address": 3, "connect_timeout": 3}})
    server = gw.gateway.server
    started = time.monotonic()
    silent = open_connections(port, 3, source=ATTACKER)
    waiting = open_connections(port, 3, source=ATTACKER)  # their turn comes later
    surplus = open_connections(port, 1, source=ATTACKER)
    # Closed at once, long before the connect timeout.
    assert wait_closed(surplus, 1)[0] == 1
    assert time.monotonic() - started < 2
    assert wait_closed(silent + waiting, 0.3)[0] == 0
    assert gw.call(lambda: (server.pending_connections, server.stats.pending_waits)) == (3, 3)
    # Other addresses are not affected.
    local = RawConn(port)
    assert local.connect("local").reason_code == 0
    # A connection that sent its CONNECT is no longer pending: a waiting one takes its turn.
    silent[0].setblocking(True)
    silent[0].sendall(connect_packet("was-silent", None, None, PROTOCOL_V311))
    assert wait_for(lambda: gw.call(lambda: server._pending.waiting) == 2)
    assert gw.call(lambda: server.pending_connections) == 3
    # The connect timeout, counted from accept, ends them all, waiting or not.
    closed, _ = wait_closed(silent[1:] + waiting, 6)
    assert closed == 5
    assert gw.call(lambda: (server.pending_connections, server._pending.waiting)) == (0, 0)
    assert gw.call(lambda: server.stats.refused_pending_address) == 1
    close_all(silent + waiting + surplus)
    local.close()


class _Conn:
    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False


def test_pending_turns_per_address() -> None:
    pending: PendingConnections[_Conn] = PendingConnections(per_address=2, total=5)
    a = [_Conn(f"a{i}") for i in range(5)]
    verdicts = [pending.arrive("A", c) for c in a]
    assert verdicts == [Verdict.START] * 2 + [Verdict.WAIT] * 2 + [Verdict.REFUSE_ADDRESS]
    assert pending.arrive("B", _Conn("b0")) is Verdict.START
    # A turn passes to the next one still there; one that left is skipped.
    a[2].closed = True
    nxt = pending.done("A")
    assert nxt is a[3]
    assert pending.done("A") is None  # nobody waits any more
    assert (pending.count, pending.waiting) == (2, 0)  # a3 and b0
    # The total is a hard cap on started connections, waiting or not.
    for i in range(3):
        assert pending.arrive(f"C{i}", _Conn("c")) is Verdict.START
    assert pending.arrive("D", _Conn("d")) is Verdict.REFUSE_TOTAL
    assert pending.arrive("A", _Conn("a5")) is Verdict.REFUSE_TOTAL
    pending.leave_queue("A", a[0])  # harmless for a connection not queued
    assert (pending.count, pending.waiting) == (5, 0)


def test_a_burst_from_one_address_gets_in_whole(gateway_factory: GatewayFactory) -> None:
    """A host whose clients all reconnect at once (after a restart, behind a NAT): more than
    max_pending_per_address at a time, yet each CONNECT is answered."""
    _, port = gateway_factory({"limits": {"max_pending_per_address": 4}})
    socks = open_connections(port, 8, source=ATTACKER)
    for i, sock in enumerate(socks):
        sock.setblocking(True)
        sock.sendall(connect_packet(f"burst-{i}", None, None, PROTOCOL_V311))
    for sock in socks:
        sock.settimeout(5)
        assert sock.recv(4) == b"\x20\x02\x00\x00"  # CONNACK, accepted
    close_all(socks)


def test_max_connections_counts_tls_connections_from_accept(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    tcp_port, tls_port = free_port(), free_port()
    cert, key = self_signed_cert(tmp_path)
    gw, _ = gateway_factory(
        {
            "listeners": [
                {"type": "tcp", "name": "tcp", "host": "127.0.0.1", "port": tcp_port},
                {
                    "type": "tls",
                    "name": "tls",
                    "host": "127.0.0.1",
                    "port": tls_port,
                    "certfile": str(cert),
                    "keyfile": str(key),
                },
            ],
            "limits": {"max_connections": 2},
        },
        port=tcp_port,
    )
    handshaking = open_connections(tls_port, 2, source="127.0.0.1")
    surplus = open_connections(tls_port, 1, source="127.0.0.1")
    assert wait_closed(surplus, 3)[0] == 1
    assert gw.call(lambda: gw.gateway.server.stats.connections_refused) == 1
    close_all(handshaking)
    assert wait_for(lambda: gw.call(lambda: gw.gateway.server.outside_connections) == 0)
    client, _ = _tls_client(tls_port, cert, "after")
    client.disconnect()
    close_all(surplus)


def test_tls_handshake_is_bounded_by_the_connect_timeout(tmp_path: Path) -> None:
    tcp_port, tls_port = free_port(), free_port()
    path = _tls_config(tmp_path, tcp_port, tls_port, connect_timeout=1)
    gw = ThreadGateway(path).start()
    try:
        half = open_connections(tls_port, 1, source="127.0.0.1", first_bytes=HALF_CLIENT_HELLO)
        silent = open_connections(tls_port, 1, source="127.0.0.1")
        started = time.monotonic()
        closed, _ = wait_closed(half + silent, 5)
        assert closed == 2
        assert time.monotonic() - started >= 0.5  # closed by the timeout, not refused
        garbage = open_connections(tls_port, 1, source="127.0.0.1", first_bytes=b"\x10" * 600)
        assert wait_closed(garbage, 3)[0] == 1
        assert wait_for(lambda: gw.call(lambda: gw.gateway.server.stats.tls_failures) == 1)
        assert gw.call(lambda: gw.gateway.server.pending_connections) == 0
        close_all(half + silent + garbage)
    finally:
        gw.stop()


# ------------------------------------------------------------------ configuration


def test_abuse_limits_are_read_checked_and_reloaded_live(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    cfg = parse_config(
        "limits: {max_pending_per_address: 4, max_pending_connections: 100,"
        " send_stall_timeout: 5, password_threads: 3, password_checks_per_address: 1,"
        " password_checks_waiting: 10, login_backoff_max: 0}\n"
    )
    checks = check_limits(cfg)
    assert (checks.workers, checks.per_address, checks.max_waiting, checks.backoff_max) == (
        3,
        1,
        10,
        0.0,
    )
    for bad in (
        "max_pending_per_address: -1",
        "send_stall_timeout: 0",
        "password_threads: 0",
        "password_checks_per_address: 0",
        "login_backoff_max: -1",
    ):
        with pytest.raises(ConfigError, match="limits." + bad.split(":")[0]):
            parse_config(f"limits: {{{bad}}}\n")
    plan = plan_reload(parse_config("{}"), cfg)
    assert plan.restart_needed == ("limits.password_threads",)
    assert "limits.max_pending_per_address: 32 -> 4" in plan.applied

    gw, _ = gateway_factory()
    path = tmp_path / "config.yaml"
    text = path.read_text() + (
        "limits: {max_pending_per_address: 4, password_checks_per_address: 1,"
        " send_stall_timeout: 5}\n"
    )
    path.write_text(text)
    gw.gateway.config_path = path
    assert gw.loop is not None
    asyncio.run_coroutine_threadsafe(gw.gateway.reload(), gw.loop).result(10)
    server = gw.gateway.server
    assert (server.max_pending_per_address, server.send_stall_timeout) == (4, 5.0)
    assert gw.gateway.password_checks.limits.per_address == 1
    # The same pool and back-off table stay: the new authenticator shares them.
    assert gw.gateway.authenticator.checks is gw.gateway.password_checks
