"""Password hashing and the password file written by ``edge-gateway passwd``.

Hash formats (one per user, in a ``user:hash`` line):

* ``$scrypt$n=16384,r=8,p=1$<salt>$<hash>`` — what we write;
* ``$pbkdf2-sha256$<iterations>$<salt>$<hash>`` — accepted so that files produced by other
  tools (passlib, Django-style exports) can be reused.

Salts and hashes are base64 without padding; the "adapted" alphabet that passlib uses
(``.`` instead of ``+``) is accepted too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import pwd
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32

# Bounds on parameters read from a file: a hand-edited or hostile entry must not make one
# CONNECT allocate gigabytes or spin for minutes.
_MAX_SCRYPT_N = 2**20
_MAX_SCRYPT_R = 32
_MAX_SCRYPT_P = 16
_MIN_PBKDF2_ITERATIONS = 1000
_MAX_PBKDF2_ITERATIONS = 10_000_000


class PasswordHashError(ValueError):
    """A stored hash string is not in a format we understand."""


class PasswordFileError(Exception):
    """The password file cannot be read or has a malformed line."""

    def __init__(self, path: Path, message: str, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    text = text.replace(".", "+")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PasswordHashError(f"bad base64 {text!r}") from exc


@dataclass(frozen=True, slots=True)
class _ScryptHash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def compute(self, password: bytes) -> bytes:
        # hashlib's default memory cap (32 MiB) is too small for the larger parameters we
        # accept; scrypt needs about 128 * r * (n + p) bytes.
        maxmem = 128 * self.r * (self.n + self.p) + (1 << 20)
        return hashlib.scrypt(
            password,
            salt=self.salt,
            n=self.n,
            r=self.r,
            p=self.p,
            dklen=len(self.digest),
            maxmem=maxmem,
        )


@dataclass(frozen=True, slots=True)
class _Pbkdf2Hash:
    iterations: int
    salt: bytes
    digest: bytes

    def compute(self, password: bytes) -> bytes:
        return hashlib.pbkdf2_hmac(
            "sha256", password, self.salt, self.iterations, dklen=len(self.digest)
        )


_ParsedHash = _ScryptHash | _Pbkdf2Hash


def _parse_hash(encoded: str) -> _ParsedHash:
    parts = encoded.split("$")
    if len(parts) != 5 or parts[0] != "":
        raise PasswordHashError(
            "expected '$scrypt$n=..,r=..,p=..$salt$hash' or '$pbkdf2-sha256$iterations$salt$hash'"
        )
    _, scheme, params, salt_text, digest_text = parts
    salt = _b64decode(salt_text)
    digest = _b64decode(digest_text)
    if not salt or len(digest) < 16:
        raise PasswordHashError("salt is empty or hash is shorter than 16 bytes")
    if scheme == "scrypt":
        values: dict[str, int] = {}
        for item in params.split(","):
            key, sep, value = item.partition("=")
            if not sep or key not in ("n", "r", "p") or key in values or not value.isdigit():
                raise PasswordHashError(f"bad scrypt parameters {params!r}")
            values[key] = int(value)
        if set(values) != {"n", "r", "p"}:
            raise PasswordHashError(f"bad scrypt parameters {params!r}")
        n, r, p = values["n"], values["r"], values["p"]
        if n < 2 or n & (n - 1) or n > _MAX_SCRYPT_N:
            raise PasswordHashError(f"scrypt n must be a power of two 2..{_MAX_SCRYPT_N}")
        if not 1 <= r <= _MAX_SCRYPT_R or not 1 <= p <= _MAX_SCRYPT_P:
            raise PasswordHashError(f"bad scrypt parameters {params!r}")
        return _ScryptHash(n, r, p, salt, digest)
    if scheme == "pbkdf2-sha256":
        if not params.isdigit():
            raise PasswordHashError(f"bad pbkdf2 iteration count {params!r}")
        iterations = int(params)
        if not _MIN_PBKDF2_ITERATIONS <= iterations <= _MAX_PBKDF2_ITERATIONS:
            raise PasswordHashError(
                f"pbkdf2 iterations must be {_MIN_PBKDF2_ITERATIONS}..{_MAX_PBKDF2_ITERATIONS}"
            )
        return _Pbkdf2Hash(iterations, salt, digest)
    raise PasswordHashError(f"unknown hash scheme {scheme!r} (expected scrypt or pbkdf2-sha256)")


def check_hash_format(encoded: str) -> None:
    """Raise PasswordHashError if ``encoded`` is not a hash we can verify against."""
    _parse_hash(encoded)


def hash_password(password: str | bytes, *, salt: bytes | None = None) -> str:
    """Hash with scrypt (n=2**14, r=8, p=1) and a fresh 16-byte salt."""
    secret = password.encode("utf-8") if isinstance(password, str) else password
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    parsed = _ScryptHash(SCRYPT_N, SCRYPT_R, SCRYPT_P, salt, b"\0" * HASH_BYTES)
    digest = parsed.compute(secret)
    return f"$scrypt$n={SCRYPT_N},r={SCRYPT_R},p={SCRYPT_P}${_b64encode(salt)}${_b64encode(digest)}"


def verify_password(password: str | bytes, encoded: str) -> bool:
    """True if ``password`` matches ``encoded``; False for a mismatch or an unusable hash."""
    secret = password.encode("utf-8") if isinstance(password, str) else password
    try:
        parsed = _parse_hash(encoded)
    except PasswordHashError:
        return False
    return hmac.compare_digest(parsed.compute(secret), parsed.digest)


# A valid hash of a random secret: verifying an unknown user against it costs the same time
# as a real check, so response timing does not reveal which user names exist.
DUMMY_HASH = (
    f"$scrypt$n={SCRYPT_N},r={SCRYPT_R},p={SCRYPT_P}$"
    f"{_b64encode(b'edge-gateway-dum')}${_b64encode(b'x' * HASH_BYTES)}"
)


def validate_username(user: str) -> None:
    """Raise ValueError if ``user`` cannot be stored in a password file line."""
    if not user:
        raise ValueError("user name must not be empty")
    if ":" in user:
        raise ValueError("user name must not contain ':'")
    if user != user.strip() or any(ord(c) < 32 or ord(c) == 127 for c in user):
        raise ValueError("user name must not contain control characters or surrounding spaces")
    if user.startswith("#"):
        raise ValueError("user name must not start with '#'")


def parse_password_file(path: Path, text: str) -> dict[str, str]:
    users: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, encoded = line.partition(":")
        if not sep:
            raise PasswordFileError(path, "expected 'user:hash'", number)
        try:
            validate_username(user)
        except ValueError as exc:
            raise PasswordFileError(path, str(exc), number) from None
        if user in users:
            raise PasswordFileError(path, f"user {user!r} appears twice", number)
        try:
            check_hash_format(encoded)
        except PasswordHashError as exc:
            raise PasswordFileError(path, f"user {user!r}: {exc}", number) from None
        users[user] = encoded
    return users


def read_password_file(path: Path) -> dict[str, str]:
    """Read ``user:hash`` lines (``#`` comments and blank lines ignored) into a dict."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PasswordFileError(
            path, f"file not found (create it with `edge-gateway passwd {path} USER`)"
        ) from None
    except PermissionError:
        raise PasswordFileError(
            path,
            f"permission denied: user {_user_name()} must be able to read it "
            f"(e.g. chgrp edge-gateway {path} && chmod 0640 {path})",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PasswordFileError(path, f"cannot read: {exc}") from None
    return parse_password_file(path, text)


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _write_atomically(path: Path, text: str) -> None:
    # A crash half-way must leave the old file intact, and the file must never be readable
    # by others, not even for a moment: create the temporary file 0600 beside the target.
    # A file that exists keeps its group and group-read bit: the service reads it through
    # its group (systemd/README), and `edge-gateway passwd` run by root must not take that
    # away. Nothing beyond owner read/write and group read is ever kept.
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        try:
            old = os.stat(path)
        except FileNotFoundError:
            old = None
        if old is not None:
            if old.st_gid != os.getegid():
                os.fchown(fd, -1, old.st_gid)
            os.fchmod(fd, 0o600 | (old.st_mode & 0o040))
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise


def write_password_file(path: Path, users: Mapping[str, str]) -> None:
    """Write a fresh password file (mode 0600) holding ``users``."""
    for user, encoded in users.items():
        validate_username(user)
        check_hash_format(encoded)
    lines = ["# edge-gateway password file: user:hash, edit with `edge-gateway passwd`"]
    lines.extend(f"{user}:{encoded}" for user, encoded in users.items())
    _write_atomically(path, "\n".join(lines) + "\n")


def _rewrite(path: Path, user: str, encoded: str | None) -> bool:
    """Replace (or with None, remove) ``user``'s line, keeping comments and order."""
    try:
        original = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        original = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise PasswordFileError(path, f"cannot read: {exc}") from None
    parse_password_file(path, original)  # refuse to rewrite a file we do not understand
    out: list[str] = []
    found = False
    for raw in original.splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and line.partition(":")[0] == user:
            found = True
            if encoded is not None:
                out.append(f"{user}:{encoded}")
            continue
        out.append(raw)
    if encoded is not None and not found:
        out.append(f"{user}:{encoded}")
    if encoded is None and not found:
        return False
    _write_atomically(path, "\n".join(out) + "\n" if out else "")
    return True


def set_user(path: Path, user: str, encoded: str) -> None:
    """Add ``user`` or replace their hash; creates the file (0600) if missing."""
    validate_username(user)
    check_hash_format(encoded)
    _rewrite(path, user, encoded)


def delete_user(path: Path, user: str) -> bool:
    """Remove ``user``; False if they were not in the file."""
    if not path.exists():
        raise PasswordFileError(path, "file not found")
    return _rewrite(path, user, None)
