"""Black-box tests with Mosquitto's command-line clients (Debian mosquitto-clients)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

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
