"""The terminal UI: tables of devices, sessions, pending commands, events and upstream
connections, and actions.

The app draws a `Model` that a `Source` (normally an `AdminClient`) feeds; it never talks
to the broker otherwise. The visible view is redrawn on a short timer and only when it
changed, so a flood of updates costs at most one redraw per tick; a key press redraws at
once. One `Table` shows whichever view is selected and renders only the lines on screen.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import ClassVar, Protocol

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Input, Static, Tab, Tabs

from gateway.tui.client import LinkState, LinkStatus, RequestError
from gateway.tui.model import COLUMNS, VIEWS, Model, View, compact_json, printable
from gateway.tui.screens import (
    ConfirmScreen,
    DetailScreen,
    PolicyChange,
    PolicyScreen,
    SendRequest,
    SendScreen,
)
from gateway.tui.table import Table

log = logging.getLogger(__name__)

_TITLES: dict[View, str] = {
    "devices": "Devices",
    "sessions": "Sessions",
    "pending": "Pending",
    "events": "Events",
    "upstreams": "Upstreams",
}

# Which actions make sense on which tab (the footer shows only those).
_ACTION_VIEWS: dict[str, tuple[View, ...]] = {
    "send": ("devices", "pending"),
    "cancel": ("pending",),
    "flush": ("devices", "pending"),
    "kick": ("sessions",),
    "delete": ("sessions",),
    "policy": ("devices",),
}


class Source(Protocol):
    """Where the app's data comes from and where its requests go (see client.AdminClient)."""

    status: LinkStatus

    def start(
        self,
        on_message: Callable[[str, bytes], None],
        on_status: Callable[[LinkStatus], None],
    ) -> None: ...

    async def stop(self) -> None: ...

    async def request(
        self, action: str, body: dict[str, object] | None = None, timeout: float | None = None
    ) -> object: ...

    def retry_now(self) -> None: ...


class FilterInput(Input):
    """The filter line; Escape clears it and gives the focus back to the table."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "clear", "Clear filter")]

    def action_clear(self) -> None:
        self.value = ""
        self.add_class("hidden")
        self.app.query_one("#table", Table).focus()


class GatewayTUI(App[None]):
    """`edge-gateway tui`."""

    TITLE = "edge-gateway"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    #status {
        height: auto;
        padding: 0 1;
        background: $panel;
    }
    #banner {
        height: auto;
        padding: 0 1;
        background: $error;
        color: $text;
        text-style: bold;
    }
    #banner.hidden {
        display: none;
    }
    #filter {
        dock: bottom;
        margin-bottom: 1;
        height: 3;
    }
    #filter.hidden {
        display: none;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "send", "Send"),
        Binding("c", "cancel", "Cancel cmd"),
        Binding("f", "flush", "Flush"),
        Binding("k", "kick", "Kick"),
        Binding("d", "delete", "Delete"),
        Binding("p", "policy", "Policy"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("r", "refresh", "Refresh"),
        Binding("q", "quit", "Quit"),
        Binding("1", "show('devices')", "Devices", show=False),
        Binding("2", "show('sessions')", "Sessions", show=False),
        Binding("3", "show('pending')", "Pending", show=False),
        Binding("4", "show('events')", "Events", show=False),
        Binding("5", "show('upstreams')", "Upstreams", show=False),
    ]

    def __init__(
        self,
        source: Source,
        *,
        prefix: str = "gw",
        clock: Callable[[], float] = time.time,
        model: Model | None = None,
        tick: float = 0.2,
    ) -> None:
        super().__init__()
        # A key press shows its effect at once: no sliding underlines or smooth scrolls,
        # which also cost CPU on a small gateway box.
        self.animation_level = "none"
        self.source = source
        self.clock = clock
        self.model = model if model is not None else Model(prefix=prefix)
        self.tick = tick
        self.link = source.status
        self.filters: dict[View, str] = dict.fromkeys(VIEWS, "")
        self._drawn: dict[str, int] = {}  # view -> model version drawn
        self._drawn_filter = ""
        self._view: View = "devices"
        self._cursor: dict[View, str | None] = {}  # the selected row of each view
        self._mounted = False
        self.last_result = ""  # the outcome of the last action, also shown as a notification
        # When the link went down: the header's uptime stops there (the gateway's own clock
        # cannot be read while it is unreachable; it may have restarted meanwhile).
        self.down_since: float | None = None

    # --- layout -------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        yield Static(id="banner", classes="hidden")
        # One table for every view: switching views swaps its rows, which is much cheaper
        # than switching between five mounted tables.
        yield Tabs(
            *(Tab(f"{n} {_TITLES[view]}", id=view) for n, view in enumerate(VIEWS, 1)),
            active="devices",
        )
        yield Table([label for label, _ in COLUMNS["devices"]], id="table")
        yield FilterInput(
            placeholder="filter: words to look for (Enter: keep, Esc: clear)",
            id="filter",
            classes="hidden",
        )
        yield Footer()

    def on_mount(self) -> None:
        self._mounted = True
        self.query_one("#table", Table).focus()
        self._show_link(self.source.status)
        self.redraw(force=True)
        self.set_interval(self.tick, self.redraw)
        # Ages and "expires in" change with time alone.
        self.set_interval(5.0, lambda: self.redraw(force=True))
        self.source.start(self._feed, self._link_changed)

    async def on_unmount(self) -> None:
        await self.source.stop()

    # --- data in ------------------------------------------------------------------------------

    def _feed(self, topic: str, payload: bytes) -> None:
        try:
            self.model.handle_message(topic, payload)
        except Exception:  # the model is meant never to raise; the UI must survive if it does
            log.exception("model failed on %r", topic)

    def _link_changed(self, status: LinkStatus) -> None:
        was = self.link.state
        down = (LinkState.UNREACHABLE, LinkState.REFUSED)
        if status.state is LinkState.CONNECTING and was in down:
            # Another attempt: the banner keeps saying why we are retrying (no flicker).
            return
        if status.state is LinkState.CONNECTED:
            self.down_since = None
        elif was is LinkState.CONNECTED:
            self.down_since = self.clock()
        self.link = status
        self._show_link(status)
        self.refresh_bindings()  # actions are greyed out while disconnected
        if status.state is LinkState.CONNECTED and was is not LinkState.CONNECTED:
            self.run_worker(self.load_all(), group="load", exclusive=True)

    async def load_all(self) -> None:
        """Ask for the full lists (live updates only say what changes afterwards)."""
        for action in ("devices", "sessions", "pending"):
            try:
                data = await self.source.request(action)
            except RequestError as exc:
                self._report(f"could not load {action}: {exc}", error=True)
                return
            try:
                self.model.apply_response(action, data)
            except Exception:
                log.exception("model failed on the %s response", action)
        await self._load_upstreams()
        self.redraw()

    async def _load_upstreams(self) -> None:
        # Said in the Upstreams tab, not as an error at every connect: a gateway older than
        # this TUI has no such request, and everything else still works with it.
        try:
            data = await self.source.request("upstreams")
        except RequestError as exc:
            self.model.upstreams_unavailable(str(exc))
            return
        try:
            self.model.apply_response("upstreams", data)
        except Exception:
            log.exception("model failed on the upstreams response")

    # --- drawing ------------------------------------------------------------------------------

    @property
    def view(self) -> View:
        return self._view

    @property
    def table(self) -> Table:
        return self.query_one("#table", Table)

    def _show_link(self, status: LinkStatus) -> None:
        banner = self.query_one("#banner", Static)
        if status.state is LinkState.CONNECTED:
            banner.add_class("hidden")
        else:
            if status.state is LinkState.CONNECTING:
                text = f"{status.detail}…"
            elif status.state is LinkState.REFUSED:
                text = f"gateway refused the connection — retrying: {status.detail}"
            else:
                text = f"gateway unreachable — retrying ({status.detail})"
            banner.update(Text(printable(text)))
            banner.remove_class("hidden")
        self._draw_status()

    def _draw_status(self) -> None:
        state = self.link.state
        if state is LinkState.CONNECTED:
            link = "[connected]"
        elif state is LinkState.CONNECTING:
            link = "[connecting]"
        else:
            link = "[DISCONNECTED, data may be stale]"
        now = self.clock()
        if self.down_since is not None and state is not LinkState.CONNECTED:
            stamp = time.strftime("%H:%M:%S", self.model.localtime(self.down_since))
            link = f"[disconnected since {stamp}, data may be stale]"
            now = self.down_since
        line = f"{self.model.header(now)}  {link}"
        self.query_one("#status", Static).update(Text(printable(line)))

    def redraw(self, force: bool = False) -> None:
        """Bring the header and the visible table up to date (cheap when nothing changed)."""
        if not self.is_running or not self._mounted:
            return  # a timer firing while the app shuts down
        versions = self.model.versions
        if force or self._drawn.get("status") != versions["status"]:
            self._drawn["status"] = versions["status"]
            self._draw_status()
        total = sum(versions.values())
        if force or self._drawn.get("all") != total:
            self._drawn["all"] = total
            self._draw_counts()
        view = self.view
        key = f"{view}:{self.filters[view]}"
        if force or self._drawn.get(view) != versions[view] or self._drawn_filter != key:
            self._drawn[view] = versions[view]
            self._drawn_filter = key
            self._draw_table(view)

    def _draw_table(self, view: View, select: str | None = None) -> None:
        rows = self.model.rows(view, self.clock(), self.filters[view])
        self.table.set_placeholder(self.model.empty_text(view))
        self.table.set_rows(rows, select)
        if self.filters[view]:
            # Here, not in the tab's label: a label changing width re-lays out the screen.
            shown, total = self.model.count(view, rows), self.model.count(view)
            self.query_one("#filter", Input).border_title = f"{shown} of {total} match"

    def _draw_counts(self) -> None:
        tabs = self.query_one(Tabs)
        for number, view in enumerate(VIEWS, 1):
            label = f"{number} {_TITLES[view]} ({self.model.count_text(view)})"
            tab = tabs.query_one(f"#{view}", Tab)
            if tab.label_text != label:
                tab.label = label

    @on(Tabs.TabActivated)
    def _tab_changed(self, event: Tabs.TabActivated) -> None:
        view = event.tab.id
        if view not in VIEWS or view == self._view:
            return
        table = self.table
        self._cursor[self._view] = table.selected
        self._view = view
        table.set_columns([label for label, _ in COLUMNS[view]])
        filter_input = self.query_one("#filter", Input)
        with filter_input.prevent(Input.Changed):
            filter_input.value = self.filters[view]
        filter_input.set_class(not self.filters[view], "hidden")
        self._drawn[view] = self.model.versions[view]
        self._drawn_filter = f"{view}:{self.filters[view]}"
        self._draw_table(view, self._cursor.get(view))
        self.refresh_bindings()
        table.focus()

    @on(Table.Opened)
    def _open_row(self, event: Table.Opened) -> None:
        found = self.model.details(self.view, event.key)
        if found is not None:
            self.push_screen(DetailScreen(*found))

    # --- filter -------------------------------------------------------------------------------

    def action_filter(self) -> None:
        filter_input = self.query_one("#filter", Input)
        filter_input.remove_class("hidden")
        filter_input.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filters[self.view] = event.value
        self.redraw()

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.table.focus()

    # --- actions ------------------------------------------------------------------------------

    def action_show(self, view: str) -> None:
        self.query_one(Tabs).active = view

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        views = _ACTION_VIEWS.get(action)
        if views is None:
            return True
        if self.view not in views:
            return False
        # Shown but greyed out while disconnected: the keys are there, they just cannot work.
        return True if self.link.state is LinkState.CONNECTED else None

    def _selected(self, view: View | None = None) -> str | None:
        view = view or self.view
        if view != self.view:
            return None
        return self.table.selected

    def _selected_device(self) -> str | None:
        key = self._selected()
        return None if key is None else self.model.device_of_key(self.view, key)

    def _report(self, message: str, error: bool = False) -> None:
        self.last_result = message
        self.notify(printable(message), severity="error" if error else "information", markup=False)

    def _request(self, action: str, body: dict[str, object], done: str) -> None:
        async def run() -> None:
            try:
                data = await self.source.request(action, body)
            except RequestError as exc:
                self._report(str(exc), error=True)
                return
            self._report(f"{done}: {compact_json(data)}")

        self.run_worker(run(), group="actions")

    def _confirmed(
        self,
        question: str,
        detail: str,
        action: str,
        body: dict[str, object],
        done: str,
        yes: str = "Yes",
    ) -> None:
        def answer(ok: bool | None) -> None:
            if ok:
                self._request(action, body, done)
            else:
                self._report("cancelled: nothing was changed")

        self.push_screen(ConfirmScreen(question, detail, yes), answer)

    def action_send(self) -> None:
        device = self._selected_device()
        if device is None:
            self._report("select a device first", error=True)
            return

        def sent(request: SendRequest | None) -> None:
            if request is None:
                return
            body: dict[str, object] = {"device": request.device, "command": request.command}
            if request.ttl is not None:
                body["ttl"] = request.ttl
            self._request("send", body, f"sent to {request.device}")

        self.push_screen(SendScreen(device, schema=self.model.command_schema(device)), sent)

    def action_cancel(self) -> None:
        key = self._selected()
        entry = None if key is None else self.model.pending_for_key(key)
        if entry is None:
            self._report("select a pending command first", error=True)
            return
        self._confirmed(
            f"Cancel command {entry.id} of {entry.device}?",
            f"{compact_json(entry.command)} (it is reported as 'cancelled')",
            "cancel",
            {"device": entry.device, "id": entry.id},
            f"cancelled on {entry.device}",
            yes="Cancel it",
        )

    def action_flush(self) -> None:
        device = self._selected_device()
        if device is None:
            self._report("select a device first", error=True)
            return
        count = len(self.model.pending.get(device, ()))
        self._confirmed(
            f"Flush the queue of {device}?",
            f"{count} pending command(s) will be cancelled.",
            "flush",
            {"device": device},
            f"flushed {device}",
            yes="Flush",
        )

    def action_kick(self) -> None:
        client_id = self._selected("sessions")
        if client_id is None:
            self._report("select a session first", error=True)
            return
        self._confirmed(
            f"Kick {client_id}?",
            "Its connection is closed; a persistent session stays and the client may reconnect.",
            "kick",
            {"client_id": client_id},
            f"kicked {client_id}",
            yes="Kick",
        )

    def action_delete(self) -> None:
        client_id = self._selected("sessions")
        if client_id is None:
            self._report("select a session first", error=True)
            return
        session = self.model.sessions.get(client_id)
        queued = 0 if session is None else session.queued
        self._confirmed(
            f"Delete the session of {client_id}?",
            f"Its subscriptions and {queued} queued message(s) are lost; a connected "
            "client is disconnected.",
            "delete_session",
            {"client_id": client_id},
            f"deleted {client_id}",
            yes="Delete",
        )

    def action_policy(self) -> None:
        device = self._selected_device()
        if device is None or self.view != "devices":
            self._report("select a device first", error=True)
            return
        record = self.model.devices.get(device)
        current = record.policy_dict if record is not None else {}
        sources = dict(record.policy_from) if record is not None else {}

        def edited(change: PolicyChange | None) -> None:
            if change is None:
                return
            if change.policy is None:
                question, detail = f"Reset the policy of {device}?", "Back to the config's."
            else:
                question, detail = f"Change the policy of {device}?", compact_json(change.policy)
            self._confirmed(
                question,
                f"{detail} The device's session reconnects with it.",
                "set_policy",
                {"device": device, "policy": change.policy},
                f"policy of {device}",
                yes="Apply",
            )

        kind = record.kind if record is not None else ""
        self.push_screen(PolicyScreen(device, current, sources, kind), edited)

    def action_refresh(self) -> None:
        if self.link.state is LinkState.CONNECTED:
            self.run_worker(self.load_all(), group="load", exclusive=True)
        else:
            self.source.retry_now()
        self.redraw(force=True)
