"""Authenticator: anonymous, wrong and right credentials, cache, reload."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.auth import authenticator as authenticator_module
from gateway.auth import passwords
from gateway.auth.authenticator import Authenticator
from gateway.auth.passwords import PasswordFileError, hash_password, write_password_file
from gateway.broker.effects import ConnectionInfo, Identity

ANON = ConnectionInfo(conn_id=1, listener="tcp:127.0.0.1:1883", peer="127.0.0.1:5000")
LAN = ConnectionInfo(
    conn_id=2, listener="lan", peer="192.168.1.9:5000", allow_anonymous=False
)  # fmt: skip
TRUSTED = ConnectionInfo(
    conn_id=3, listener="internal", peer="in-process", allow_anonymous=False, trusted=True
)


# Hashed once: scrypt is deliberately slow.
USERS = {"alice": hash_password("wonderland"), "bob": hash_password("b")}


@pytest.fixture
def pwfile(tmp_path: Path) -> Path:
    path = tmp_path / "users.pw"
    write_password_file(path, USERS)
    return path


@pytest.fixture
def auth(pwfile: Path) -> Authenticator:
    return Authenticator(pwfile, admin_users=["alice"])


async def test_anonymous_only_where_allowed(auth: Authenticator) -> None:
    assert await auth.authenticate(None, None, ANON) == Identity(ok=True)
    refused = await auth.authenticate(None, None, LAN)
    assert not refused.ok and refused.reason_code == 0x87
    assert (await auth.authenticate(None, None, TRUSTED)).ok


async def test_good_credentials(auth: Authenticator) -> None:
    identity = await auth.authenticate("alice", b"wonderland", LAN)
    assert identity == Identity(ok=True, username="alice", is_admin=True)
    bob = await auth.authenticate("bob", b"b", ANON)
    assert bob == Identity(ok=True, username="bob", is_admin=False)


@pytest.mark.parametrize("info", [ANON, LAN])
@pytest.mark.parametrize(
    ("user", "password"), [("alice", b"wrong"), ("nobody", b"x"), ("alice", b"")]
)
async def test_bad_credentials_refused_everywhere(
    auth: Authenticator, info: ConnectionInfo, user: str, password: bytes
) -> None:
    identity = await auth.authenticate(user, password, info)
    assert not identity.ok
    assert identity.reason_code == 0x86
    assert identity.username is None


async def test_user_name_without_password(auth: Authenticator) -> None:
    # On an anonymous listener the unverified name is dropped, never trusted.
    assert await auth.authenticate("alice", None, ANON) == Identity(ok=True)
    refused = await auth.authenticate("alice", None, LAN)
    assert not refused.ok and refused.reason_code == 0x86


async def test_no_password_file() -> None:
    auth = Authenticator(None, admin_users=())
    # Nothing to check a name against: anonymous, and the name is not an identity.
    assert await auth.authenticate("alice", b"whatever", ANON) == Identity(ok=True)
    refused = await auth.authenticate("alice", b"whatever", LAN)
    assert not refused.ok and refused.reason_code == 0x86


async def test_trusted_clients_keep_their_name(auth: Authenticator) -> None:
    identity = await auth.authenticate("gateway-devices", None, TRUSTED)
    assert identity == Identity(ok=True, username="gateway-devices", is_admin=True)


async def test_success_is_cached(auth: Authenticator, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = passwords.verify_password

    def counting(password: bytes, encoded: str) -> bool:
        calls.append(encoded)
        return real(password, encoded)

    monkeypatch.setattr(authenticator_module, "verify_password", counting)
    for _ in range(3):
        assert (await auth.authenticate("bob", b"b", ANON)).ok
    assert len(calls) == 1
    # A wrong password is never answered from the cache, and failures are not cached.
    for _ in range(2):
        assert not (await auth.authenticate("bob", b"c", ANON)).ok
    assert len(calls) == 3


async def test_unknown_user_costs_a_hash(
    auth: Authenticator, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def refuse(password: bytes, encoded: str) -> bool:
        calls.append(encoded)
        return False

    monkeypatch.setattr(authenticator_module, "verify_password", refuse)
    assert not (await auth.authenticate("mallory", b"x", ANON)).ok
    assert len(calls) == 1


async def test_reload(auth: Authenticator, pwfile: Path) -> None:
    assert (await auth.authenticate("bob", b"b", ANON)).ok
    write_password_file(pwfile, {"alice": hash_password("new")})
    auth.reload(pwfile)
    assert auth.users == {"alice"}
    assert not (await auth.authenticate("bob", b"b", ANON)).ok  # cache was cleared
    assert not (await auth.authenticate("alice", b"wonderland", ANON)).ok
    assert (await auth.authenticate("alice", b"new", ANON)).ok


async def test_failed_reload_keeps_old_users(auth: Authenticator, pwfile: Path) -> None:
    pwfile.write_text("broken\n")
    with pytest.raises(PasswordFileError):
        auth.reload(pwfile)
    assert (await auth.authenticate("bob", b"b", ANON)).ok


def test_missing_password_file(tmp_path: Path) -> None:
    with pytest.raises(PasswordFileError):
        Authenticator(tmp_path / "nope")
