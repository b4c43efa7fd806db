"""From the plain values of config.yaml to the settings and objects the components own.

gateway/config/ only reads and checks the file; the composition root (gateway/app.py) calls
these to build the broker's settings, the password checker and the authorizer, at start-up
and again on a reload.
"""

from __future__ import annotations

import ssl

from gateway.auth.acl import gateway_authorizer
from gateway.auth.authenticator import Authenticator
from gateway.auth.checks import CheckLimits, PasswordChecks
from gateway.broker.access import Authorizer
from gateway.broker.settings import BrokerSettings
from gateway.config import GatewayConfig, ListenerConfig


def broker_settings(config: GatewayConfig) -> BrokerSettings:
    limits = config.limits
    return BrokerSettings(
        max_packet_size=limits.max_packet_size,
        receive_maximum=limits.receive_maximum,
        max_inflight_out=limits.max_inflight_messages,
        max_keepalive=limits.max_keepalive,
        max_session_expiry=limits.max_session_expiry,
        v311_session_expiry=limits.v311_session_expiry,
        topic_alias_maximum=limits.topic_alias_maximum,
        default_queue=limits.queue,
        queue_rules=limits.queue_rules,
        max_retained_messages=limits.max_retained_messages,
        max_sessions=limits.max_sessions,
        sys_interval=config.sys_interval,
    )


def build_authorizer(config: GatewayConfig) -> Authorizer:
    """The ACL rules (if any) behind the built-in guard of <topic_prefix>/bridge/..."""
    acl = config.auth.acl
    return gateway_authorizer(config.topic_prefix, acl.rules, acl.default, config.auth.admin_users)


def build_authenticator(
    config: GatewayConfig, checks: PasswordChecks | None = None
) -> Authenticator:
    """Raises PasswordFileError if the password file became unreadable since loading.
    ``checks``: the gateway's password-check pool, kept across reloads (None: a new one)."""
    return Authenticator(
        config.auth.password_file,
        config.auth.admin_users,
        admin_listeners=[listener.name for listener in config.listeners if listener.admin],
        checks=checks if checks is not None else PasswordChecks(check_limits(config)),
    )


def check_limits(config: GatewayConfig) -> CheckLimits:
    """The password-check limits of gateway/auth/checks.py, from limits.*."""
    limits = config.limits
    return CheckLimits(
        workers=limits.password_threads,
        per_address=limits.password_checks_per_address,
        max_waiting=limits.password_checks_waiting,
        backoff_max=limits.login_backoff_max,
    )


def listener_tls_context(listener: ListenerConfig) -> ssl.SSLContext:
    """The server side of a tls/wss listener. The files were checked when the config was read;
    this reads them again (ssl.SSLError or OSError if they changed since)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    assert listener.certfile is not None and listener.keyfile is not None
    ctx.load_cert_chain(str(listener.certfile), str(listener.keyfile))
    if listener.cafile is not None:
        ctx.load_verify_locations(str(listener.cafile))
    if listener.require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
