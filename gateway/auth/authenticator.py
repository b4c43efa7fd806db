"""Checks CONNECT credentials against the password file."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from gateway.auth.checks import CheckRefused, PasswordChecks, source_address
from gateway.auth.passwords import DUMMY_HASH, read_password_file, verify_password
from gateway.broker.effects import ConnectionInfo, Identity

BAD_USER_NAME_OR_PASSWORD = 0x86
NOT_AUTHORIZED = 0x87

_CACHE_SIZE = 1024


class Authenticator:
    """Decides who a CONNECT is.

    * No user name: anonymous, allowed only on a listener with ``allow_anonymous`` or for a
      trusted (in-process) client.
    * User name and password: checked against the password file; a wrong password or an
      unknown user is refused with 0x86, whatever the listener allows.
    * User name without a password file (or without a password, on an anonymous listener):
      the name is unverified, so the client is let in as anonymous and the name is not used
      for ACLs or admin rights — an unchecked name must not impersonate anyone.
    * Trusted clients are the gateway itself: their name is taken as given, and they are
      admins.
    * Every client let in on one of ``admin_listeners`` (listener names; config allows
      ``admin: true`` on Unix sockets only, whose file mode limits who can connect) is an
      admin, whoever it authenticated as.

    Hashing goes through ``checks`` (bounded, fair among source addresses, with back-off
    after failures; gateway/auth/checks.py); a check it does not run is refused with its
    reason (0x9F connection rate exceeded, 0x89 server busy).
    """

    def __init__(
        self,
        password_file: Path | None = None,
        admin_users: Iterable[str] = (),
        admin_listeners: Iterable[str] = (),
        checks: PasswordChecks | None = None,
    ) -> None:
        self.checks = checks if checks is not None else PasswordChecks()
        self._admins = frozenset(admin_users)
        self._admin_listeners = frozenset(admin_listeners)
        self._users: dict[str, str] = {}
        self._password_file: Path | None = None
        # (user, stored hash, keyed digest of the password) of recent successful logins, so a
        # reconnect storm does not cost one scrypt run per CONNECT. The digest is keyed with a
        # per-process secret so the cache holds nothing useful to an offline attacker.
        self._cache: OrderedDict[tuple[str, str, bytes], None] = OrderedDict()
        self._cache_key = secrets.token_bytes(32)
        self.reload(password_file)

    @property
    def password_file(self) -> Path | None:
        return self._password_file

    @property
    def users(self) -> frozenset[str]:
        return frozenset(self._users)

    def reload(self, password_file: Path | None) -> None:
        """(Re)read the password file; on error the previous users stay in force.

        Raises PasswordFileError.
        """
        users = read_password_file(password_file) if password_file is not None else {}
        self._users = users
        self._password_file = password_file
        self._cache.clear()

    def _digest(self, password: bytes) -> bytes:
        return hmac.new(self._cache_key, password, hashlib.sha256).digest()

    async def authenticate(
        self,
        username: str | None,
        password: bytes | None,
        info: ConnectionInfo,
        deadline: float | None = None,
    ) -> Identity:
        """Who this CONNECT is. ``deadline`` (time.monotonic) is when the client's connect
        timeout ends: a check still waiting for its turn then is refused as busy."""
        try:
            identity = await self._authenticate(username, password, info, deadline)
        except CheckRefused as refused:
            return Identity(ok=False, reason_code=refused.reason_code)
        if identity.ok and not identity.is_admin and info.listener in self._admin_listeners:
            return Identity(ok=True, username=identity.username, is_admin=True)
        return identity

    async def _authenticate(
        self,
        username: str | None,
        password: bytes | None,
        info: ConnectionInfo,
        deadline: float | None,
    ) -> Identity:
        if info.trusted:
            return Identity(ok=True, username=username, is_admin=True)
        anonymous_ok = info.allow_anonymous
        if username is None:
            if anonymous_ok:
                return Identity(ok=True)
            return Identity(ok=False, reason_code=NOT_AUTHORIZED)
        if password is None or not self._users:
            if anonymous_ok and (password is None or self._password_file is None):
                return Identity(ok=True)
            return Identity(ok=False, reason_code=BAD_USER_NAME_OR_PASSWORD)
        stored = self._users.get(username)
        if stored is None:
            # Spend the same time as a real check: timing must not reveal which names exist.
            await self._verify(info, password, DUMMY_HASH, deadline)
            return Identity(ok=False, reason_code=BAD_USER_NAME_OR_PASSWORD)
        key = (username, stored, self._digest(password))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._success(username)
        if not await self._verify(info, password, stored, deadline):
            return Identity(ok=False, reason_code=BAD_USER_NAME_OR_PASSWORD)
        # The file may have been reloaded while we hashed: only cache what is still current.
        if self._users.get(username) == stored:
            self._cache[key] = None
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return self._success(username)

    async def _verify(
        self, info: ConnectionInfo, password: bytes, stored: str, deadline: float | None
    ) -> bool:
        return await self.checks.check(
            source_address(info.peer), lambda: verify_password(password, stored), deadline
        )

    def _success(self, username: str) -> Identity:
        return Identity(ok=True, username=username, is_admin=username in self._admins)
