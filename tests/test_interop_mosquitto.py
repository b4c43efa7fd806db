"""Black-box tests with Mosquitto's command-line clients (Debian mosquitto-clients)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ThreadGateway

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto_pub") is None and not os.environ.get("CI"),
    reason="mosquitto-clients not installed (bash .ci/run installs it)",
)


def run(*args: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)


def sub_process(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["mosquitto_sub", *args], stdout=subprocess.PIPE, text=True)


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_offline_queue_with_mosquitto_clients(
    gateway: tuple[ThreadGateway, int], version: str
) -> None:
    _, port = gateway
    p = str(port)
    # Create a persistent session (-c) with a QoS 1 subscription, then leave (-E).
    common = ["-p", p, "-V", version, "-i", "msub", "-c", "-q", "1", "-t", "cmd/#"]
    if version == "mqttv5":
        common += ["-x", "3600"]  # v5 needs a session expiry for the session to outlive the link
    first = run("mosquitto_sub", *common, "-E")
    assert first.returncode == 0, first.stderr
    for i in range(10):
        out = run(
            "mosquitto_pub", "-p", p, "-V", version, "-q", "1", "-t", f"cmd/{i}", "-m", f"c{i}"
        )
        assert out.returncode == 0, out.stderr
    got = run("mosquitto_sub", *common, "-C", "10", "-W", "5", "-v")
    assert got.returncode == 0, got.stderr
    assert got.stdout.splitlines() == [f"cmd/{i} c{i}" for i in range(10)]


def test_retained_and_unix_socket(gateway: tuple[ThreadGateway, int], tmp_path: Path) -> None:
    _, port = gateway
    sock = str(tmp_path / "gw.sock")
    out = run("mosquitto_pub", "--unix", sock, "-q", "2", "-r", "-t", "house/mode", "-m", "away")
    assert out.returncode == 0, out.stderr
    got = run(
        "mosquitto_sub",
        "-p",
        str(port),
        "-t",
        "house/#",
        "-C",
        "1",
        "-W",
        "5",
        "-v",
        "-F",
        "%t %p %r",
    )
    assert got.stdout.strip() == "house/mode away 1"


def test_qos2_pub_to_live_subscriber(gateway: tuple[ThreadGateway, int]) -> None:
    _, port = gateway
    p = str(port)
    sub = sub_process("-p", p, "-q", "2", "-t", "q2", "-C", "100", "-W", "10")
    try:
        time.sleep(0.5)  # let mosquitto_sub connect and subscribe before publishing
        lines = "\n".join(f"line{i}" for i in range(100)) + "\n"
        pub = subprocess.run(
            ["mosquitto_pub", "-p", p, "-q", "2", "-t", "q2", "-l"],
            input=lines,
            text=True,
            capture_output=True,
            timeout=10,
            check=False,
        )
        assert pub.returncode == 0, pub.stderr
        out, _ = sub.communicate(timeout=15)
        assert out.splitlines() == [f"line{i}" for i in range(100)]
    finally:
        sub.kill()


def test_mosquitto_clients_and_a_websocket_client_meet(gateway_factory: Any) -> None:
    """Debian's mosquitto_pub/sub (2.0) have no WebSocket transport, so they meet paho's
    websockets transport through the gateway: tcp on their side, ws on the other."""
    from conftest import free_port
    from paho_helpers import V5, Client

    tcp, ws = free_port(), free_port()
    listeners = [
        {"type": "tcp", "name": "tcp", "host": "127.0.0.1", "port": tcp},
        {"type": "ws", "name": "ws", "host": "127.0.0.1", "port": ws},
    ]
    gateway_factory({"listeners": listeners}, port=tcp)
    on_ws = Client(ws, "on-ws", version=V5, transport="websockets")
    on_ws.subscribe("from-mosquitto/#", qos=1)
    sent = run(
        "mosquitto_pub",
        "-p",
        str(tcp),
        "-V",
        "mqttv5",
        "-q",
        "1",
        "-t",
        "from-mosquitto/x",
        "-m",
        "hello ws",
    )
    assert sent.returncode == 0, sent.stderr
    assert on_ws.get().payload == b"hello ws"
    sub = sub_process("-p", str(tcp), "-q", "1", "-t", "from-ws/#", "-C", "1")
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # until mosquitto_sub's subscription is in place
            on_ws.publish("from-ws/x", b"hello tcp", qos=1)
            if sub.poll() is not None:
                break
            time.sleep(0.2)
        out, _ = sub.communicate(timeout=5)
    finally:
        sub.kill()
    assert out.splitlines()[0] == "hello tcp"
    on_ws.disconnect()
