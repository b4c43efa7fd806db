"""The supervisor's books: which devices exist, their sessions and whether each is reachable.

A device is listed once it is declared (config.yaml) or shows up (a BTHome advertisement, an
mDNS answer); it has a session once the gateway talks MQTT for it. Every change that may alter
a listing bumps ``version`` (the admin API polls it) and calls ``on_change`` (the retained
device list).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Literal

from devices.session import CLIENT_ID_PREFIX, DeviceSession
from devices.views import KnownDeviceView

LinkState = Literal["unknown", "online", "offline"]


class SessionRegistry:
    def __init__(
        self, known: Sequence[KnownDeviceView], on_change: Callable[[], None] = lambda: None
    ) -> None:
        self.sessions: dict[str, DeviceSession] = {}
        self.links: dict[str, LinkState] = {}
        self.version = 0  # goes up whenever the device listing may have changed
        self._known = known
        self._on_change = on_change

    def known(self, device_id: str) -> KnownDeviceView | None:
        """The device as config.yaml declares it, if it does."""
        return next((k for k in self._known if k.id == device_id), None)

    def changed(self) -> None:
        self.version += 1
        self._on_change()

    def list_device(self, device_id: str) -> None:
        """Listed, link not known yet (unless it already is)."""
        self.links.setdefault(device_id, "unknown")

    def add(self, session: DeviceSession) -> None:
        self.sessions[session.device.id] = session
        self.changed()

    def set_link(self, device_id: str, link: LinkState) -> None:
        if self.links.get(device_id) != link:
            self.links[device_id] = link
            self.changed()

    def listed(self) -> Iterator[tuple[str, DeviceSession | None, KnownDeviceView | None]]:
        """Every listed device in id order, with its session and declaration (either may be
        missing, not both)."""
        for device_id in sorted(self.links):
            session = self.sessions.get(device_id)
            known = self.known(device_id)
            if session is None and known is None:  # pragma: no cover - listed means one of them
                continue
            yield device_id, session, known

    def device_count(self) -> int:
        return len(self.links)

    def client_id_of(self, device_id: str) -> str | None:
        """The MQTT client id of a device's session; None for an unknown device."""
        session = self.sessions.get(device_id)
        if session is not None:
            return session.client_id
        return CLIENT_ID_PREFIX + device_id if self.known(device_id) is not None else None

    def device_of_client(self, client_id: str) -> str | None:
        """The device a broker session belongs to (its session or its status link)."""
        if not client_id.startswith(CLIENT_ID_PREFIX):
            return None
        # One lookup, not a scan: the session list asks this for every session.
        base = client_id.removesuffix(".status")
        session = self.sessions.get(base[len(CLIENT_ID_PREFIX) :])
        return session.device.id if session is not None and session.client_id == base else None

    def attempts(self, device_id: str, payload: bytes, correlation: bytes | None) -> int:
        """Failed delivery attempts of a queued command so far (held in memory)."""
        session = self.sessions.get(device_id)
        return 0 if session is None else session.attempts(payload, correlation)
