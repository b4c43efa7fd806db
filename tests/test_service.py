"""The gateway as a service: the shipped config.yaml, passwords, TLS, SIGTERM."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import REPO, ProcessGateway, ThreadGateway, free_port
from paho_helpers import V5, V311, Client

GatewayFactory = Callable[..., tuple[ThreadGateway, int]]


def test_shipped_config_starts_and_serves(tmp_path: Path) -> None:
    """The quick start: the shipped config.yaml, unchanged but for the port, runs a useful
    broker without any Bluetooth adapter or LAN device, and stops cleanly on SIGTERM."""
    port = free_port()
    text = (REPO / "config.yaml").read_text()
    assert text.count("\n    port: 1883\n") == 1
    config = tmp_path / "config.yaml"
    config.write_text(text.replace("\n    port: 1883\n", f"\n    port: {port}\n"))
    gw = ProcessGateway(config, port)
    try:
        gw.start()
        sub = Client(port, "quick", clean=False)
        sub.subscribe("test/#", qos=1)
        pub = Client(port, "pub")
        pub.publish("test/x", b"hi", qos=1)
        assert sub.get().payload == b"hi"
        sub.disconnect()
        pub.disconnect()
        assert gw.terminate() == 0
    finally:
        gw.stop_if_running()
    log = gw.log_path.read_text()
    assert "durable MQTT broker only" in log
    # The relative paths of the shipped file resolve against the working directory.
    assert (tmp_path / "edge-gateway.db").exists()
    assert not (tmp_path / "edge-gateway.sock").exists()  # removed on a clean stop


def test_sigterm_tells_v5_clients_and_keeps_sessions(tmp_path: Path) -> None:
    from conftest import write_config

    port = free_port()
    gw = ProcessGateway(write_config(tmp_path, port), port).start()
    try:
        c = Client(port, "stay", version=V5, clean=False, session_expiry=600)
        c.c.reconnect_delay_set(30, 30)
        c.subscribe("s", qos=1)
        assert gw.terminate() == 0
        rc = c.disconnects.get(timeout=5)
        assert int(rc.value) == 0x8B  # Server shutting down
        c.c.loop_stop()
        gw.start()
        again = Client(port, "stay", version=V5, clean=False, session_expiry=600, connect=False)
        flags, _, _ = again.connect()
        assert flags.session_present
        again.disconnect()
    finally:
        gw.stop_if_running()


def _passwd(path: Path, user: str, password: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "passwd", str(path), user],
        input=password + "\n",
        text=True,
        capture_output=True,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("version", [V311, V5])
def test_password_listener(gateway_factory: GatewayFactory, tmp_path: Path, version: int) -> None:
    pwfile = tmp_path / "passwd"
    _passwd(pwfile, "alice", "s3cret")
    lan_port = free_port()
    _, port = gateway_factory(
        {
            "auth": {"password_file": str(pwfile)},
            "listeners": [
                {
                    "type": "tcp",
                    "name": "tcp",
                    "host": "127.0.0.1",
                    "port": lan_port,
                    "allow_anonymous": False,
                },
            ],
        },
        port=lan_port,
    )
    bad = Client(port, "x", version=version, username="alice", password="wrong", connect=False)
    bad.c.reconnect_delay_set(30, 30)
    _, rc, _ = bad.connect()
    assert int(rc.value) == 0x86, rc  # paho maps 3.1.1 return code 4 onto 0x86 too
    bad.c.loop_stop()
    anon = Client(port, "y", version=version, connect=False)
    anon.c.reconnect_delay_set(30, 30)
    _, rc, _ = anon.connect()
    assert rc.is_failure
    anon.c.loop_stop()
    good = Client(port, "z", version=version, username="alice", password="s3cret")
    assert good.subscribe("a", qos=1) == [1]
    good.disconnect()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_tls_listener(gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    pwfile = tmp_path / "passwd"
    _passwd(pwfile, "bob", "pw")
    tls_port = free_port()
    _, _ = gateway_factory(
        {
            "auth": {"password_file": str(pwfile)},
            "listeners": [
                {"type": "tcp", "name": "tcp", "host": "127.0.0.1", "port": free_port()},
                {
                    "type": "tls",
                    "name": "tls",
                    "host": "127.0.0.1",
                    "port": tls_port,
                    "certfile": str(cert),
                    "keyfile": str(key),
                    "allow_anonymous": False,
                },
            ],
        }
    )
    c = Client(tls_port, "tls-client", username="bob", password="pw", connect=False)
    c.c.tls_set(ca_certs=str(cert), cert_reqs=ssl.CERT_REQUIRED)
    c.connect()
    c.subscribe("secure/#", qos=1)
    c.publish("secure/x", b"over tls", qos=1)
    assert c.get().payload == b"over tls"
    c.disconnect()


def test_check_config_lists_listeners(tmp_path: Path) -> None:
    cfg = {"listeners": [{"type": "tcp", "host": "127.0.0.1", "port": 18999}]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "127.0.0.1:18999" in done.stdout


def test_corrupt_store_is_moved_aside_and_gateway_starts(tmp_path: Path) -> None:
    from conftest import write_config

    port = free_port()
    config = write_config(tmp_path, port)
    (tmp_path / "gw.db").write_bytes(b"this is not an SQLite database" * 100)
    gw = ProcessGateway(config, port).start()
    try:
        c = Client(port, "after-corruption", clean=False)
        c.subscribe("t", qos=1)
        c.publish("t", b"works", qos=1)
        assert c.get().payload == b"works"
        c.disconnect()
        assert gw.terminate() == 0
    finally:
        gw.stop_if_running()
    moved = list(tmp_path.glob("gw.db.corrupt-*"))
    assert len(moved) == 1
    assert moved[0].read_bytes().startswith(b"this is not an SQLite database")
    assert "corrupt" in gw.log_path.read_text()


def test_in_process_clients_do_not_take_outside_connection_slots(
    gateway_factory: GatewayFactory,
) -> None:
    gw, port = gateway_factory({"limits": {"max_connections": 2}})

    async def open_inside() -> object:
        return await gw.gateway.server.connect_in_process()

    assert gw.loop is not None
    import asyncio

    streams = [asyncio.run_coroutine_threadsafe(open_inside(), gw.loop).result(5) for _ in range(3)]
    first, second = Client(port, "a"), Client(port, "b")  # both outside slots still free
    third = Client(port, "c", connect=False)
    third.c.reconnect_delay_set(30, 30)
    try:
        third.connect(timeout=2)
        refused = False
    except Exception:
        refused = True
    assert refused
    third.c.loop_stop()
    for c in (first, second):
        c.disconnect()
    for _, writer in streams:  # type: ignore[misc]
        gw.loop.call_soon_threadsafe(writer.close)


async def test_listeners_are_bound_first_and_serve_on_request(tmp_path: Path) -> None:
    """The gateway binds its listeners early (a port in use fails at once) and takes clients
    only after its own device sessions exist (Server.start(serve=False), then serve())."""
    import asyncio
    import socket

    from gateway.app import Gateway
    from gateway.config import parse_config

    port = free_port()
    config = parse_config(
        yaml.safe_dump(
            {
                "listeners": [{"type": "tcp", "host": "127.0.0.1", "port": port}],
                "persistence": {"path": str(tmp_path / "gw.db")},
            }
        ),
        "test.yaml",
    )
    server = Gateway(config).server

    def connects() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    await server.start(serve=False)
    try:
        with pytest.raises(OSError):  # bound: nobody else can take the port meanwhile
            other = socket.socket()
            try:
                other.bind(("127.0.0.1", port))
            finally:
                other.close()
        assert not await asyncio.to_thread(connects)
        await server.serve()
        assert await asyncio.to_thread(connects)
    finally:
        await server.stop()
