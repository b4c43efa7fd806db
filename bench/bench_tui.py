"""Terminal UI responsiveness under load (figures only, no thresholds).

The real app (gateway/tui) runs headless (Textual run_test, 120x40) on a static source with
--devices devices and --sessions sessions, while --rate messages per second arrive as the
admin API would send them: each second one full sessions list, one full devices list, one
upstreams list (one entry changed in each), one pending list, one status, and events for the
rest. Meanwhile keys are pressed and the time from the key press until the screen has been
updated is measured per kind of key:

  tab           switch between Devices and Sessions (all rows of the view drawn anew)
  cursor        move the cursor one row down
  filter-open   "/" shows the filter line (the screen is laid out again)
  filter-type   type a character into the Sessions filter, or delete it (all rows filtered
                and drawn anew)
  filter-close  Escape hides the filter line
  dialog-open   "s" opens the send dialog; dialog-close: Escape closes it

The latency is measured from handing the key to Textual's driver until the first screen
update composed after the key took effect, rendered to terminal output.

Also printed: what one incoming message costs the event loop (model + redraw), and the
loop's CPU share while the load runs.

Run: python bench/bench_tui.py [--devices N] [--sessions N] [--rate R] [--seconds S] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from textual import events
from textual._compositor import CompositorUpdate

from gateway.tui.app import GatewayTUI
from gateway.tui.main import tune_gc
from gateway.tui.sample import NOW, StaticSource
from gateway.tui.screens import SendScreen


def _payloads(source: StaticSource, tick: int) -> tuple[bytes, bytes]:
    """The devices and sessions lists of second `tick`: one entry of each changed."""
    devices = source.data["devices"]
    sessions = source.data["sessions"]
    assert isinstance(devices, list) and isinstance(sessions, list)
    devices[tick % len(devices)]["last_seen"] = NOW + tick
    session = sessions[tick % len(sessions)]
    session["queued"] = int(session["queued"]) + 1
    return json.dumps(devices).encode(), json.dumps(sessions).encode()


def _upstreams_payload(source: StaticSource, tick: int) -> bytes:
    """The upstreams list of second `tick`: the connected one has forwarded more."""
    upstreams = source.data["upstreams"]
    assert isinstance(upstreams, list)
    if upstreams:
        upstreams[0]["forwarded"] = int(upstreams[0]["forwarded"]) + 12
    return json.dumps(upstreams).encode()


async def feed(app: GatewayTUI, source: StaticSource, rate: int, stop: asyncio.Event,
               costs: list[float]) -> int:  # fmt: skip
    """Deliver `rate` messages a second until `stop`; returns how many were delivered."""
    loop = asyncio.get_running_loop()
    sent = 0
    tick = 0
    start = loop.time()
    status = json.dumps(source.status_payload).encode()
    pending = json.dumps(source.data["pending"]).encode()
    if rate <= 0:
        await stop.wait()
        return 0
    while not stop.is_set():
        devices, sessions = _payloads(source, tick)
        upstreams = _upstreams_payload(source, tick)
        batch: list[tuple[str, bytes]] = [
            ("gw/bridge/updates/sessions", sessions),
            ("gw/bridge/updates/devices", devices),
            ("gw/bridge/updates/pending", pending),
            ("gw/bridge/updates/upstreams", upstreams),
            ("gw/bridge/status", status),
        ]
        for n in range(max(0, rate - len(batch))):
            event = {"type": "connect", "ts": NOW + tick, "client_id": f"client-{n:05d}",
                     "detail": "tcp:127.0.0.1:1883"}  # fmt: skip
            batch.append(("gw/bridge/events", json.dumps(event).encode()))
        for index, (topic, payload) in enumerate(batch):
            due = start + tick + index / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if stop.is_set():
                return sent
            began = time.perf_counter()
            source.on_message(topic, payload)
            costs.append(time.perf_counter() - began)
            sent += 1
        tick += 1
    return sent


class Probe:
    """Notes each screen update the app sends out. Headless, Textual builds the update but
    does not turn it into terminal output; the probe does that too (into nothing), so the
    figures include what a real terminal session costs."""

    def __init__(self, app: GatewayTUI) -> None:
        self.app = app
        self.draw_times: list[float] = []
        # While a key is measured: what its effect looks like, and when it was first shown.
        self.condition: Callable[[], bool] | None = None
        self.shown_at: float | None = None
        display = app._display
        draw = app._draw_table

        def counted_display(screen: Any, renderable: Any) -> None:
            display(screen, renderable)
            if renderable is None or app._batch_count:
                return
            if isinstance(renderable, CompositorUpdate):
                renderable.render_segments(app.console)
            # The update was composed from the app's state as it is now: if that state shows
            # the key's effect, this is the update that brings it to the screen.
            if self.condition is not None and self.shown_at is None and self.condition():
                self.shown_at = time.perf_counter()

        def timed_draw(view: Any, select: str | None = None) -> None:
            began = time.perf_counter()
            draw(view, select)
            self.draw_times.append(time.perf_counter() - began)

        app._display = counted_display  # type: ignore[method-assign]
        app._draw_table = timed_draw  # type: ignore[method-assign]

    async def key(self, key: str, char: str | None, done: Callable[[], bool]) -> float:
        """Seconds from a key press until the screen update that shows its effect."""
        app = self.app
        self.condition, self.shown_at = done, None
        began = time.perf_counter()
        assert app._driver is not None
        app._driver.send_message(events.Key(key, char))
        deadline = began + 10
        while self.shown_at is None:
            if time.perf_counter() > deadline:
                raise SystemExit(f"no screen update showed the effect of {key!r}")
            await asyncio.sleep(0.0005)
        self.condition = None
        return self.shown_at - began


async def measure(args: argparse.Namespace) -> None:
    source = StaticSource(args.devices, args.sessions, with_events=False)
    app = GatewayTUI(source, clock=lambda: NOW)
    results: dict[str, list[float]] = {}
    costs: list[float] = []
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.5)
        if len(app.model.sessions) != args.sessions:
            raise SystemExit("the sample did not load")
        probe = Probe(app)
        stop = asyncio.Event()
        feeder = asyncio.get_running_loop().create_task(feed(app, source, args.rate, stop, costs))

        def cursor_moved(view: str) -> Callable[[], bool]:
            row = app.table.cursor
            return lambda: app.view == view and app.table.cursor != row

        steps: list[tuple[str, str, str | None, Callable[[], Callable[[], bool]]]] = [
            ("tab", "2", "2", lambda: lambda: app._drawn_filter == "sessions:"),
            ("cursor", "down", None, lambda: cursor_moved("sessions")),
            ("filter-open", "slash", "/", lambda: lambda: app.query_one("#filter").has_focus),
            ("filter-type", "1", "1", lambda: lambda: app._drawn_filter == "sessions:1"),
            ("filter-type", "backspace", "\x08", lambda: lambda: app._drawn_filter == "sessions:"),
            ("filter-close", "escape", "\x1b", lambda: lambda: app.table.has_focus),
            ("tab", "1", "1", lambda: lambda: app._drawn_filter == "devices:"),
            ("cursor", "down", None, lambda: cursor_moved("devices")),
            ("dialog-open", "s", "s", lambda: lambda: isinstance(app.screen, SendScreen)),
            (
                "dialog-close",
                "escape",
                "\x1b",
                lambda: lambda: not isinstance(app.screen, SendScreen),
            ),
        ]
        cpu0, wall0 = time.process_time(), time.perf_counter()
        deadline = wall0 + args.seconds
        while time.perf_counter() < deadline:
            for name, key, char, condition in steps:
                results.setdefault(name, []).append(await probe.key(key, char, condition()))
                await asyncio.sleep(0.1)  # a person does not type continuously
        cpu = time.process_time() - cpu0
        wall = time.perf_counter() - wall0
        stop.set()
        delivered = await feeder
    print(
        f"TUI with {args.devices} devices, {args.sessions} sessions, "
        f"{args.rate} msgs/s of updates for {wall:.1f} s (120x40, headless + terminal output)"
    )
    print(f"  messages delivered: {delivered} ({delivered / wall:.0f}/s)")
    if costs:
        print(f"  one message, model only: {_figures(costs)}")
    if probe.draw_times:
        print(f"  one table redraw (tick or key): {_figures(probe.draw_times)}")
    print(f"  process CPU while loaded: {cpu / wall * 100:.0f}% of one core")
    print("  key press -> screen update:")
    print(f"  {'key':<14}{'n':>5}{'median ms':>12}{'p95 ms':>10}{'max ms':>10}")
    for name, values in results.items():
        if not values:
            continue
        values.sort()
        p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
        print(
            f"  {name:<14}{len(values):>5}{statistics.median(values) * 1000:>12.1f}"
            f"{p95 * 1000:>10.1f}{values[-1] * 1000:>10.1f}"
        )


def _figures(values: list[float]) -> str:
    values = sorted(values)
    return (
        f"median {statistics.median(values) * 1000:.2f} ms, "
        f"p95 {values[int(len(values) * 0.95)] * 1000:.2f} ms, max {values[-1] * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=100, help="update messages per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="a short run (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.devices, args.sessions, args.seconds = 50, 100, 1.5
    tune_gc()  # as `edge-gateway tui` does
    asyncio.run(measure(args))


if __name__ == "__main__":
    main()
