"""Start-up failures a person can act on: one line saying what failed, where, and what to do.

The gateway's user meets these at the terminal or in the journal, usually on a fresh install
(another broker on 1883, a store directory owned by the wrong user). A traceback says none
of that, so these are raised as StartupError and printed as one line; the traceback is
logged at debug level only.
"""

from __future__ import annotations

import errno
import os
import socket

from gateway.config import ListenerConfig

# Lowest port an unprivileged process may bind (Linux net.ipv4.ip_unprivileged_port_start).
_FIRST_UNPRIVILEGED_PORT = 1024


class StartupError(Exception):
    """The gateway cannot start; the message is one line for a person, without a traceback."""


def _reason(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return (exc.strerror or str(exc)).lower()
    if exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc)


def listener_address(listener: ListenerConfig) -> str:
    if listener.type == "unix":
        return str(listener.path)
    host = listener.host or "0.0.0.0"
    return f"[{host}]:{listener.port}" if ":" in host else f"{host}:{listener.port}"


def cannot_listen(listener: ListenerConfig, index: int, exc: OSError, config_file: str) -> str:
    """The line for a listener that could not be bound, e.g. its port taken by another
    broker."""
    key = f"listeners[{index}]"
    unix = listener.type == "unix"
    code = exc.errno
    if isinstance(exc, socket.gaierror):
        hint = f"change {key}.host in {config_file} to an address of this machine"
    elif code == errno.EADDRINUSE and unix:
        hint = f"another gateway running? change {key}.path in {config_file}"
    elif code == errno.EADDRINUSE:
        hint = f"another broker running? change {key}.port in {config_file}"
    elif code in (errno.EACCES, errno.EPERM) and unix:
        hint = f"make its directory writable by this user, or change {key}.path in {config_file}"
    elif code in (errno.EACCES, errno.EPERM) and (listener.port or 0) < _FIRST_UNPRIVILEGED_PORT:
        hint = (
            f"ports below {_FIRST_UNPRIVILEGED_PORT} need privileges: use 1883/8883, or change "
            f"{key}.port in {config_file}"
        )
    elif code == errno.EADDRNOTAVAIL:
        hint = (
            f"no interface of this machine has that address: change {key}.host in {config_file}"
            " (0.0.0.0 for every interface)"
        )
    else:
        hint = f"check {key} in {config_file}"
    return f"cannot listen on {listener_address(listener)}: {_reason(exc)} ({hint})"
