"""The auth section: the password file, admin users and the ACL."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.auth.acl import (
    ACTIONS,
    NOT_AUTHORIZED,
    SUBACK_FAILURE_CODES,
    AclDefault,
    AclRule,
    topic_filter_problem,
)
from gateway.auth.passwords import PasswordFileError, read_password_file
from gateway.config.listeners import ListenerConfig
from gateway.config.reader import MISSING, Map, Source, glob_problem, join, show


@dataclass(frozen=True, slots=True)
class AclConfig:
    default: AclDefault = "allow"
    rules: tuple[AclRule, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthConfig:
    password_file: Path | None = None
    admin_users: tuple[str, ...] = ()
    acl: AclConfig = AclConfig()


def _read_acl_rule(src: Source, path: str, raw: object) -> AclRule:
    section = Map(src, path, raw)
    user = section.string("user", "*", glob_problem)
    client_id = section.string("client_id", "*", glob_problem)
    topic = section.string("topic", "#", topic_filter_problem)
    actions_raw = section.take("actions")
    if actions_raw is MISSING:
        actions = frozenset(ACTIONS)
    else:
        items = [actions_raw] if isinstance(actions_raw, str) else actions_raw
        expected = "a list of read, write, subscribe"
        if not isinstance(items, list) or not items:
            raise section.error("actions", f"expected {expected}, got {show(actions_raw)}")
        for item in items:
            if item not in ACTIONS:
                raise section.error("actions", f"expected {expected}, got {show(item)} in it")
        actions = frozenset(str(item) for item in items)
    allow = section.boolean("allow", True)
    value = section.take("reason_code")
    reason_code = NOT_AUTHORIZED
    if value is not MISSING:
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value not in SUBACK_FAILURE_CODES
        ):
            codes = ", ".join(f"0x{code:02X}" for code in sorted(SUBACK_FAILURE_CODES))
            got = f"0x{value:02X}" if isinstance(value, int) else show(value)
            raise section.error(
                "reason_code", f"expected a SUBACK failure code ({codes}), got {got}"
            )
        reason_code = value
    section.finish()
    return AclRule(
        user=user,
        client_id=client_id,
        topic=topic,
        actions=actions,
        allow=allow,
        reason_code=reason_code,
    )


def read_auth(src: Source, section: Map, listeners: list[ListenerConfig]) -> AuthConfig:
    section.declare(("password_file", "admin_users", "acl"))
    password_file = section.optional_path("password_file")
    admins: list[str] = []
    for path, item in section.items("admin_users"):
        if not isinstance(item, str) or not item:
            raise src.error(path, f"expected a user name, got {show(item)}")
        admins.append(item)
    acl_section = section.mapping("acl")
    default = acl_section.choice("default", "allow", ("allow", "deny"))
    rules = [_read_acl_rule(src, path, raw) for path, raw in acl_section.items("rules")]
    acl_section.finish()
    section.finish()

    users: dict[str, str] | None = None
    if password_file is not None:
        try:
            users = read_password_file(password_file)
        except PasswordFileError as exc:
            raise section.error("password_file", str(exc)) from None
    else:
        for index, listener in enumerate(listeners):
            if not listener.allow_anonymous:
                raise section.error(
                    "password_file",
                    f"listeners[{index}] ({listener.name}) requires user names and passwords, "
                    "so a password file is needed: create one with "
                    "`edge-gateway passwd FILE USER` and set auth.password_file",
                )
    for index, admin in enumerate(admins):
        if users is None:
            raise section.error("admin_users", "admin users need auth.password_file to log in")
        if admin not in users:
            raise src.error(
                join(section.key("admin_users"), index),
                f"user {admin!r} is not in {password_file}; add it with "
                f"`edge-gateway passwd {password_file} {admin}`",
            )
    acl_default: AclDefault = "deny" if default == "deny" else "allow"
    return AuthConfig(
        password_file=password_file,
        admin_users=tuple(admins),
        acl=AclConfig(default=acl_default, rules=tuple(rules)),
    )
