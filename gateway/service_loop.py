"""The gateway as a service: start it, tell systemd how it is doing, reload it on SIGHUP, and
stop it cleanly on SIGTERM/SIGINT.

It knows the gateway only as a `Service` (start, reload, stop, a client count), so the
composition root (gateway/app.py) stays the one place that builds and wires the components.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Protocol

from gateway.config import ConfigError
from gateway.startup import StartupError
from gateway.systemd import Notifier

log = logging.getLogger("gateway")


class Service(Protocol):
    @property
    def outside_connections(self) -> int:
        """Network clients connected now (what `systemctl status` shows)."""
        ...

    async def start(self) -> None: ...

    async def reload(self) -> list[str]: ...

    async def stop(self) -> None: ...


def _serving_status(service: Service) -> str:
    clients = service.outside_connections
    return f"serving {clients} client{'' if clients == 1 else 's'}"


async def _reload_for_signal(service: Service, notifier: Notifier) -> None:
    notifier.reloading()
    try:
        await service.reload()
    except ConfigError as exc:  # already logged by reload()
        notifier.ready(f"reload failed, previous configuration in force: {exc}")
    except Exception:
        log.exception("reload failed, the previous configuration stays in force")
        notifier.ready("reload failed, previous configuration in force (see the log)")
    else:
        notifier.ready(_serving_status(service))


async def _report_status(service: Service, notifier: Notifier, every: float = 5.0) -> None:
    shown = ""
    while True:
        await asyncio.sleep(every)
        status = _serving_status(service)
        if status != shown:
            notifier.status(status)
            shown = status


async def serve_service(build: Callable[[], Service]) -> None:
    """Build the service (`build` may raise StartupError), run it until SIGTERM/SIGINT, stop it."""
    notifier = Notifier()
    notifier.status("starting")
    # Pinging already: systemd counts the watchdog from start-up, and restoring a large store
    # keeps the loop running (TimeoutStartSec covers a start-up that never finishes).
    notifier.start_watchdog()
    try:
        await _serve(build(), notifier)
    except StartupError as exc:
        notifier.status(f"failed to start: {exc}")  # what `systemctl status` shows
        raise
    finally:
        await notifier.stop_watchdog()
        notifier.close()


async def _serve(service: Service, notifier: Notifier) -> None:
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[None]] = set()
    started = False
    early_reload = False

    def on_sighup() -> None:
        nonlocal early_reload
        if not started:  # reloading a half-started gateway: do it once it is up instead
            early_reload = True
            return
        task = loop.create_task(_reload_for_signal(service, notifier))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    # Installed before start-up: the listeners accept (and systemd or a user may send
    # SIGTERM) before start() returns, and the default actions would kill the process
    # without closing the store. A stop asked for during start-up is honoured once it is up.
    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    started = True
    notifier.ready(_serving_status(service))
    if early_reload:
        on_sighup()
    status = None
    if notifier.enabled:
        every = min(5.0, notifier.watchdog_interval or 5.0)
        status = loop.create_task(_report_status(service, notifier, every))
    await stop.wait()
    log.info("stopping")
    notifier.stopping()
    loop.remove_signal_handler(signal.SIGHUP)
    if status is not None:
        status.cancel()
    for task in list(reloads):
        await task  # a reload half-way through finishes before the server goes away
    await service.stop()
    log.info("stopped")
