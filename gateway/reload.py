"""What a configuration reload (SIGHUP, ``systemctl reload``) may change in a running gateway.

Authentication (the password file and admin users), the ACL rules, the log level and the
connection limits the server checks as clients arrive take effect at once; every
connection is kept. Anything bound or opened at start-up (listeners, the store), the topic
prefix and the device bridge would need a restart: a change there is reported, not applied,
and the configuration in force keeps the old values so that it describes what runs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from gateway.config import GatewayConfig, LimitsConfig

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
)


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    config: GatewayConfig  # the configuration in force after the reload
    applied: tuple[str, ...]  # human-readable changes that take effect now
    restart_needed: tuple[str, ...]  # changed keys that are kept at their old values


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
    return ReloadPlan(config=config, applied=tuple(applied), restart_needed=tuple(restart))
