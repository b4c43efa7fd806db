"""Password hashing and the password file."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest

from gateway.auth.passwords import (
    DUMMY_HASH,
    PasswordFileError,
    PasswordHashError,
    check_hash_format,
    delete_user,
    hash_password,
    read_password_file,
    set_user,
    verify_password,
    write_password_file,
)


def _ab64(data: bytes) -> str:
    # passlib's "adapted base64": '.' for '+', no padding.
    return base64.b64encode(data).decode().rstrip("=").replace("+", ".")


def test_scrypt_hash_format_and_verify() -> None:
    encoded = hash_password("correct horse")
    scheme, params, salt, digest = encoded.split("$")[1:]
    assert len(base64.b64decode(digest + "=")) == 32
    assert (scheme, params) == ("scrypt", "n=16384,r=8,p=1")
    assert len(base64.b64decode(salt + "==")) == 16
    assert verify_password("correct horse", encoded)
    assert verify_password(b"correct horse", encoded)
    assert not verify_password("correct horsf", encoded)
    assert not verify_password("", encoded)


def test_salt_makes_hashes_differ() -> None:
    assert hash_password("x") != hash_password("x")
    salt = b"0123456789abcdef"
    assert hash_password("x", salt=salt) == hash_password("x", salt=salt)


def test_scrypt_matches_hashlib_directly() -> None:
    salt = b"fixed salt 16 b!"
    expected = hashlib.scrypt(b"pw", salt=salt, n=2**14, r=8, p=1, dklen=32)
    digest = hash_password("pw", salt=salt).split("$")[-1]
    assert base64.b64decode(digest + "=" * (-len(digest) % 4)) == expected


def test_pbkdf2_sha256_accepted() -> None:
    salt = b"salt+with/bytes\xfb"
    digest = hashlib.pbkdf2_hmac("sha256", b"hunter2", salt, 29000)
    encoded = f"$pbkdf2-sha256$29000${_ab64(salt)}${_ab64(digest)}"
    assert verify_password("hunter2", encoded)
    assert not verify_password("hunter3", encoded)
    standard = base64.b64encode(digest).decode()
    assert verify_password(
        "hunter2", f"$pbkdf2-sha256$29000${base64.b64encode(salt).decode()}${standard}"
    )


def test_non_utf8_password_bytes() -> None:
    encoded = hash_password(b"\xff\xfe")
    assert verify_password(b"\xff\xfe", encoded)
    assert not verify_password(b"\xff", encoded)


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "plain",
        "$md5$abc$def",
        "$scrypt$n=16384,r=8$c2FsdA$aGFzaGhhc2hoYXNoaGFzaA",
        "$scrypt$n=1000,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",  # not a power of two
        "$scrypt$n=2147483648,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",  # too costly
        "$scrypt$n=16384,r=8,p=1$$aGFzaGhhc2hoYXNoaGFzaA",  # empty salt
        "$scrypt$n=16384,r=8,p=1$c2FsdA$aGFzaA",  # short hash
        "$scrypt$n=16384,r=8,p=1$!!!$aGFzaGhhc2hoYXNoaGFzaA",
        "$pbkdf2-sha256$ten$c2FsdA$aGFzaGhhc2hoYXNoaGFzaA",
        "$pbkdf2-sha256$10$c2FsdA$aGFzaGhhc2hoYXNoaGFzaA",  # too few iterations
    ],
)
def test_bad_hash_formats(encoded: str) -> None:
    with pytest.raises(PasswordHashError):
        check_hash_format(encoded)
    assert not verify_password("anything", encoded)


def test_dummy_hash_is_valid_and_matches_nothing_simple() -> None:
    check_hash_format(DUMMY_HASH)
    assert not verify_password("", DUMMY_HASH)


def test_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    users = {"alice": hash_password("a"), "bob smith": hash_password("b")}
    write_password_file(path, users)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_password_file(path) == users


def test_set_and_delete_keep_comments_and_order(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    alice, bob, new = hash_password("a"), hash_password("b"), hash_password("c")
    path.write_text(f"# my users\n\nalice:{alice}\n# bob is the admin\nbob:{bob}\n")
    path.chmod(0o644)
    set_user(path, "alice", new)
    set_user(path, "carol", bob)
    assert path.read_text().splitlines() == [
        "# my users",
        "",
        f"alice:{new}",
        "# bob is the admin",
        f"bob:{bob}",
        f"carol:{bob}",
    ]
    # Never readable by others; the group may read it as before (the service's group).
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert delete_user(path, "bob")
    assert not delete_user(path, "bob")
    assert list(read_password_file(path)) == ["alice", "carol"]
    assert not list(tmp_path.glob(".pw.*"))  # no temporary files left behind


def test_set_user_creates_file(tmp_path: Path) -> None:
    path = tmp_path / "new.pw"
    set_user(path, "u", hash_password("p"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert verify_password("p", read_password_file(path)["u"])


@pytest.mark.parametrize("user", ["", "a:b", " a", "a\nb", "#a"])
def test_bad_user_names_refused(tmp_path: Path, user: str) -> None:
    with pytest.raises(ValueError):
        set_user(tmp_path / "pw", user, hash_password("p"))


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("alice\n", 1, "expected 'user:hash'"),
        ("# c\nalice:nothash\n", 2, "user 'alice'"),
        (f"a:{DUMMY_HASH}\na:{DUMMY_HASH}\n", 2, "appears twice"),
        (f":{DUMMY_HASH}\n", 1, "must not be empty"),
    ],
)
def test_malformed_file_names_line(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = tmp_path / "pw"
    path.write_text(text)
    with pytest.raises(PasswordFileError) as caught:
        read_password_file(path)
    assert caught.value.line == line
    assert str(caught.value).startswith(f"{path}:{line}: ")
    assert words in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PasswordFileError, match="file not found"):
        read_password_file(tmp_path / "nope")
    with pytest.raises(PasswordFileError):
        delete_user(tmp_path / "nope", "u")


def test_refuses_to_rewrite_a_malformed_file(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("garbage line\n")
    with pytest.raises(PasswordFileError):
        set_user(path, "u", hash_password("p"))
    assert path.read_text() == "garbage line\n"


def test_rewrite_keeps_the_group_that_lets_the_service_read_the_file(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    write_password_file(path, {"alice": hash_password("a")})
    other_gid = os.getegid() + 1234
    try:
        os.chown(path, -1, other_gid)
    except PermissionError:
        pytest.skip("changing a file's group needs privileges here")
    path.chmod(0o640)
    set_user(path, "bob", hash_password("b"))
    info = path.stat()
    assert (info.st_gid, stat.S_IMODE(info.st_mode)) == (other_gid, 0o640)
    path.chmod(0o600)
    delete_user(path, "bob")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # no group bit added that was not there
