"""What the admin API reports, read from the broker (via the server) and the device layer.

The admin service answers requests with it and the live publisher sends the same shapes as
updates, so a UI can start from a response and keep it current from the updates.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Protocol

from gateway.admin import protocol
from gateway.admin.protocol import Page, PageRequest
from gateway.broker.records import Message
from gateway.broker.session_info import SessionInfo
from gateway.devicetypes.policy import DevicePolicy
from gateway.upstream.status import UpstreamStatus


class BrokerView(Protocol):
    """The server's admin primitives (gateway/server/server.py)."""

    started_at: float

    def sessions_info(self) -> list[SessionInfo]: ...
    def queue_entries(self, client_id: str) -> list[tuple[int, Message, bool]] | None: ...
    def cancel_queued(self, client_id: str, seqs: Collection[int] | None) -> list[int]: ...
    def kick(self, client_id: str) -> bool: ...
    def delete_session(self, client_id: str) -> bool: ...
    def versions(self) -> tuple[int, int]: ...
    def events_since(self, seq: int) -> tuple[int, list[dict[str, object]]]: ...
    def stats_snapshot(self) -> dict[str, float | int]: ...


class DeviceLayer(Protocol):
    """The device supervisor's admin hooks (devices/supervisor.py)."""

    @property
    def version(self) -> int: ...

    def device_listing(self) -> list[dict[str, object]]: ...
    def device_count(self) -> int: ...
    def client_id_of(self, device_id: str) -> str | None: ...
    def device_of_client(self, client_id: str) -> str | None: ...
    def attempts(self, device_id: str, payload: bytes, correlation: bytes | None) -> int: ...
    async def set_policy(
        self, device_id: str, overrides: Mapping[str, object] | None
    ) -> DevicePolicy: ...


class UpstreamLayer(Protocol):
    """The upstream bridge's admin hooks (gateway/upstream/)."""

    @property
    def version(self) -> int: ...  # bumped whenever a status changes (cheap to poll)

    def upstream_statuses(self) -> list[UpstreamStatus]: ...


# What a request without `offset` and `limit` gets, and what the live updates carry.
FIRST_PAGE = PageRequest()


def _persistent(entry: Mapping[str, object]) -> bool:
    policy = entry.get("policy")
    return isinstance(policy, dict) and policy.get("session") == "persistent"


class AdminData:
    def __init__(
        self,
        broker: BrokerView,
        devices: Callable[[], DeviceLayer | None],
        *,
        store_bytes: Callable[[], int | None] = lambda: None,
        upstreams: Callable[[], UpstreamLayer | None] = lambda: None,
    ) -> None:
        self.broker = broker
        self._devices = devices
        self._upstreams = upstreams
        self.store_bytes = store_bytes
        # A page's JSON stays under this (the service lowers it for a small max packet size).
        self.page_bytes = protocol.PAGE_BYTES

    @property
    def devices_layer(self) -> DeviceLayer | None:
        return self._devices()

    def devices_version(self) -> int:
        layer = self._devices()
        return -1 if layer is None else layer.version

    def upstreams_version(self) -> tuple[int, int]:
        """Changes when a status changes, and when the bridge is replaced (a reload may
        build a new one whose version starts again)."""
        layer = self._upstreams()
        return (0, -1) if layer is None else (id(layer), layer.version)

    # --- lists ----------------------------------------------------------------------------------
    # Each is a Page (protocol.py): only the entries of the page are built.

    def sessions(self, request: PageRequest = FIRST_PAGE) -> Page:
        layer = self._devices()
        infos = sorted(self.broker.sessions_info(), key=lambda i: i.client_id)

        def entry(info: SessionInfo) -> dict[str, object]:
            device = None if layer is None else layer.device_of_client(info.client_id)
            return protocol.session_entry(info, device)

        entries, after = protocol.build_page(infos, request, entry, self.page_bytes)
        return Page(entries, request.offset, request.limit, len(infos), after)

    def device_count(self) -> int:
        layer = self._devices()
        return 0 if layer is None else layer.device_count()

    def devices(self, request: PageRequest = FIRST_PAGE) -> Page:
        layer = self._devices()
        listing = [] if layer is None else layer.device_listing()

        def entry(item: dict[str, object]) -> dict[str, object]:
            assert layer is not None
            if item.get("pending") is None:
                item["pending"] = self._queued_count(layer, str(item["id"]), item)
            return item

        entries, after = protocol.build_page(listing, request, entry, self.page_bytes)
        return Page(entries, request.offset, request.limit, len(listing), after)

    def _queued_count(self, layer: DeviceLayer, device_id: str, entry: Mapping[str, object]) -> int:
        if not _persistent(entry):
            return 0
        client_id = layer.client_id_of(device_id)
        entries = None if client_id is None else self.broker.queue_entries(client_id)
        return 0 if entries is None else len(entries)

    def device(self, device_id: str) -> dict[str, object]:
        """One device's listing entry; RequestError if there is no such device."""
        layer = self._devices()
        if layer is None:
            raise protocol.RequestError(f"unknown device {device_id!r}")
        for entry in layer.device_listing():
            if entry["id"] == device_id:
                if entry.get("pending") is None:
                    entry["pending"] = self._queued_count(layer, device_id, entry)
                return entry
        raise protocol.RequestError(f"unknown device {device_id!r}")

    def client_id(self, device_id: str) -> str:
        layer = self._devices()
        client_id = None if layer is None else layer.client_id_of(device_id)
        if client_id is None:
            raise protocol.RequestError(f"unknown device {device_id!r}")
        return client_id

    def pending(self, device_id: str | None = None, request: PageRequest = FIRST_PAGE) -> Page:
        """Commands waiting, grouped by device (``{device: [command, ...]}``): one device's,
        or every persistent device's; the page counts commands."""
        layer = self._devices()
        if layer is None:
            if device_id is not None:
                raise protocol.RequestError(f"unknown device {device_id!r}")
            return Page({}, request.offset, request.limit, 0, None)
        waiting = self._waiting(layer, device_id)

        def entry(item: tuple[str, int, Message, bool]) -> tuple[str, dict[str, object]]:
            dev, seq, msg, in_flight = item
            attempts = layer.attempts(dev, msg.payload, msg.properties.correlation_data)
            return dev, protocol.pending_entry(seq, msg, in_flight, attempts)

        entries, after = protocol.build_page(waiting, request, entry, self.page_bytes)
        out: dict[str, list[dict[str, object]]] = {} if device_id is None else {device_id: []}
        for dev, command in entries:
            out.setdefault(dev, []).append(command)
        return Page(out, request.offset, request.limit, len(waiting), after)

    def pending_count(self) -> int:
        """Commands waiting for every persistent device (the status line's figure)."""
        layer = self._devices()
        return 0 if layer is None else len(self._waiting(layer, None))

    def _waiting(
        self, layer: DeviceLayer, device_id: str | None
    ) -> list[tuple[str, int, Message, bool]]:
        if device_id is not None:
            self.client_id(device_id)  # RequestError for an unknown device
            ids = [device_id]
        else:
            ids = [str(e["id"]) for e in layer.device_listing() if _persistent(e)]
        waiting: list[tuple[str, int, Message, bool]] = []
        for dev in ids:
            client_id = layer.client_id_of(dev)
            entries = None if client_id is None else self.broker.queue_entries(client_id)
            waiting.extend((dev, seq, msg, in_flight) for seq, msg, in_flight in entries or ())
        return waiting

    def upstreams(self, request: PageRequest = FIRST_PAGE) -> Page:
        """The upstream connections, by name; none (``[]``) when none is configured."""
        statuses = self._upstream_statuses()
        entries, after = protocol.build_page(
            statuses, request, UpstreamStatus.as_json, self.page_bytes
        )
        return Page(entries, request.offset, request.limit, len(statuses), after)

    def upstream_counts(self) -> tuple[int, int]:
        """(configured, connected): the status line's figures."""
        statuses = self._upstream_statuses()
        return len(statuses), sum(1 for s in statuses if s.state == "connected")

    def _upstream_statuses(self) -> list[UpstreamStatus]:
        layer = self._upstreams()
        if layer is None:
            return []
        return sorted(layer.upstream_statuses(), key=lambda s: s.name)
