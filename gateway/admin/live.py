"""Live updates for UIs: lists that changed, events, gateway status (DESIGN §5).

Polls the broker's change counters (`versions()`), event ring (`events_since()`), the device
layer's and the upstream bridge's versions a few times per second; a list is computed only
when a counter it depends on moved, and published at most once per second, and only if it
differs from what was sent last; the devices list is sent when a device's entry changed
apart from its last-seen time, RSSI and observed wake interval, which alone refresh it only
every `refresh_interval` (30 s). A list that takes long to build (thousands of sessions) is
built less often still, so that building it costs the event loop a bounded share
(`busy_share`) while the broker is busy and its counters move all the time. Events are limited
to a number per second; the excess is counted and reported as one ``events_dropped`` event.
The status is sent when one of its counts changed, at most every `status_interval` seconds
(config.yaml `admin_status_interval`); the message rates alone refresh it every
`refresh_interval`. So a subscriber to gw/# sees a quiet gateway as quiet. Everything is QoS 0
and not retained except the status, which a UI wants at once when it subscribes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from gateway.admin import protocol
from gateway.admin.data import AdminData
from gateway.admin.limits import EventLimiter, Throttle

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes, bool], Awaitable[bool]]  # topic, payload, retain -> sent


class LivePublisher:
    def __init__(
        self,
        data: AdminData,
        publish: Publish,
        prefix: str = "gw",
        *,
        version: str = "",
        clock: Callable[[], float] = time.time,
        poll_interval: float = 0.25,
        update_interval: float = 1.0,
        status_interval: float = 5.0,
        devices_refresh: float = 5.0,
        refresh_interval: float = 30.0,
        events_per_second: int = 50,
        busy_share: float = 0.01,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.data = data
        self.publish = publish
        self.prefix = prefix
        self.version = version
        self.clock = clock
        self.poll_interval = poll_interval
        self.update_interval = update_interval
        self.busy_share = busy_share
        self.timer = timer  # what building a list costs: real time even when `clock` is fake
        # last_seen and RSSI change without a version change: looked at now and then.
        self.devices_refresh = devices_refresh
        self.refresh_interval = refresh_interval
        self._sent_at: dict[str, float] = {}
        self._stable: dict[str, object] = {}
        self.limiter = EventLimiter(events_per_second)
        self._throttles = {name: Throttle(update_interval) for name in self.LISTS}
        self._keys: dict[str, object] = {}
        self._sent: dict[str, bytes] = {}
        self._devices_looked = float("-inf")
        self._status = Throttle(status_interval)
        self._status_sent: dict[str, object] | None = None
        self._totals: tuple[float, float, float] | None = None  # time, msgs in, msgs out
        self._event_seq: int | None = None
        self._pushed: list[dict[str, object]] = []
        self.published: dict[str, int] = {}  # sent per topic, for tests and figures

    LISTS = ("sessions", "devices", "pending", "upstreams")

    def topic(self, suffix: str) -> str:
        return f"{self.prefix}/bridge/{suffix}"

    def push_event(self, event: dict[str, object]) -> None:
        """An event from elsewhere (a command outcome); sent with the next poll."""
        self._pushed.append(event)

    def prime(self) -> None:
        """Events from now on will be sent (call before the first poll)."""
        if self._event_seq is None:
            self._event_seq, _ = self.data.broker.events_since(1 << 62)

    async def run(self) -> None:
        self.prime()
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad poll must not end live updates for good
                log.exception("admin live updates: poll failed")

    async def step(self) -> None:
        now = self.clock()
        await self._events(now)
        await self._lists(now)
        await self._send_status(now)

    async def _send(self, topic: str, payload: bytes, retain: bool = False) -> None:
        if await self.publish(topic, payload, retain):
            self.published[topic] = self.published.get(topic, 0) + 1

    # --- events ---------------------------------------------------------------------------------

    async def _events(self, now: float) -> None:
        broker = self.data.broker
        self.prime()
        assert self._event_seq is not None
        last, events = broker.events_since(self._event_seq)
        if events:
            first = events[0].get("seq")
            if isinstance(first, int) and first > self._event_seq + 1:
                self.limiter.count_dropped(first - self._event_seq - 1)  # the ring overflowed
        self._event_seq = last
        pushed, self._pushed = self._pushed, []
        dropped = self.limiter.take_report(now)
        if dropped:
            report = {"type": "events_dropped", "ts": round(now, 3), "count": dropped}
            await self._send(self.topic("events"), protocol.encode(report))
        for event in [*events, *pushed]:
            if self.limiter.admit(now):
                await self._send(self.topic("events"), protocol.encode(event))

    # --- lists ----------------------------------------------------------------------------------

    async def _lists(self, now: float) -> None:
        sessions_v, queues_v = self.data.broker.versions()
        devices_v = self.data.devices_version()
        keys: dict[str, object] = {
            "sessions": (sessions_v, queues_v, devices_v),
            "devices": (devices_v, queues_v),
            "pending": (queues_v, devices_v),
            "upstreams": self.data.upstreams_version(),
        }
        if now - self._devices_looked >= self.devices_refresh:
            keys["devices"] = (devices_v, queues_v, now)
        for name in self.LISTS:
            if keys[name] == self._keys.get(name) or not self._throttles[name].due(now):
                continue
            self._keys[name] = keys[name]
            if name == "devices":
                self._devices_looked = now
            # Computing is the cost (a list of every session): once per interval at most,
            # whether or not the result turns out to differ.
            self._throttles[name].mark(now)
            began = self.timer()
            data = self._compute(name)
            payload = protocol.encode(data)
            self._pace(name, self.timer() - began)
            if payload == self._sent.get(name) or not self._worth_sending(name, data, now):
                continue
            self._sent[name] = payload
            self._sent_at[name] = now
            await self._send(self.topic(f"updates/{name}"), payload)

    def _worth_sending(self, name: str, data: object, now: float) -> bool:
        """A list whose entries changed only in what moves all the time (a sensor heard every
        few seconds) is re-sent only every `refresh_interval`: a UI would redraw, and a
        subscriber to gw/# see traffic, for nothing anyone acts on."""
        stable = _without_volatile(data) if name == "devices" else data
        if stable != self._stable.get(name, _UNSET):
            self._stable[name] = stable
            return True
        return now - self._sent_at.get(name, float("-inf")) >= self.refresh_interval

    def _pace(self, name: str, spent: float) -> None:
        """The next build of `name` waits long enough that building it took at most
        `busy_share` of the time (2,000 sessions under load: about 3 s instead of 1 s; 200:
        unchanged; bench/bench_admin.py)."""
        self._throttles[name].interval = max(self.update_interval, spent / self.busy_share)

    def _compute(self, name: str) -> object:
        """The list's first page, in the shape of a response's data (what a request without
        arguments answers); the status carries the totals."""
        if name == "sessions":
            return self.data.sessions().data
        if name == "devices":
            return self.data.devices().data
        if name == "upstreams":
            return self.data.upstreams().data
        return self.data.pending().data

    # --- status ---------------------------------------------------------------------------------

    def _counts(self, snap: Mapping[str, object]) -> dict[str, object]:
        """What the status says apart from the rates and the uptime: a change in any of
        these is worth a status message."""
        upstreams, connected = self.data.upstream_counts()
        store = snap.get("store_bytes")
        if store is None:
            store = self.data.store_bytes()
        return {
            "version": self.version,
            "started_at": round(self.data.broker.started_at, 3),
            "clients": snap.get("clients_connected", 0),
            "sessions": snap.get("sessions", 0),
            "devices": self.data.device_count(),  # not the listing: 1,000 devices
            "pending": self.data.pending_count(),
            "store_bytes": store,
            "upstreams": upstreams,
            "upstreams_connected": connected,
        }

    def status(self, now: float, snap: Mapping[str, object] | None = None) -> dict[str, object]:
        """The status message; its rates are the averages since the previous call."""
        if snap is None:
            snap = self.data.broker.stats_snapshot()
        received = _number(snap.get("publish_received", snap.get("messages_received", 0)))
        sent = _number(snap.get("publish_sent", snap.get("messages_sent", 0)))
        rate_in = rate_out = 0.0
        if self._totals is not None and now > self._totals[0]:
            elapsed = now - self._totals[0]
            rate_in = max(0.0, received - self._totals[1]) / elapsed
            rate_out = max(0.0, sent - self._totals[2]) / elapsed
        self._totals = (now, received, sent)
        counts = self._counts(snap)
        started = self.data.broker.started_at
        return {
            **counts,
            "uptime": round(max(0.0, now - started)),
            "msgs_in_per_s": round(rate_in, 1),
            "msgs_out_per_s": round(rate_out, 1),
        }

    async def _send_status(self, now: float) -> None:
        if not self._status.due(now):
            return
        snap = self.data.broker.stats_snapshot()
        counts = self._counts(snap)
        refresh_due = now - self._status.last >= self.refresh_interval
        if counts == self._status_sent and not refresh_due:
            return
        self._status.mark(now)
        self._status_sent = counts
        status = self.status(now, snap)
        await self._send(self.topic("status"), protocol.encode(status), retain=True)


_UNSET: object = object()
_VOLATILE = ("last_seen", "rssi", "wake_observed")


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def _without_volatile(data: object) -> object:
    if not isinstance(data, list):
        return data
    # Whether a wake interval was observed at all is news; how it jitters is not.
    return [
        {k: (v is not None if k == "wake_observed" else v) for k, v in item.items()
         if k not in _VOLATILE or k == "wake_observed"}
        if isinstance(item, dict) else item
        for item in data
    ]  # fmt: skip
