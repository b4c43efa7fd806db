"""Finding LAN devices with mDNS/DNS-SD (real `zeroconf`).

`LanDiscovery` browses the configured service types, resolves each instance to an address,
port and TXT properties, and reports one `LanDeviceInfo` per *device*: a Shelly announces
itself under both `_shelly._tcp` and `_http._tcp`, which must not make two devices, and the
device is only lost once every service that announced it is gone.

The interfaces are always the caller's choice: on a CI machine or in tests, browsing the
default interfaces would multicast on whatever network the machine is on.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

log = logging.getLogger(__name__)

SHELLY_TYPE = "_shelly._tcp.local."
WLED_TYPE = "_wled._tcp.local."
HTTP_TYPE = "_http._tcp.local."
DEFAULT_SERVICE_TYPES = (SHELLY_TYPE, WLED_TYPE, HTTP_TYPE)

# Service types that name the device family by themselves; `_http._tcp` needs a closer look.
KIND_BY_TYPE = {SHELLY_TYPE: "shelly", WLED_TYPE: "wled"}


@dataclass(frozen=True, slots=True)
class LanDeviceInfo:
    id: str
    kind: str
    name: str
    host: str
    port: int
    properties: Mapping[str, str] = field(default_factory=dict)
    service_type: str = ""


Callback = Callable[[LanDeviceInfo], Any]


def device_id(instance: str) -> str:
    """A topic-safe, stable id from an mDNS instance name ("ShellyPlus1PM-A8032AB12345" ->
    "shellyplus1pm-a8032ab12345"): no `/`, `+`, `#` or spaces can reach an MQTT topic."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", instance.strip().lower())
    return re.sub(r"-{2,}", "-", slug).strip("-")


def instance_of(name: str, service_type: str) -> str:
    suffix = "." + service_type
    return name[: -len(suffix)] if name.endswith(suffix) else name.split(".", 1)[0]


def kind_of(service_type: str, instance: str, properties: Mapping[str, str]) -> str | None:
    """Which driver fits, or None for a service that is not a device we know."""
    if service_type in KIND_BY_TYPE:
        return KIND_BY_TYPE[service_type]
    low = instance.lower()
    if low.startswith("shelly"):
        # Gen1 Shellies also announce _http._tcp but have no `gen` TXT and no RPC API.
        gen = properties.get("gen", "")
        return "shelly" if gen.isdigit() and int(gen) >= 2 else None
    if low.startswith("wled"):
        return "wled"
    return None


def _decode_properties(raw: Mapping[bytes, bytes | None]) -> dict[str, str]:
    return {
        k.decode("utf-8", "replace"): (v or b"").decode("utf-8", "replace") for k, v in raw.items()
    }


class LanDiscovery:
    """Browse mDNS for LAN devices and report them through `on_found` / `on_lost`.

    `on_found` is called again when a known device's address, port or TXT changes. Callbacks
    run in the event loop; they may be plain functions or coroutine functions.
    """

    def __init__(
        self,
        *,
        interfaces: Sequence[str] | InterfaceChoice,
        on_found: Callback,
        on_lost: Callback,
        service_types: Iterable[str] = DEFAULT_SERVICE_TYPES,
        zeroconf: AsyncZeroconf | None = None,
        resolve_timeout: float = 3.0,
    ) -> None:
        self.service_types = tuple(service_types)
        self.interfaces = (
            interfaces if isinstance(interfaces, InterfaceChoice) else list(interfaces)
        )
        self.on_found = on_found
        self.on_lost = on_lost
        self.resolve_timeout = resolve_timeout
        self._azc = zeroconf
        self._owns_zc = zeroconf is None
        self._browser: AsyncServiceBrowser | None = None
        self._running = False
        self._devices: dict[str, LanDeviceInfo] = {}
        self._service_device: dict[str, str] = {}  # full service name -> device id
        self._backing: dict[str, set[str]] = {}  # device id -> full service names
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._callbacks: set[asyncio.Task[Any]] = set()

    @property
    def devices(self) -> dict[str, LanDeviceInfo]:
        return dict(self._devices)

    async def start(self) -> None:
        if self._browser is not None:
            return
        if self._azc is None:
            self._azc = AsyncZeroconf(interfaces=self.interfaces)
        # Set before the browser exists: it may report services already in a shared cache.
        self._running = True
        self._browser = AsyncServiceBrowser(
            self._azc.zeroconf, list(self.service_types), handlers=[self._on_change]
        )

    async def stop(self) -> None:
        self._running = False
        browser, self._browser = self._browser, None
        if browser is not None:
            await browser.async_cancel()
        # Stopping is shutdown: a consumer's slow callback must not hold it up.
        pending = [*self._resolving.values(), *self._callbacks]
        for task in pending:
            task.cancel()
        self._resolving.clear()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if self._azc is not None and self._owns_zc:
            await self._azc.async_close()
            self._azc = None
        self._devices.clear()
        self._service_device.clear()
        self._backing.clear()

    async def __aenter__(self) -> LanDiscovery:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # zeroconf calls handlers with these exact keyword names, from the event loop.
    def _on_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        if not self._running:
            return
        if state_change is ServiceStateChange.Removed:
            self._removed(name)
            return
        old = self._resolving.pop(name, None)
        if old is not None:
            old.cancel()
        task = asyncio.get_running_loop().create_task(self._resolve(service_type, name))
        self._resolving[name] = task
        task.add_done_callback(functools.partial(self._resolve_done, name))

    def _resolve_done(self, name: str, task: asyncio.Task[None]) -> None:
        if self._resolving.get(name) is task:
            del self._resolving[name]
        if not task.cancelled() and task.exception() is not None:
            log.error("mDNS: handling %s failed", name, exc_info=task.exception())

    async def _resolve(self, service_type: str, name: str) -> None:
        assert self._azc is not None
        info = AsyncServiceInfo(service_type, name)
        if not await info.async_request(self._azc.zeroconf, int(self.resolve_timeout * 1000)):
            log.warning("mDNS: %s announced but did not resolve", name)
            return
        dev = self._to_device(info, service_type, name)
        if dev is None:
            return
        self._service_device[name] = dev.id
        self._backing.setdefault(dev.id, set()).add(name)
        prev = self._devices.get(dev.id)
        if prev is not None:
            # The family's own service type says more than the generic _http._tcp one.
            if service_type == HTTP_TYPE and prev.service_type != HTTP_TYPE:
                return
            if (prev.host, prev.port, prev.properties, prev.kind) == (
                dev.host,
                dev.port,
                dev.properties,
                dev.kind,
            ):
                return
        self._devices[dev.id] = dev
        log.info("mDNS: %s %s at %s:%d", dev.kind, dev.id, dev.host, dev.port)
        self._emit(self.on_found, dev)

    def _to_device(
        self, info: AsyncServiceInfo, service_type: str, name: str
    ) -> LanDeviceInfo | None:
        instance = instance_of(name, service_type)
        props = _decode_properties(info.properties)
        kind = kind_of(service_type, instance, props)
        if kind is None:
            log.debug("mDNS: ignoring %s (not a known device family)", name)
            return None
        v4 = info.parsed_addresses(IPVersion.V4Only)
        addrs = v4 or info.parsed_scoped_addresses(IPVersion.V6Only)
        host = addrs[0] if addrs else (info.server or "").rstrip(".")
        if not host or info.port is None:
            log.warning("mDNS: %s has no usable address", name)
            return None
        ident = device_id(instance)
        if not ident:
            return None
        return LanDeviceInfo(ident, kind, instance, host, info.port, props, service_type)

    def _removed(self, name: str) -> None:
        task = self._resolving.pop(name, None)
        if task is not None:
            task.cancel()
        dev_id = self._service_device.pop(name, None)
        if dev_id is None:
            return
        backing = self._backing.get(dev_id, set())
        backing.discard(name)
        if backing:
            return  # still announced under another service type
        self._backing.pop(dev_id, None)
        dev = self._devices.pop(dev_id, None)
        if dev is not None:
            log.info("mDNS: %s %s gone", dev.kind, dev.id)
            self._emit(self.on_lost, dev)

    def _emit(self, callback: Callback, dev: LanDeviceInfo) -> None:
        try:
            result = callback(dev)
        except Exception:
            log.exception("mDNS: callback for %s failed", dev.id)
            return
        if inspect.isawaitable(result):

            async def run() -> None:
                try:
                    await result
                except Exception:
                    log.exception("mDNS: callback for %s failed", dev.id)

            task = asyncio.get_running_loop().create_task(run())
            self._callbacks.add(task)
            task.add_done_callback(self._callbacks.discard)
