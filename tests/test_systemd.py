"""The systemd service: sd_notify from the gateway, and the unit file checked by systemd."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from configparser import ConfigParser
from pathlib import Path

import pytest
import yaml
from conftest import REPO, free_port, write_config
from notify_helpers import NotifySocket, abstract_notify_socket
from paho_helpers import Client

from gateway.systemd import Notifier, watchdog_interval

UNIT = REPO / "systemd" / "edge-gateway.service"
SHIPPED_BIN = "/opt/edge-gateway/bin/edge-gateway"
needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed"
)


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    sock = abstract_notify_socket()
    yield sock
    sock.close()


# --- the protocol ------------------------------------------------------------------------------


def test_notifier_is_a_no_op_without_notify_socket() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.notify("READY=1") is False
    notifier.ready("x")
    notifier.stopping()
    assert notifier.watchdog_interval is None


def test_notifier_path_socket(tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    if len(str(path)) > 100:
        pytest.skip("temporary path too long for a Unix socket")
    manager = NotifySocket(str(path))
    try:
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        notifier.ready("serving 3 clients")
        assert manager.receive(2) == {"READY": "1", "STATUS": "serving 3 clients"}
        notifier.reloading()
        fields = manager.receive(2)
        assert fields is not None and fields["RELOADING"] == "1"
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert 0 < now_usec - int(fields["MONOTONIC_USEC"]) < 60_000_000
        notifier.status("two\nlines")  # a newline would start another field
        assert manager.receive(2) == {"STATUS": "two lines"}
        notifier.stopping()
        assert manager.receive(2) == {"STOPPING": "1", "STATUS": "stopping"}
        notifier.close()
    finally:
        manager.close()


def test_notifier_survives_a_vanished_manager(notify_socket: NotifySocket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": notify_socket.address})
    assert notifier.notify("READY=1")
    notify_socket.close()
    assert notifier.notify("WATCHDOG=1") is False  # logged, not raised


def test_watchdog_interval() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert (
        watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    )
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({}) is None
    # Without a socket there is nobody to ping.
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval is None


async def test_a_blocked_loop_stops_the_watchdog(notify_socket: NotifySocket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "100000"})
    assert notifier.watchdog_interval == 0.05
    notifier.start_watchdog()
    await asyncio.sleep(0.3)
    assert {"WATCHDOG": "1"} in notify_socket.drain()
    time.sleep(0.5)  # the loop is stuck: ten intervals pass without a ping
    assert notify_socket.drain() == []
    await asyncio.sleep(0.3)  # running again: pinging again
    assert {"WATCHDOG": "1"} in notify_socket.drain()
    await notifier.stop_watchdog()
    notifier.close()


# --- the gateway as a notify service ------------------------------------------------------------


def test_gateway_notifies_ready_watchdog_status_stopping(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        NOTIFY_SOCKET=notify_socket.address,
        WATCHDOG_USEC="400000",  # a ping every 0.2 s
    )
    log = (tmp_path / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    try:
        ready = notify_socket.wait_for(lambda m: "READY" in m)
        # READY=1 means the listeners are bound and the store is loaded: connect at once.
        assert ready["STATUS"] == "serving 0 clients"
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        assert (tmp_path / "gw.db").exists()
        before = [m for _, m in notify_socket.messages]
        assert before[0] == {"STATUS": "starting"}
        notify_socket.wait_for(lambda m: m == {"WATCHDOG": "1"})
        notify_socket.wait_for(lambda m: m == {"WATCHDOG": "1"})

        client = Client(port, "status-client")
        notify_socket.wait_for(lambda m: m.get("STATUS") == "serving 1 client", timeout=15)
        client.disconnect()

        proc.send_signal(signal.SIGTERM)
        stopping = notify_socket.wait_for(lambda m: "STOPPING" in m)
        assert stopping == {"STOPPING": "1", "STATUS": "stopping"}
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
    stamps = [t for t, m in notify_socket.messages if m == {"WATCHDOG": "1"}]
    assert len(stamps) >= 2


# --- the unit file ------------------------------------------------------------------------------


def _unit() -> ConfigParser:
    parser = ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def test_unit_settings() -> None:
    service = _unit()["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["WatchdogSec"] == "30"
    assert service["Restart"] == "on-failure"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["ExecStart"] == f"{SHIPPED_BIN} run --config /etc/edge-gateway/config.yaml"
    assert service["StateDirectory"] == "edge-gateway"
    assert service["ConfigurationDirectory"] == "edge-gateway"
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
    }.items():
        assert service[key] == value
    families = set(service["RestrictAddressFamilies"].split())
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}


def _runnable_unit(directory: Path) -> Path:
    """The shipped unit with ExecStart pointing at this checkout's real command (verify checks
    that the binary exists and is executable)."""
    script = Path(sys.executable).parent / "edge-gateway"
    command = str(script) if script.exists() else f"{sys.executable} -m gateway"
    text = UNIT.read_text()
    assert text.count(SHIPPED_BIN) == 1
    unit = directory / "edge-gateway.service"
    unit.write_text(text.replace(SHIPPED_BIN, command))
    return unit


@needs_analyze
def test_unit_verifies(tmp_path: Path) -> None:
    unit = _runnable_unit(tmp_path)
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    problems = [line for line in done.stderr.splitlines() if "edge-gateway" in line]
    assert problems == []


@needs_analyze
def test_unit_security_exposure_is_ok(tmp_path: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", done.stdout)
    assert found, done.stdout[-2000:]
    assert float(found.group(1)) <= 2.5, done.stdout
    assert found.group(2) in ("OK", "SAFE")


# --- installation -------------------------------------------------------------------------------

INSTALL = REPO / "systemd" / "install.sh"


def test_install_script_parses_and_its_config_checks(tmp_path: Path) -> None:
    assert subprocess.run(["sh", "-n", str(INSTALL)], check=False).returncode == 0
    printed = subprocess.run(
        ["sh", str(INSTALL), "--print-config"], capture_output=True, text=True, check=True
    ).stdout
    config = tmp_path / "config.yaml"
    config.write_text(printed)
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # Everything the service writes lands where its unit lets it write.
    assert "store: /var/lib/edge-gateway/edge-gateway.db" in done.stdout
    assert "unix socket /run/edge-gateway/edge-gateway.sock" in done.stdout
    assert "working directory" not in done.stdout  # no relative path left
    service = _unit()["Service"]
    assert service["StateDirectory"] == "edge-gateway"
    assert service["RuntimeDirectory"] == "edge-gateway"


def _entries(path: Path) -> dict[str, list[str]]:
    return {line.split(":")[0]: line.split(":") for line in path.read_text().splitlines()}


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="no systemd-sysusers")
def test_sysusers_creates_the_service_account(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    for name in ("passwd", "group", "shadow", "gshadow"):
        (etc / name).touch()
    done = subprocess.run(
        [
            "systemd-sysusers",
            f"--root={tmp_path}",
            str(REPO / "systemd" / "edge-gateway.sysusers"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    users = _entries(etc / "passwd")
    groups = _entries(etc / "group")
    user = users["edge-gateway"]
    assert user[3] == groups["edge-gateway"][2]  # its own primary group
    assert user[6] == "/usr/sbin/nologin"
    assert "edge-gateway" in groups["bluetooth"][3].split(",")  # may talk to BlueZ
    assert _unit()["Service"]["User"] == "edge-gateway"


def _check_config(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=config.parent,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        check=False,
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_check_config_loads_tls_certificates(tmp_path: Path) -> None:
    def self_signed(name: str) -> tuple[Path, Path]:
        cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
                *("-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)),
            ],
            check=True,
            capture_output=True,
        )
        return cert, key

    cert, key = self_signed("one")
    _, other_key = self_signed("two")
    listener = {"type": "tls", "host": "127.0.0.1", "port": 8883}
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"listeners": [{**listener, "certfile": str(cert), "keyfile": str(key)}]})
    )
    done = _check_config(config)
    assert done.returncode == 0, done.stderr
    assert "tls 127.0.0.1:8883" in done.stdout
    # Both files exist and parse, but the key is not the certificate's: only loading tells.
    config.write_text(
        yaml.safe_dump(
            {"listeners": [{**listener, "certfile": str(cert), "keyfile": str(other_key)}]}
        )
    )
    done = _check_config(config)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "listeners[0].certfile: cannot load certificate and key" in done.stderr


def test_check_config_reports_device_policies_and_profiles(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "devices:\n"
        "  policies: {shelly: {session: persistent, command_ttl: 600}}\n"
        "  known:\n"
        "    porch: {kind: shelly, host: 192.168.1.20}\n"
        "    hall: {kind: eq3, address: '00:1A:22:0A:0B:0C'}\n"
    )
    done = _check_config(config)
    assert done.returncode == 0, done.stderr
    assert "declared: 1 eq3, 1 shelly; 1 kind policies" in done.stdout
    config.write_text("devices:\n  policies: {shelly: {queue_depth: many}}\n")
    done = _check_config(config)
    assert done.returncode == 2
    assert "devices.policies.shelly.queue_depth" in done.stderr


# The unit's MemoryDenyWriteExecute=yes, as the kernel's own switch (Linux 6.3+): no memory
# may become writable and executable, which breaks anything that generates code at run time.
_MDWE_RUNNER = """
import ctypes, runpy, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(77)
import bleak.backends.bluezdbus.manager, dbus_fast, zeroconf, aiohttp  # noqa: the BLE/LAN stack
sys.argv = ["edge-gateway", *sys.argv[1:]]
runpy.run_module("gateway", run_name="__main__")
"""


def test_gateway_runs_without_writable_executable_memory(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    env = dict(os.environ, PYTHONPATH=str(REPO), NOTIFY_SOCKET=notify_socket.address)
    with (tmp_path / "gateway.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", _MDWE_RUNNER, "run", "--demo", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    try:
        try:
            notify_socket.wait_for(lambda m: "READY" in m)
        except AssertionError:
            if proc.poll() == 77:
                pytest.skip("this kernel has no PR_SET_MDWE")
            raise
        client = Client(port, "mdwe")
        client.subscribe("gw/#", qos=1)
        client.publish("gw/demo-plug/set", b'{"on": true}', qos=1)
        topics = set()
        while "gw/demo-plug/result" not in topics:
            topics.add(client.get(timeout=15).topic)
        client.disconnect()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert "Traceback" not in (tmp_path / "gateway.log").read_text()
