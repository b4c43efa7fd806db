"""Start-up and usage errors as a user meets them: `python -m gateway ...` in a subprocess.

Each failure must be one line on stderr (what, where, what to do), a non-zero exit within
seconds (the timeouts below only bound a hang), no traceback unless `logging.level: debug`,
and, under systemd, no READY=1.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, ProcessGateway, free_port, write_config
from notify_helpers import abstract_notify_socket
from paho_helpers import Client

from gateway.auth.passwords import hash_password, write_password_file
from gateway.broker.core import VERSION
from gateway.compiled import describe as describe_build

EXIT_FAILURE = 1  # the environment (a port, the store): systemd may retry
EXIT_CONFIG = 2  # the config or a file it names: not retried (RestartPreventExitStatus=2)

# Root ignores file modes; without these two capabilities it meets them like any user.
_DROP_FILE_OVERRIDES = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


@functools.cache
def _unprivileged_prefix() -> list[str] | None:
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        return None
    probe = subprocess.run([*_DROP_FILE_OVERRIDES, "true"], capture_output=True, timeout=10)
    return _DROP_FILE_OVERRIDES if probe.returncode == 0 else None


def unprivileged() -> list[str]:
    prefix = _unprivileged_prefix()
    if prefix is None:
        pytest.skip("running as root and cannot drop CAP_DAC_OVERRIDE (setpriv)")
    return prefix


def gateway_cmd(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    prefix: list[str] | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})),
        timeout=timeout,
    )


def one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The single `edge-gateway: ...` line a failure must end with; nothing else alarming."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("edge-gateway: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert not [line for line in lines if " ERROR " in line], result.stderr
    return errors[0].removeprefix("edge-gateway: ")


def config_file(directory: Path, port: int, **overrides: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return write_config(directory, port, overrides)


def listening_socket(port: int) -> socket.socket:
    """Another broker on the port (what the user usually has: Mosquitto on 1883)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


# --- listeners ------------------------------------------------------------------------------


def test_port_in_use_is_one_line_and_systemd_sees_the_failure(tmp_path: Path) -> None:
    port = free_port()
    cfg = config_file(tmp_path, port)
    notify = abstract_notify_socket()
    try:
        with listening_socket(port):
            result = gateway_cmd(
                "run", "--config", str(cfg), cwd=tmp_path, env={"NOTIFY_SOCKET": notify.address}
            )
        messages = notify.drain()
    finally:
        notify.close()
    assert one_line_error(result, EXIT_FAILURE) == (
        f"cannot listen on 127.0.0.1:{port}: address already in use "
        f"(another broker running? change listeners[0].port in {cfg})"
    )
    assert not [m for m in messages if "READY" in m]
    statuses = [m["STATUS"] for m in messages if "STATUS" in m]
    assert statuses[-1].startswith(f"failed to start: cannot listen on 127.0.0.1:{port}")
    # The store it had opened was closed again: a gateway starts on it at once.
    gw = ProcessGateway(cfg, port).start()
    assert gw.terminate() == 0


def test_debug_level_shows_the_traceback_too(tmp_path: Path) -> None:
    port = free_port()
    cfg = config_file(tmp_path, port, logging={"level": "debug"})
    with listening_socket(port):
        result = gateway_cmd("run", "--config", str(cfg), cwd=tmp_path)
    assert result.returncode == EXIT_FAILURE
    # (Debug lines of the store's worker thread may still follow the error line.)
    lines = result.stderr.splitlines()
    errors = [n for n, line in enumerate(lines) if line.startswith("edge-gateway: ")]
    assert len(errors) == 1
    assert lines[errors[0]].startswith(f"edge-gateway: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" in "\n".join(lines[: errors[0]])


def test_the_unix_socket_of_a_running_gateway_is_not_taken_over(tmp_path: Path) -> None:
    cfg = config_file(tmp_path, free_port())
    path = tmp_path / "gw.sock"  # the config's unix listener, listeners[1]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(path))
        other.listen()
        result = gateway_cmd("run", "--config", str(cfg), cwd=tmp_path)
        assert one_line_error(result, EXIT_FAILURE) == (
            f"cannot listen on {path}: address already in use "
            f"(another gateway running? change listeners[1].path in {cfg})"
        )
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))  # still the other one's socket


# --- the store ------------------------------------------------------------------------------


def test_store_path_below_a_file(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("not a directory")
    store = tmp_path / "state" / "gw.db"
    cfg = config_file(tmp_path, free_port(), persistence={"path": str(store)})
    result = gateway_cmd("run", "--config", str(cfg), cwd=tmp_path)
    assert one_line_error(result, EXIT_FAILURE) == (
        f"cannot create the store {store}: {tmp_path / 'state'} is a file, not a directory "
        f"(persistence.path in {cfg})"
    )


def test_store_path_that_is_a_directory(tmp_path: Path) -> None:
    store = tmp_path / "state"
    store.mkdir()
    cfg = config_file(tmp_path, free_port(), persistence={"path": str(store)})
    result = gateway_cmd("run", "--config", str(cfg), cwd=tmp_path)
    message = one_line_error(result, EXIT_FAILURE)
    assert message.startswith(f"the store {store} is a directory: name a file in it")


def test_unwritable_store_directory(tmp_path: Path) -> None:
    prefix = unprivileged()
    directory = tmp_path / "state"
    directory.mkdir()
    directory.chmod(0o555)
    for store in (directory / "gw.db", directory / "sub" / "gw.db"):
        cfg = config_file(tmp_path, free_port(), persistence={"path": str(store)})
        result = gateway_cmd("run", "--config", str(cfg), cwd=tmp_path, prefix=prefix)
        message = one_line_error(result, EXIT_FAILURE)
        assert message.startswith(
            f"cannot create the store {store}: permission denied on {directory}: "
            "make it writable by user "
        )
        assert message.endswith(f"(persistence.path in {cfg})")
    directory.chmod(0o755)


def test_unreadable_store_file_leaves_no_thread_behind(tmp_path: Path) -> None:
    """SQLite fails to open the file itself: aiosqlite's worker thread must be gone before the
    event loop closes ("Event loop is closed" in a traceback from the thread otherwise)."""
    prefix = unprivileged()
    store = tmp_path / "gw.db"
    store.write_bytes(b"")
    store.chmod(0)
    cfg = config_file(tmp_path, free_port())
    result = gateway_cmd("run", "--config", str(cfg), cwd=tmp_path, prefix=prefix)
    message = one_line_error(result, EXIT_FAILURE)
    assert message.startswith(f"cannot open the store {store}: unable to open database file")
    assert "Event loop is closed" not in result.stderr
    assert stat.S_IMODE(store.stat().st_mode) == 0  # not moved aside, not replaced


def test_second_instance_on_the_same_store(tmp_path: Path) -> None:
    """The second gateway stops at once with the first one's pid; the first keeps serving with
    its store intact."""
    port = free_port()
    first = ProcessGateway(config_file(tmp_path / "first", port), port).start()
    try:
        pub = Client(port, "keeper")
        pub.publish("keep/me", b"retained", qos=1, retain=True)
        pub.disconnect()
        store = tmp_path / "first" / "gw.db"
        cfg = config_file(tmp_path / "second", free_port(), persistence={"path": str(store)})
        result = gateway_cmd("run", "--config", str(cfg), cwd=tmp_path / "second")
        assert one_line_error(result, EXIT_FAILURE) == (
            f"the store {store} is in use by another edge-gateway (pid {first.proc.pid}): "  # type: ignore[union-attr]
            f"stop it first, or give each gateway its own store (persistence.path in {cfg})"
        )
        sub = Client(port, "reader")
        sub.subscribe("keep/#", qos=1)
        assert sub.get().payload == b"retained"
        sub.disconnect()
        assert first.terminate() == 0
        first.start()  # the same store again, as it was
        sub = Client(port, "reader")
        sub.subscribe("keep/#", qos=1)
        assert sub.get().payload == b"retained"
        sub.disconnect()
        assert not list(store.parent.glob("*.corrupt-*"))
    finally:
        first.stop_if_running()


# --- files the config names -------------------------------------------------------------------


def test_missing_certificate(tmp_path: Path) -> None:
    cert = tmp_path / "server.crt"
    cfg = config_file(tmp_path, free_port())
    text = yaml.safe_load(cfg.read_text())
    text["listeners"][0] = {
        "type": "tls",
        "host": "127.0.0.1",
        "port": free_port(),
        "certfile": str(cert),
        "keyfile": str(tmp_path / "server.key"),
    }
    cfg.write_text(yaml.safe_dump(text, sort_keys=False))
    result = gateway_cmd("run", "--config", str(cfg), cwd=tmp_path)
    message = one_line_error(result, EXIT_CONFIG)
    assert message.startswith(f"{cfg}:")
    assert f"listeners[0].certfile: expected an existing file, got '{cert}' (not found)" in message


def test_unreadable_password_file(tmp_path: Path) -> None:
    prefix = unprivileged()
    passwords = tmp_path / "passwd"
    write_password_file(passwords, {"alice": hash_password("pw")})
    passwords.chmod(0)
    cfg = config_file(tmp_path, free_port(), auth={"password_file": str(passwords)})
    result = gateway_cmd("run", "--config", str(cfg), cwd=tmp_path, prefix=prefix)
    message = one_line_error(result, EXIT_CONFIG)
    assert f"auth.password_file: {passwords}: permission denied: user " in message
    assert f"chmod 0640 {passwords}" in message


def test_empty_config_file_is_refused_at_start(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("")
    result = gateway_cmd("run", "--config", str(cfg), cwd=tmp_path)
    message = one_line_error(result, EXIT_CONFIG)
    assert message.startswith(f"{cfg}: no settings in the file")
    assert not (tmp_path / "edge-gateway.db").exists()  # nothing was started


# --- usage ------------------------------------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    result = gateway_cmd("--version", cwd=tmp_path)
    assert result.returncode == 0
    # The build (pure Python or mypyc-compiled) follows: tests/test_mypyc_build.py checks it.
    assert result.stdout == f"edge-gateway {VERSION} ({describe_build()})\n"


def test_check_config_into_a_closed_pipe(tmp_path: Path) -> None:
    """`edge-gateway check-config | head -1`: the reader goes away after the first line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "check-config", "--config", str(REPO / "config.yaml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the child writes anything: every write meets a closed pipe
    stderr = proc.stderr.read().decode()
    assert proc.wait(30) == 141  # like a tool killed by SIGPIPE
    assert stderr == ""


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("listeners:\n  - type: tcp\n\thost: 127.0.0.1\n", 3, "a tab character"),
        ('topic_prefix: "gw\nlisteners: []\nlogging: {level: info}\n', 1, "never closed"),
        ("logging:\n  level: info\n limits: {}\n", 3, "bad indentation"),
    ],
)
def test_yaml_syntax_error_names_the_line(tmp_path: Path, text: str, line: int, words: str) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(text)
    result = gateway_cmd("check-config", "--config", str(cfg), cwd=tmp_path)
    message = one_line_error(result, EXIT_CONFIG)
    assert message.startswith(f"{cfg}:{line}: YAML syntax error at column ")
    assert words in message


def test_unreadable_tls_key(tmp_path: Path) -> None:
    """OpenSSL's own error ("[Errno 13] Permission denied") does not say which file."""
    prefix = unprivileged()
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-subj", "/CN=localhost", "-days", "1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    key.chmod(0)
    cfg = tmp_path / "config.yaml"
    tls = {"type": "tls", "host": "127.0.0.1", "port": 8883, "certfile": str(cert)}
    cfg.write_text(yaml.safe_dump({"listeners": [{**tls, "keyfile": str(key)}]}))
    result = gateway_cmd("check-config", "--config", str(cfg), cwd=tmp_path, prefix=prefix)
    message = one_line_error(result, EXIT_CONFIG)
    assert f"listeners[0].keyfile: cannot read '{key}': permission denied" in message
