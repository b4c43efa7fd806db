"""The edge-gateway command line."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import types
from pathlib import Path

import pytest

from gateway.auth.passwords import read_password_file, verify_password
from gateway.cli import main
from gateway.config import GatewayConfig

REPO = Path(__file__).resolve().parent.parent


def run_module(
    *args: str, stdin: str = "", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
    )


def test_passwd_via_subprocess(tmp_path: Path) -> None:
    pw = tmp_path / "users.pw"
    result = run_module("passwd", str(pw), "alice", stdin="s3cret pass\n")
    assert result.returncode == 0, result.stderr
    assert "added user 'alice'" in result.stdout
    assert stat.S_IMODE(pw.stat().st_mode) == 0o600
    users = read_password_file(pw)
    assert verify_password("s3cret pass", users["alice"])

    result = run_module("passwd", str(pw), "bob", stdin="other")  # no trailing newline
    assert result.returncode == 0, result.stderr
    result = run_module("passwd", str(pw), "alice", stdin="changed\r\n")
    assert result.returncode == 0 and "changed password" in result.stdout
    users = read_password_file(pw)
    assert verify_password("changed", users["alice"])
    assert verify_password("other", users["bob"])

    result = run_module("passwd", "-D", str(pw), "alice")
    assert result.returncode == 0, result.stderr
    assert list(read_password_file(pw)) == ["bob"]
    result = run_module("passwd", str(pw), "alice", "-D")
    assert result.returncode == 1
    assert "no user 'alice'" in result.stderr


@pytest.mark.parametrize(
    ("user", "stdin", "words"),
    [("alice", "\n", "empty password"), ("a:b", "x\n", "bad user name"), ("alice", "", "empty")],
)
def test_passwd_refusals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    user: str, stdin: str, words: str,
) -> None:  # fmt: skip
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    pw = tmp_path / "users.pw"
    assert main(["passwd", str(pw), user]) == 1
    assert words in capsys.readouterr().err
    assert not pw.exists()


def test_passwd_prompts_twice_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import getpass
    import io

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    answers = iter(["one", "two", "same", "same"])
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr(sys, "stdin", Tty())
    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    pw = tmp_path / "users.pw"
    assert main(["passwd", str(pw), "carol"]) == 1
    assert "do not match" in capsys.readouterr().err
    assert main(["passwd", str(pw), "carol"]) == 0
    assert len(prompts) == 4
    assert verify_password("same", read_password_file(pw)["carol"])


def test_check_config_shipped(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--config", str(REPO / "config.yaml")]) == 0
    out = capsys.readouterr().out
    assert "tcp:127.0.0.1:1883: tcp 127.0.0.1:1883, anonymous allowed" in out
    assert "unix:edge-gateway.sock" in out
    assert "store: edge-gateway.db" in out


def test_check_config_with_password_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_module("passwd", "users.pw", "admin", stdin="pw\n", cwd=tmp_path).returncode == 0
    Path("gw.yaml").write_text(
        "listeners:\n  - {host: 0.0.0.0, port: 1883, allow_anonymous: false}\n"
        "auth: {password_file: users.pw, admin_users: [admin]}\n"
        "persistence: {enabled: false}\n"
    )
    assert main(["check-config", "--config", "gw.yaml"]) == 0
    out = capsys.readouterr().out
    assert "user name and password required" in out
    assert "password file: users.pw (1 users)" in out
    assert "store: disabled" in out


def test_check_config_bad(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("limits:\n  receive_maximum: lots\n")
    result = run_module("check-config", "--config", str(bad))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip() == (
        f"edge-gateway: {bad}:2: limits.receive_maximum: expected an integer 1-65535, got 'lots'"
    )


def test_run_bad_config_exits_2_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("listeners:\n  - {host: 0.0.0.0, allow_anonymous: true}\n")
    result = run_module("run", "--config", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "listeners[0].allow_anonymous" in result.stderr
    missing = run_module("run", cwd=tmp_path)  # default ./config.yaml does not exist
    assert missing.returncode == 2
    assert "config.yaml: config file not found" in missing.stderr


def test_run_calls_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[tuple[GatewayConfig, Path]] = []

    def fake_run(config: GatewayConfig, *, config_path: Path) -> int:
        seen.append((config, config_path))
        return 7

    # A stand-in module: these tests must not depend on the whole gateway importing.
    fake_app = types.ModuleType("gateway.app")
    fake_app.run = fake_run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gateway.app", fake_app)
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text("topic_prefix: home\n")
    assert main(["run", "--config", str(cfg_path)]) == 7
    assert seen == [(GatewayConfig(topic_prefix="home"), cfg_path)]


def test_usage_errors() -> None:
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2
    with pytest.raises(SystemExit) as caught:
        main(["passwd", "onlyfile"])
    assert caught.value.code == 2
