"""What a configuration reload (SIGHUP, ``systemctl reload``) may change in a running gateway.

Authentication (the password file and admin users), the ACL rules, the log level and the
connection limits the server checks as clients arrive take effect at once; every
connection is kept. Anything bound or opened at start-up (listeners, the store), the topic
prefix and the device bridge would need a restart: a change there is reported, not applied,
and the configuration in force keeps the old values so that it describes what runs.

A file that does not load is refused by the loader (the old configuration stays). A file
that loads but gives clients more access than before is applied, since that may be what the
administrator meant, but every such change is named (``weakened_access``) so that a
half-saved file that lost its ``auth:`` section is noticed in the log.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace

from gateway.auth.acl import AclRule
from gateway.config import AclConfig, AuthConfig, GatewayConfig, LimitsConfig, ListenerConfig
from gateway.upstream.rules import takes_down
from gateway.upstream.settings import UpstreamConfig
from gateway.upstream.validate import local_filter

# Limits the server reads for each new connection, so a new value simply applies to the next.
LIVE_LIMITS: tuple[str, ...] = (
    "connect_timeout",
    "max_connections",
    "max_pending_per_address",
    "max_pending_connections",
    "send_stall_timeout",
    "password_checks_per_address",
    "password_checks_waiting",
    "login_backoff_max",
)

# Top-level keys whose values are fixed once the gateway has started.
_RESTART_KEYS: tuple[str, ...] = (
    "topic_prefix",
    "listeners",
    "persistence",
    "sys_interval",
    "devices",
    "demo",
    "admin_api",
    "admin_status_interval",
    # The upstream bridge's connections are opened once; their settings (and passwords) are
    # never named in the log, only the key.
    "upstream",
)


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    config: GatewayConfig  # the configuration in force after the reload
    applied: tuple[str, ...]  # human-readable changes that take effect now
    restart_needed: tuple[str, ...]  # changed keys that are kept at their old values
    # Changes that give clients more access than before, now or at the next restart.
    weakened: tuple[str, ...] = ()


def plan_reload(old: GatewayConfig, new: GatewayConfig) -> ReloadPlan:
    applied: list[str] = []
    restart: list[str] = []
    for key in _RESTART_KEYS:
        if getattr(old, key) != getattr(new, key):
            restart.append(key)

    limits = old.limits
    live: dict[str, object] = {}
    for field in fields(LimitsConfig):
        before, after = getattr(old.limits, field.name), getattr(new.limits, field.name)
        if before == after:
            continue
        if field.name in LIVE_LIMITS:
            live[field.name] = after
            applied.append(f"limits.{field.name}: {before} -> {after}")
        else:
            restart.append(f"limits.{field.name}")
    if live:
        limits = replace(limits, **live)  # type: ignore[arg-type]

    old_auth, new_auth = old.auth, new.auth
    if old_auth.password_file != new_auth.password_file:
        applied.append(f"auth.password_file: {old_auth.password_file} -> {new_auth.password_file}")
    if old_auth.admin_users != new_auth.admin_users:
        added = sorted(set(new_auth.admin_users) - set(old_auth.admin_users))
        removed = sorted(set(old_auth.admin_users) - set(new_auth.admin_users))
        applied.append(f"auth.admin_users: added {added or 'none'}, removed {removed or 'none'}")
    if old_auth.acl != new_auth.acl:
        change = f"auth.acl: {len(old_auth.acl.rules)} -> {len(new_auth.acl.rules)} rules"
        if old_auth.acl.default != new_auth.acl.default:
            change += f", default {old_auth.acl.default} -> {new_auth.acl.default}"
        applied.append(change)
    if old.logging != new.logging:
        applied.append(f"logging.level: {old.logging.level} -> {new.logging.level}")

    config = replace(old, auth=new_auth, logging=new.logging, limits=limits)
    return ReloadPlan(
        config=config,
        applied=tuple(applied),
        restart_needed=tuple(restart),
        weakened=weakened_access(old, new),
    )


# --- what gives clients more access ---------------------------------------------------------


def weakened_access(old: GatewayConfig, new: GatewayConfig) -> tuple[str, ...]:
    """The changes from ``old`` (in force) to ``new`` (the file) that let clients do more,
    each in words for the log. Listener changes count although they wait for a restart: the
    next restart would open them."""
    return (
        *acl_weakened(old.auth.acl, new.auth.acl),
        *auth_weakened(old.auth, new.auth),
        *listeners_weakened(old.listeners, new.listeners),
        *upstream_weakened(old.upstream, new.upstream),
    )


def describe_rule(rule: AclRule) -> str:
    actions = ",".join(sorted(rule.actions))
    who = f"user {rule.user!r}"
    if rule.client_id != "*":
        who += f" client {rule.client_id!r}"
    return f"{'allow' if rule.allow else 'deny'} {who} {actions} {rule.topic!r}"


def acl_weakened(old: AclConfig, new: AclConfig) -> Iterator[str]:
    if old.default == "deny" and new.default == "allow":
        yield "auth.acl.default deny -> allow: every topic no rule names is open to every client"
    # Every rule that is gone is named, allow rules too (a lost one locks someone out): a file
    # that lost half its rules should be noticed whichever half it lost.
    kept = set(new.rules)
    for rule in old.rules:
        if rule not in kept:
            yield f"auth.acl rule removed: {describe_rule(rule)}"


def auth_weakened(old: AuthConfig, new: AuthConfig) -> Iterator[str]:
    if old.password_file is not None and new.password_file is None:
        yield (
            f"auth.password_file removed (was {old.password_file}): user names are no longer "
            "checked, every client is anonymous and rules for named users no longer apply"
        )
    added = sorted(set(new.admin_users) - set(old.admin_users))
    if added:
        yield (
            f"auth.admin_users added: {', '.join(added)} (may use the admin API and are not "
            "bound by the ACL)"
        )


def listeners_weakened(
    old: Sequence[ListenerConfig], new: Sequence[ListenerConfig]
) -> Iterator[str]:
    before = {listener.name: listener for listener in old}
    for index, listener in enumerate(new):
        where = f"listeners[{index}] ({listener.name})"
        previous = before.get(listener.name)
        if previous is None:
            if listener.allow_anonymous:
                yield f"{where} added with anonymous clients allowed (at the next restart)"
            if listener.admin:
                yield f"{where} added: every client of it is an admin (at the next restart)"
            continue
        if listener.allow_anonymous and not previous.allow_anonymous:
            yield f"{where}: anonymous clients allowed (at the next restart)"
        if previous.require_client_cert and not listener.require_client_cert:
            yield f"{where}: client certificates no longer required (at the next restart)"
        if previous.type in ("tls", "wss") and listener.type not in ("tls", "wss"):
            yield f"{where}: no longer TLS, passwords would cross the network in clear text"
        if listener.admin and not previous.admin:
            yield f"{where}: every client of it becomes an admin (at the next restart)"


def upstream_weakened(
    old: Sequence[UpstreamConfig], new: Sequence[UpstreamConfig]
) -> Iterator[str]:
    """An upstream broker that may publish on more local topics than before (a new broker
    counts as new for all of them), or a connection whose traffic is less protected."""
    before = {cfg.name: cfg for cfg in old}
    for cfg in new:
        where = f"upstream {cfg.name!r}"
        previous = before.get(cfg.name)
        same_broker = previous is not None and (previous.host, previous.port) == (
            cfg.host,
            cfg.port,
        )
        allowed: set[str] = set()
        if previous is not None and same_broker:
            allowed = {local_filter(rule) for rule in previous.topics if takes_down(rule)}
        for rule in cfg.topics:
            topic_filter = local_filter(rule)
            if takes_down(rule) and topic_filter not in allowed:
                allowed.add(topic_filter)
                yield (
                    f"{where}: the broker {cfg.host}:{cfg.port} may publish on local "
                    f"{topic_filter!r} (at the next restart)"
                )
        if previous is None:
            continue
        if previous.tls is not None and cfg.tls is None:
            yield (
                f"{where}: no longer TLS, its password and messages would cross the network "
                "in clear text (at the next restart)"
            )
        if (
            cfg.tls is not None
            and cfg.tls.insecure
            and not (previous.tls and previous.tls.insecure)
        ):
            yield (
                f"{where}: tls.insecure, the broker's certificate and name are no longer "
                "checked (at the next restart)"
            )
