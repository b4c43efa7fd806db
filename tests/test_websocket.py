"""MQTT over WebSockets (ws/wss listeners) with real clients: paho-mqtt's websockets transport,
aiohttp's and websockets' WebSocket clients for what paho cannot send, and raw sockets for
HTTP abuse. Each feature test has its abuse test next to it."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets

from gateway.auth.passwords import hash_password, write_password_file
from gateway.mqtt.codec import StreamDecoder, encode
from gateway.mqtt.packets import (
    PROTOCOL_V5,
    PROTOCOL_V311,
    ConnAck,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
)
from tests.abuse_tools import self_signed_cert
from tests.conftest import ThreadGateway, free_port, wait_for
from tests.paho_helpers import V5, V311, Client

Factory = Callable[..., tuple[ThreadGateway, int]]
V4 = PROTOCOL_V311


def start(factory: Factory, *, limits: dict[str, Any] | None = None, **extra: Any) -> Any:
    """A gateway with tcp and ws listeners (and whatever ``extra`` adds); returns an object
    with .gw, .tcp, .ws ports."""
    tcp, ws = free_port(), free_port()
    listeners: list[dict[str, Any]] = [
        {"type": "tcp", "name": "tcp", "host": "127.0.0.1", "port": tcp},
        {"type": "ws", "name": "ws", "host": "127.0.0.1", "port": ws, **extra.pop("ws", {})},
        *extra.pop("more_listeners", []),
    ]
    overrides: dict[str, Any] = {"listeners": listeners, **extra}
    if limits:
        overrides["limits"] = limits
    gw, _ = factory(overrides, port=tcp)

    class Ports:
        pass

    ports = Ports()
    ports.gw, ports.tcp, ports.ws = gw, tcp, ws  # type: ignore[attr-defined]
    return ports


def ws_client(port: int, client_id: str, **kwargs: Any) -> Client:
    return Client(port, client_id, transport="websockets", **kwargs)


# --- paho over ws: the everyday path --------------------------------------------------------


@pytest.mark.parametrize("version", [V311, V5])
def test_qos_round_trips_between_ws_and_tcp(gateway_factory: Factory, version: int) -> None:
    g = start(gateway_factory)
    on_ws = ws_client(g.ws, "on-ws", version=version)
    on_tcp = Client(g.tcp, "on-tcp", version=version)
    on_ws.subscribe("to-ws/#", qos=2)
    on_tcp.subscribe("to-tcp/#", qos=2)
    for qos in (0, 1, 2):
        on_tcp.publish("to-ws/x", f"tcp->ws {qos}".encode(), qos=qos)
        got = on_ws.get()
        assert (got.topic, got.payload, got.qos) == ("to-ws/x", f"tcp->ws {qos}".encode(), qos)
        on_ws.publish("to-tcp/x", f"ws->tcp {qos}".encode(), qos=qos)
        got = on_tcp.get()
        assert (got.topic, got.payload, got.qos) == ("to-tcp/x", f"ws->tcp {qos}".encode(), qos)
    # A packet much larger than one TCP read, both ways.
    big = bytes(range(256)) * 2000
    on_ws.publish("to-tcp/big", big, qos=1)
    assert on_tcp.get().payload == big
    on_tcp.publish("to-ws/big", big, qos=1)
    assert on_ws.get().payload == big
    on_ws.disconnect()
    on_tcp.disconnect()


def test_retained_message_reaches_a_ws_subscriber(gateway_factory: Factory) -> None:
    g = start(gateway_factory)
    pub = Client(g.tcp, "pub")
    pub.publish("state/lamp", b"on", qos=1, retain=True)
    sub = ws_client(g.ws, "sub")
    sub.subscribe("state/#", qos=1)
    got = sub.get()
    assert (got.payload, got.retain) == (b"on", True)
    sub.disconnect()
    pub.disconnect()


def test_will_is_published_when_a_ws_connection_drops(gateway_factory: Factory) -> None:
    g = start(gateway_factory)
    watcher = Client(g.tcp, "watcher")
    watcher.subscribe("wills/#", qos=1)
    dying = ws_client(g.ws, "dying", will=("wills/dying", b"gone", 1, False))
    dying.drop()  # the socket closes without DISCONNECT nor a WebSocket close frame
    got = watcher.get(timeout=10)
    assert (got.topic, got.payload) == ("wills/dying", b"gone")
    watcher.disconnect()


def test_persistent_session_resumes_over_ws(gateway_factory: Factory) -> None:
    g = start(gateway_factory)
    first = ws_client(g.ws, "keeper", clean=False)
    first.subscribe("queued/#", qos=1)
    first.disconnect()
    pub = Client(g.tcp, "pub")
    for n in range(5):
        pub.publish("queued/x", str(n).encode(), qos=1)
    again = ws_client(g.ws, "keeper", clean=False, connect=False)
    flags, _, _ = again.connect()
    assert flags.session_present
    assert [again.get().payload for _ in range(5)] == [str(n).encode() for n in range(5)]
    again.disconnect()
    pub.disconnect()


# --- auth and ACL are the listener's, not the transport's -----------------------------------


def test_password_and_acl_apply_over_ws(gateway_factory: Factory, tmp_path: Path) -> None:
    pwfile = tmp_path / "users.pw"
    write_password_file(pwfile, {"alice": hash_password("secret")})
    auth = {
        "password_file": str(pwfile),
        "acl": {
            "default": "deny",
            "rules": [
                {"user": "*", "topic": "secret/#", "actions": ["subscribe"], "allow": False},
                {"user": "alice", "topic": "alice/#", "actions": ["write"]},
                {"user": "*", "topic": "#", "actions": ["read", "subscribe"]},
            ],
        },
    }
    g = start(gateway_factory, ws={"allow_anonymous": False}, auth=auth)
    wrong = ws_client(g.ws, "w", version=V5, username="alice", password="nope", connect=False)
    _, rc, _ = wrong.connect()
    assert rc == 0x86  # bad user name or password
    wrong.c.loop_stop()
    anonymous = ws_client(g.ws, "anon", version=V5, connect=False)
    _, rc, _ = anonymous.connect()
    assert rc == 0x87  # not authorized: this listener requires a user
    anonymous.c.loop_stop()

    alice = ws_client(g.ws, "alice", version=V5, username="alice", password="secret")
    assert [int(code.value) for code in alice.subscribe("alice/#", qos=1)] == [1]
    assert [int(code.value) for code in alice.subscribe("secret/#", qos=1)] == [0x87]
    # A publish the ACL forbids is not delivered: only the allowed one arrives.
    spy = Client(g.tcp, "spy")
    spy.subscribe("alice/#", qos=1)
    spy.subscribe("bob/#", qos=1)
    alice.publish("bob/inbox", b"forbidden", qos=1)
    alice.publish("alice/out", b"allowed", qos=1)
    assert spy.get().payload == b"allowed"
    alice.disconnect()
    spy.disconnect()


# --- wss -----------------------------------------------------------------------------------


def test_wss_with_a_test_made_certificate(gateway_factory: Factory, tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    wss = free_port()
    listener = {
        "type": "wss",
        "name": "wss",
        "host": "127.0.0.1",
        "port": wss,
        "certfile": str(cert),
        "keyfile": str(key),
    }
    g = start(gateway_factory, more_listeners=[listener])
    secure = Client(wss, "secure", transport="websockets", cafile=str(cert), version=V5)
    plain = Client(g.tcp, "plain")
    secure.subscribe("s/#", qos=1)
    plain.publish("s/x", b"over wss", qos=1)
    assert secure.get().payload == b"over wss"
    secure.disconnect()
    plain.disconnect()
    # Plain HTTP to the wss port is a failed TLS handshake, not an HTTP answer.
    with socket.create_connection(("127.0.0.1", wss), timeout=5) as sock:
        sock.sendall(upgrade_request("/mqtt"))
        assert read_until_closed(sock)[:5] != b"HTTP/"
    assert wait_for(lambda: g.gw.gateway.server.stats.tls_failures >= 1)


# --- framing: what paho never sends ----------------------------------------------------------


def client_decoder(version: int = PROTOCOL_V311) -> StreamDecoder:
    """Decodes what the gateway sends to a client."""
    return StreamDecoder(max_packet_size=10_000_000, protocol_version=version)


async def open_ws(port: int, **kwargs: Any) -> tuple[aiohttp.ClientSession, Any]:
    session = aiohttp.ClientSession()
    try:
        ws = await session.ws_connect(
            f"http://127.0.0.1:{port}/mqtt", protocols=("mqtt",), autoping=True, **kwargs
        )
    except BaseException:
        await session.close()
        raise
    return session, ws


async def receive_packets(ws: Any, count: int, version: int = PROTOCOL_V311) -> list[Any]:
    decoder = client_decoder(version)
    got: list[Any] = []
    while len(got) < count:
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type == aiohttp.WSMsgType.BINARY, msg
        got.extend(decoder.feed(msg.data))
    return got


async def test_several_packets_in_one_frame_and_one_packet_over_many(
    gateway_factory: Factory,
) -> None:
    g = start(gateway_factory)
    session, ws = await open_ws(g.ws)
    try:
        connect = encode(Connect(client_id="framer", keep_alive=30), V4)
        subscribe = encode(Subscribe(packet_id=1, subscriptions=(Subscription("f/#"),)), V4)
        # CONNECT split over three messages, the third also carrying SUBSCRIBE and PINGREQ.
        await ws.send_bytes(connect[:3])
        await ws.send_bytes(connect[3:7])
        await ws.send_bytes(connect[7:] + subscribe + encode(PingReq(), V4))
        got = await receive_packets(ws, 3)
        assert [type(p) for p in got] == [ConnAck, SubAck, PingResp]
        # A 200 kB PUBLISH in 1000-byte messages comes back whole.
        payload = bytes(range(256)) * 800
        publish = encode(Publish(topic="f/big", payload=payload), V4)
        for offset in range(0, len(publish), 1000):
            await ws.send_bytes(publish[offset : offset + 1000])
        [echo] = await receive_packets(ws, 1)
        assert isinstance(echo, Publish) and echo.payload == payload
    finally:
        await ws.close()
        await session.close()


async def test_fragmented_message_carries_a_packet(gateway_factory: Factory) -> None:
    """Continuation frames (websockets' client sends an iterable as one fragmented message)."""
    g = start(gateway_factory)
    async with websockets.connect(f"ws://127.0.0.1:{g.ws}/mqtt", subprotocols=["mqtt"]) as ws:
        assert ws.subprotocol == "mqtt"
        connect = encode(Connect(client_id="frag", keep_alive=30), V4)
        await ws.send([connect[:2], connect[2:5], connect[5:] + encode(PingReq(), V4)])
        data = b""
        while len(data) < 6:
            data += await asyncio.wait_for(ws.recv(), 5)
        assert [type(p) for p in client_decoder().feed(data)] == [ConnAck, PingResp]


async def test_text_frame_closes_the_connection(gateway_factory: Factory) -> None:
    g = start(gateway_factory)
    session, ws = await open_ws(g.ws)
    try:
        await ws.send_str("hello")
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1003)  # unsupported data
    finally:
        await session.close()
    assert g.gw.call(lambda: g.gw.gateway.server.stats.websocket_bad_frames) == 1


@pytest.mark.parametrize("version", [PROTOCOL_V311, PROTOCOL_V5])
async def test_too_big_message_is_refused_with_the_reason(
    gateway_factory: Factory, version: int
) -> None:
    g = start(gateway_factory, limits={"max_packet_size": 4096})
    session, ws = await open_ws(g.ws)
    try:
        await ws.send_bytes(encode(Connect(client_id="big", protocol_version=version), version))
        [ack] = await receive_packets(ws, 1, version)
        assert isinstance(ack, ConnAck)
        await ws.send_bytes(b"\x30" + b"\xff" * 5000)  # one message over max_packet_size
        got = b""
        while True:
            msg = await asyncio.wait_for(ws.receive(), 5)
            if msg.type != aiohttp.WSMsgType.BINARY:
                break
            got += msg.data
        # The close frame's code (aiohttp's close_code may say 1006 instead: its answering
        # close frame can meet a connection the gateway already closed).
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1009)  # message too big
        if version == PROTOCOL_V5:
            [disconnect] = client_decoder(PROTOCOL_V5).feed(got)
            assert isinstance(disconnect, Disconnect) and disconnect.reason_code == 0x95
        else:
            assert got == b""
    finally:
        await session.close()


# --- HTTP: the upgrade and what is not one ----------------------------------------------------


def upgrade_request(
    path: str, *, subprotocol: str | None = "mqtt", upgrade: bool = True, extra: str = ""
) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
    if upgrade:
        lines += [
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
        ]
    if subprotocol is not None:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (upgrade_request("/mqtt"), b"101"),
        (upgrade_request("/other"), b"404"),
        (upgrade_request("/mqtt", subprotocol=None), b"400"),
        (upgrade_request("/mqtt", subprotocol="chat"), b"400"),
        (upgrade_request("/mqtt", upgrade=False, subprotocol=None), b"426"),
        (b"POST /mqtt HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b"405"),
        (upgrade_request("/mqtt", extra="X-Junk: " + "j" * 9000 + "\r\n"), b"431"),
    ],
    ids=[
        "upgrade",
        "wrong-path",
        "no-subprotocol",
        "wrong-subprotocol",
        "plain-get",
        "post",
        "huge-headers",
    ],
)
def test_http_answers(gateway_factory: Factory, request_bytes: bytes, status: bytes) -> None:
    g = start(gateway_factory)
    with socket.create_connection(("127.0.0.1", g.ws), timeout=5) as sock:
        sock.sendall(request_bytes)
        if status == b"101":
            sock.settimeout(5)
            head = sock.recv(4096)
            assert head.startswith(b"HTTP/1.1 101 ")
            assert b"Sec-WebSocket-Protocol: mqtt\r\n" in head
            return
        answer = read_until_closed(sock)  # closed by the gateway, not by our timeout
    assert answer.startswith(b"HTTP/1.1 " + status + b" "), answer[:200]
    assert g.gw.call(lambda: g.gw.gateway.server.stats.websocket_refused) == 1


def upgrade_answer(port: int, request_bytes: bytes) -> bytes:
    """The status line the gateway answers an upgrade request with."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request_bytes)
        sock.settimeout(5)
        return sock.recv(4096).split(b"\r\n", 1)[0]


def test_an_anonymous_ws_listener_lets_no_web_page_in_by_default(gateway_factory: Factory) -> None:
    """Any web site open in a browser on this machine could otherwise publish commands to
    the devices through an anonymous loopback listener (cross-site WebSocket hijacking)."""
    g = start(gateway_factory)
    evil = upgrade_request("/mqtt", extra="Origin: https://evil.example\r\n")
    assert upgrade_answer(g.ws, evil).startswith(b"HTTP/1.1 403 ")
    # Clients that are no browser send no Origin, or (paho) the broker's own address.
    assert upgrade_answer(g.ws, upgrade_request("/mqtt")).startswith(b"HTTP/1.1 101 ")
    c = ws_client(g.ws, "paho-sends-its-brokers-origin")
    c.disconnect()
    assert g.gw.call(lambda: g.gw.gateway.server.stats.websocket_refused) == 1


def test_which_origins_count_as_the_listeners_own() -> None:
    from gateway.server.websocket import origin_allowed

    host = "127.0.0.1:8083"
    assert origin_allowed(None, host, ())
    assert origin_allowed("http://127.0.0.1:8083", host, ())
    assert origin_allowed("http://localhost:8083", "localhost:8083", ())
    assert origin_allowed("http://[::1]:8083", "[::1]:8083", ())
    assert not origin_allowed("http://127.0.0.1:8080", host, ())  # another page, same machine
    assert not origin_allowed("https://evil.example", host, ())
    assert not origin_allowed("http://127.0.0.1:8083", None, ())
    # A DNS name may have been rebound to this machine by the page that asks.
    assert not origin_allowed("http://rebound.example:8083", "rebound.example:8083", ())
    assert origin_allowed("http://rebound.example:8083", "x", ("http://rebound.example:8083",))
    assert origin_allowed("https://evil.example", host, ("*",))


def test_listed_origins_are_let_in_and_others_are_not(gateway_factory: Factory) -> None:
    g = start(gateway_factory, ws={"origins": ["http://dashboard.local:8080"]})
    ok = upgrade_request("/mqtt", extra="Origin: http://dashboard.local:8080\r\n")
    assert upgrade_answer(g.ws, ok).startswith(b"HTTP/1.1 101 ")
    other = upgrade_request("/mqtt", extra="Origin: http://dashboard.local:9999\r\n")
    assert upgrade_answer(g.ws, other).startswith(b"HTTP/1.1 403 ")
    assert g.gw.call(lambda: g.gw.gateway.server.stats.websocket_refused) == 1


def test_origins_star_lets_every_page_in(gateway_factory: Factory) -> None:
    g2 = start(gateway_factory, ws={"origins": ["*"]})
    evil = upgrade_request("/mqtt", extra="Origin: https://evil.example\r\n")
    assert upgrade_answer(g2.ws, evil).startswith(b"HTTP/1.1 101 ")


def test_a_password_ws_listener_lets_any_page_in_by_default(tmp_path: Path) -> None:
    """A page must know a password there; dashboards are served from anywhere."""
    from gateway.config import parse_config, websocket_origins

    (tmp_path / "pw").write_text("")
    config = parse_config(
        f"auth: {{password_file: {tmp_path / 'pw'}}}\n"
        "listeners:\n  - {type: ws, allow_anonymous: false}\n",
        "gw.yaml",
    )
    assert websocket_origins(config.listeners[0]) == ("*",)
    anonymous = parse_config("listeners:\n  - {type: ws}\n", "gw.yaml")
    assert websocket_origins(anonymous.listeners[0]) == ()


def test_slow_upgrade_request_is_closed_by_the_connect_timeout(gateway_factory: Factory) -> None:
    g = start(gateway_factory, limits={"connect_timeout": 1})
    with socket.create_connection(("127.0.0.1", g.ws), timeout=10) as sock:
        started = time.monotonic()
        request = upgrade_request("/mqtt")
        sock.settimeout(0.3)
        closed = False
        for byte in request[:-4]:  # never finishes the headers
            try:
                sock.sendall(bytes([byte]))
                if sock.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
        assert closed, "the gateway kept a never-ending upgrade request open"
        assert time.monotonic() - started < 8
    assert g.gw.call(lambda: g.gw.gateway.server.stats.connect_timeouts) >= 1


def test_upgraded_but_silent_client_is_closed_by_the_connect_timeout(
    gateway_factory: Factory,
) -> None:
    g = start(gateway_factory, limits={"connect_timeout": 1})
    with socket.create_connection(("127.0.0.1", g.ws), timeout=10) as sock:
        sock.sendall(upgrade_request("/mqtt"))
        answer = read_until_closed(sock, timeout=8)
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert g.gw.call(lambda: g.gw.gateway.server.stats.connect_timeouts) == 1


def test_max_connections_counts_ws_clients(gateway_factory: Factory) -> None:
    g = start(gateway_factory, limits={"max_connections": 1})
    first = ws_client(g.ws, "first")
    with socket.create_connection(("127.0.0.1", g.ws), timeout=5) as sock:
        sock.sendall(upgrade_request("/mqtt"))
        assert read_until_closed(sock) == b""  # refused at accept, before any answer
    assert g.gw.call(lambda: g.gw.gateway.server.stats.connections_refused) == 1
    first.disconnect()


def test_pending_cap_per_address_applies_to_upgrades(gateway_factory: Factory) -> None:
    g = start(gateway_factory, limits={"max_pending_per_address": 2})
    socks = [socket.create_connection(("127.0.0.1", g.ws), timeout=5) for _ in range(5)]
    try:
        # Two may upgrade, two wait unread, the fifth is refused.
        assert wait_for(
            lambda: g.gw.call(lambda: g.gw.gateway.server.stats.refused_pending_address) == 1
        )
        waiting = socks[2]
        waiting.sendall(upgrade_request("/mqtt"))
        waiting.settimeout(0.5)
        with pytest.raises(TimeoutError):
            waiting.recv(100)  # not read while the first two have not sent a CONNECT
        socks[0].close()  # its turn goes to the next one
        waiting.settimeout(5)
        assert waiting.recv(4096).startswith(b"HTTP/1.1 101 ")
    finally:
        for sock in socks:
            sock.close()


async def test_client_that_never_reads_pauses_its_connection(gateway_factory: Factory) -> None:
    """Back-pressure: a ws subscriber that reads nothing stops being read from, and the
    gateway's send buffer for it stays bounded."""
    g = start(gateway_factory)
    reader, writer = await asyncio.open_connection("127.0.0.1", g.ws)
    writer.transport.set_write_buffer_limits(0)  # type: ignore[attr-defined]
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    writer.write(upgrade_request("/mqtt"))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101 ")
    ws_frame = websockets.frames.Frame
    opcode = websockets.frames.Opcode.BINARY

    def frame(data: bytes) -> bytes:
        return ws_frame(opcode, data).serialize(mask=True, extensions=[])

    writer.write(frame(encode(Connect(client_id="sloth", keep_alive=0), V4)))
    writer.write(frame(encode(Subscribe(packet_id=1, subscriptions=(Subscription("s/#"),)), V4)))
    await asyncio.sleep(0.5)
    pub = Client(g.tcp, "pub")
    try:
        for _ in range(400):
            pub.publish("s/x", b"p" * 10_000, qos=0, wait=False)
        server = g.gw.gateway.server
        assert await asyncio.to_thread(
            wait_for, lambda: g.gw.call(lambda: server.stats.write_pauses) >= 1, 10
        )
        buffered = g.gw.call(
            lambda: max(
                c.transport.get_write_buffer_size()
                for c in server.connections.values()
                if c.listener_name == "ws"
            )
        )
        assert buffered < 8 * 1024 * 1024  # SLOW_CONSUMER_BYTES plus one batch
    finally:
        pub.disconnect()
        writer.close()


def test_sys_counts_websocket_refusals(gateway_factory: Factory) -> None:
    g = start(gateway_factory)
    with socket.create_connection(("127.0.0.1", g.ws), timeout=5) as sock:
        sock.sendall(upgrade_request("/nope"))
        read_until_closed(sock)
    figures = dict(g.gw.call(g.gw.gateway.server.guard_figures))
    assert figures["connections/websocket/refused"] == "1"
    assert figures["connections/websocket/bad_frames"] == "0"


# --- configuration ---------------------------------------------------------------------------


def test_check_config_shows_ws_listeners(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli import main

    cert, key = self_signed_cert(tmp_path)
    monkeypatch.chdir(tmp_path)
    Path("gw.yaml").write_text(
        "listeners:\n"
        "  - {type: ws}\n"
        f"  - {{type: wss, host: 127.0.0.1, path: /ws/mqtt, certfile: {cert}, keyfile: {key}}}\n"
        "persistence: {enabled: false}\n"
    )
    assert main(["check-config", "--config", "gw.yaml"]) == 0
    out = capsys.readouterr().out
    assert (
        "ws:127.0.0.1:8083: ws://127.0.0.1:8083/mqtt (MQTT over WebSockets), anonymous allowed"
        in out
    )
    assert "wss:127.0.0.1:8084: wss://127.0.0.1:8084/ws/mqtt (MQTT over WebSockets)" in out


@pytest.mark.parametrize(
    ("listener", "message"),
    [
        (
            "{type: ws, path: mqtt}",
            "listeners[0].path: expected an HTTP path such as '/mqtt' (starting with '/', no "
            "spaces, '?' or '#'), got 'mqtt'",
        ),
        (
            "{type: wss, host: 127.0.0.1}",
            "listeners[0].certfile: a wss listener needs a certificate",
        ),
        ("{type: ws, admin: true}", "listeners[0].admin: 'admin' applies to unix listeners only"),
        (
            "{type: ws, origins: ['dashboard.local']}",
            "listeners[0].origins[0]: expected a browser origin such as",
        ),
        ("{type: tcp, origins: ['*']}", "listeners[0].origins: 'origins' applies to"),
        ("{type: ws, certfile: x.pem}", "listeners[0].certfile: 'certfile' applies to tls"),
        (
            "{type: ws, host: 0.0.0.0, allow_anonymous: true}",
            "listeners[0].allow_anonymous: a listener on 0.0.0.0 can be reached from the network",
        ),
        (
            "{type: ws, host: 0.0.0.0}",
            "auth.password_file: listeners[0] (ws:0.0.0.0:8083) requires user names and passwords",
        ),
    ],
)
def test_bad_ws_listener_config_is_refused_clearly(listener: str, message: str) -> None:
    from gateway.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as caught:
        parse_config(f"listeners:\n  - {listener}\n", "gw.yaml")
    assert message in str(caught.value)


def test_start_up_log_names_the_ws_url(
    gateway_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="gateway.server.server")
    g = start(gateway_factory, ws={"path": "/broker"})
    assert f"listening on ws://127.0.0.1:{g.ws}/broker (ws)" in caplog.text
    client = ws_client(g.ws, "custom-path", ws_path="/broker")
    client.disconnect()
