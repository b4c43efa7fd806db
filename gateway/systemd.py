"""The service manager's notification protocol (sd_notify), with the standard library only.

systemd passes ``NOTIFY_SOCKET`` (a datagram socket: a path, or ``@name`` in the abstract
namespace) to a ``Type=notify`` service and reads newline-separated ``KEY=VALUE`` lines from
it: ``READY=1`` ends start-up, ``STATUS=`` is shown by ``systemctl status``, ``WATCHDOG=1``
proves the service is alive, ``STOPPING=1`` and ``RELOADING=1`` announce those phases.
Without ``NOTIFY_SOCKET`` (run by hand, in tests, under another supervisor) every call is a
no-op, so callers never need to check.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


def _address(value: str) -> str | bytes | None:
    if value.startswith("@"):
        # Linux abstract namespace: the leading NUL byte is what makes it abstract.
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock and other forms are not for a service on this machine


def watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds between WATCHDOG=1 pings (half the timeout systemd asked for), or None.

    systemd sets ``WATCHDOG_PID`` to the process it expects pings from; a child that
    inherited the variables must not ping on the parent's behalf.
    """
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        timeout = int(usec)
    except ValueError:
        return None
    if timeout <= 0:
        return None
    return timeout / 2 / 1_000_000


class Notifier:
    """Sends state changes to the service manager; does nothing outside a notify service."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self._address = _address(env.get("NOTIFY_SOCKET", ""))
        self._sock: socket.socket | None = None
        self.watchdog_interval = watchdog_interval(env) if self._address is not None else None
        self._watchdog: asyncio.Task[None] | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields as one datagram; True if it was sent.

        A failure is logged once and otherwise ignored: losing contact with the service
        manager must not take the gateway down (the watchdog, if any, will act on it).
        """
        if self._address is None:
            return False
        if any("\n" in field for field in fields):
            raise ValueError("a notification field must not contain a newline")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            if not self._failed:
                log.warning("cannot notify the service manager: %s", exc)
                self._failed = True
            return False
        self._failed = False
        return True

    def ready(self, status: str | None = None) -> None:
        self.notify("READY=1", *_status(status))

    def status(self, text: str) -> None:
        self.notify(*_status(text))

    def reloading(self, status: str | None = "reloading") -> None:
        # MONOTONIC_USEC lets systemd (253+, Type=notify-reload) tell this reload from an
        # earlier one; older versions ignore it.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *_status(status))

    def stopping(self, status: str | None = "stopping") -> None:
        self.notify("STOPPING=1", *_status(status))

    def start_watchdog(self) -> None:
        """Ping ``WATCHDOG=1`` from the running event loop at half the watchdog timeout.

        The pings come from a task on the loop on purpose: a loop that is blocked or stuck
        stops pinging, and systemd then kills and restarts the service.
        """
        if self.watchdog_interval is None or self._watchdog is not None:
            return
        self._watchdog = asyncio.get_running_loop().create_task(self._ping(self.watchdog_interval))

    async def _ping(self, interval: float) -> None:
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def stop_watchdog(self) -> None:
        task, self._watchdog = self._watchdog, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    return ("STATUS=" + " ".join(text.splitlines()),)
