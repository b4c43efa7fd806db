"""`edge-gateway tui`: options, where it connects, and a real run in a pseudo-terminal."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gateway.app import Gateway
from gateway.cli import main
from gateway.config import parse_config
from gateway.tui.main import PASSWORD_ENV, TuiError, add_arguments, read_password, resolve_target

REPO = Path(__file__).resolve().parent.parent


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def write_config(path: Path, listeners: list[dict[str, object]], **extra: object) -> Path:
    path.write_text(yaml.safe_dump({"listeners": listeners, **extra}))
    return path


def test_help_explains_where_the_password_comes_from(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["tui", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert PASSWORD_ENV in text and "never taken from the command line" in text
    for option in ("--socket", "--host", "--port", "--user", "--config"):
        assert option in text


def test_there_is_no_password_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["tui", "--host", "gw.local", "--user", "me", "--password", "secret"])
    assert exit_.value.code == 2


def test_the_unix_socket_and_prefix_come_from_the_config(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "config.yaml",
        [
            {"type": "tcp", "host": "127.0.0.1", "port": 1883},
            {"type": "unix", "path": str(tmp_path / "gw.sock"), "admin": True},
        ],
        topic_prefix="home/gw",
    )
    target = resolve_target(parse("--config", str(config)))
    assert target.socket == str(tmp_path / "gw.sock") and target.prefix == "home/gw"
    remote = resolve_target(parse("--config", str(config), "--host", "gw.lan", "--port", "8883"))
    assert (remote.socket, remote.host, remote.port, remote.prefix) == (
        None,
        "gw.lan",
        8883,
        "home/gw",
    )
    assert resolve_target(parse("--socket", "/run/x.sock")).socket == "/run/x.sock"


def test_a_config_without_a_unix_listener_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path / "config.yaml", [{"type": "tcp", "host": "127.0.0.1", "port": 1883}]
    )
    with pytest.raises(TuiError, match="no unix listener"):
        resolve_target(parse("--config", str(config)))
    assert main(["tui", "--config", str(config)]) != 0
    assert "--host" in capsys.readouterr().err


def test_password_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    assert read_password("admin") == "from-env"
    assert read_password(None) is None


def spawn_tui_in_pty(sock: Path, columns: int) -> tuple[int, subprocess.Popen[bytes]]:
    """`edge-gateway tui` on a pseudo-terminal of ``columns`` x 30; (its leader fd, the process)."""
    leader, follower = pty.openpty()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": str(columns), "LINES": "30"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "tui", "--socket", str(sock)],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        cwd=REPO,
        env=env,
        start_new_session=True,
    )
    os.close(follower)
    return leader, proc


def plain_text(screen: bytes) -> bytes:
    """Terminal output without its CSI sequences (cursor moves, colours)."""
    return re.sub(rb"\x1b\[[0-9;?]*[a-zA-Z]", b"", screen)


def _read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            if needle in plain_text(out):
                break
    return out


@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_the_command_runs_in_a_terminal_and_quits_on_q(tmp_path: Path) -> None:
    sock = tmp_path / "gw.sock"
    config = {
        "listeners": [{"type": "unix", "path": str(sock), "admin": True}],
        "persistence": {"enabled": False},
        "sys_interval": 0,
        "devices": {"ble": {"enabled": False}, "lan": {"enabled": False}},
    }
    gw = Gateway(parse_config(json.dumps(config), "pty.yaml"))
    await gw.start()
    leader, proc = spawn_tui_in_pty(sock, columns=100)
    try:
        # The header says so once it is in and the gateway's status has arrived.
        seen = await asyncio.to_thread(_read_until, leader, b"[connected]", 20.0)
        assert b"[connected]" in plain_text(seen)
        os.write(leader, b"q")
        assert await asyncio.to_thread(proc.wait, 10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)
        await gw.stop()
