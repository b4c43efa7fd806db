"""The TUI's dialogs: confirmation, sending a command, changing a device's policy."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label

from gateway.commands.schema import CommandSchema
from gateway.tui.model import printable

_DIALOG_CSS = """
{name} {{
    align: center middle;
}}
{name} > Vertical {{
    width: 70;
    max-width: 100%;
    height: auto;
    border: heavy $accent;
    padding: 0 1;
    background: $surface;
}}
{name} Label {{
    width: 100%;
}}
{name} .error {{
    color: $error;
}}
{name} Horizontal {{
    height: auto;
    align: right middle;
}}
{name} Button {{
    margin: 0 0 0 1;
}}
"""


def shown(text: str, style: str = "") -> Text:
    """Text from the network (client ids, device names, errors), safe to put on screen."""
    return Text(printable(text), style=style)


class ConfirmScreen(ModalScreen[bool]):
    """Asks before a destructive action: y/Enter on "Yes" confirms, n/Escape declines."""

    DEFAULT_CSS = _DIALOG_CSS.format(name="ConfirmScreen")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, detail: str = "", yes: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.detail = detail
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(shown(self.question, style="bold"), id="question")
            if self.detail:
                yield Label(shown(self.detail), id="detail")
            with Horizontal():
                yield Button(f"{self.yes} (y)", id="yes", variant="error")
                yield Button("No (n)", id="no", variant="primary")

    def on_mount(self) -> None:
        # The safe answer has the focus: a stray Enter must not destroy anything.
        self.query_one("#no", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


@dataclass(frozen=True, slots=True)
class SendRequest:
    device: str
    command: dict[str, object]
    ttl: int | None


def parse_command(text: str, what: str = "the command") -> dict[str, object]:
    """A JSON object typed by the user, not empty (ValueError says what is wrong)."""
    if not text.strip():
        raise ValueError('type a JSON object, e.g. {"on": true}')
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict) or not value:
        raise ValueError(f"{what} must be a non-empty JSON object")
    return value


def parse_ttl(text: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    if not text.isdigit() or int(text) == 0:
        raise ValueError("ttl: a whole number of seconds > 0, or empty")
    return int(text)


class SendScreen(ModalScreen[SendRequest | None]):
    """Asks for a JSON command (and an optional time to live) for one device, checked
    against the device's command schema when its listing gave one: the gateway would refuse
    the command anyway, but here it can still be corrected."""

    DEFAULT_CSS = _DIALOG_CSS.format(name="SendScreen")
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, device: str, example: str = "", schema: CommandSchema | None = None) -> None:
        super().__init__()
        self.device = device
        self.example = example
        self.schema = schema

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(shown(f"Send a command to {self.device}", style="bold"))
            if self.schema is not None and self.schema.keys:
                yield Label(shown(f"Keys: {', '.join(self.schema.keys)}"), id="keys")
            yield Label("Command (JSON object):")
            yield Input(placeholder=self.example or '{"on": true}', id="command")
            yield Label("Time to live in seconds (empty: the device's default):")
            yield Input(placeholder="e.g. 600", id="ttl")
            yield Label("", id="error", classes="error")
            with Horizontal():
                yield Button("Send", id="send", variant="primary")
                yield Button("Cancel (Esc)", id="cancel")

    @on(Input.Submitted)
    @on(Button.Pressed, "#send")
    def _submit(self) -> None:
        try:
            command = parse_command(self.query_one("#command", Input).value)
            problem = None if self.schema is None else self.schema.problem(command)
            if problem is not None:
                raise ValueError(problem)
            ttl = parse_ttl(self.query_one("#ttl", Input).value)
        except ValueError as exc:
            self.query_one("#error", Label).update(shown(f"Error: {exc}"))
            return
        self.dismiss(SendRequest(self.device, command, ttl))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


@dataclass(frozen=True, slots=True)
class PolicyChange:
    device: str
    policy: dict[str, object] | None  # None: back to the configuration's policy


class PolicyScreen(ModalScreen[PolicyChange | None]):
    """Edits a device's policy as JSON; "Reset" returns it to the configuration's."""

    DEFAULT_CSS = _DIALOG_CSS.format(name="PolicyScreen")
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, device: str, policy: dict[str, object]) -> None:
        super().__init__()
        self.device = device
        self.policy = policy

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(shown(f"Policy of {self.device}", style="bold"))
            yield Label(
                "Keys to change (JSON object), e.g. "
                '{"command_ttl": 600, "queue_depth": 5}; Enter applies.'
            )
            current = json.dumps(self.policy, separators=(", ", ": "), sort_keys=True)
            yield Input(value=current, id="policy")
            yield Label("", id="error", classes="error")
            with Horizontal():
                yield Button("Apply", id="apply", variant="primary")
                yield Button("Reset to config", id="reset")
                yield Button("Cancel (Esc)", id="cancel")

    @on(Input.Submitted)
    @on(Button.Pressed, "#apply")
    def _submit(self) -> None:
        try:
            policy = parse_command(self.query_one("#policy", Input).value, "the policy")
        except ValueError as exc:
            self.query_one("#error", Label).update(shown(f"Error: {exc}"))
            return
        self.dismiss(PolicyChange(self.device, policy))

    @on(Button.Pressed, "#reset")
    def _reset(self) -> None:
        self.dismiss(PolicyChange(self.device, None))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class DetailScreen(ModalScreen[None]):
    """Every field of one row; any of Escape, Enter or q closes it."""

    DEFAULT_CSS = (
        _DIALOG_CSS.format(name="DetailScreen")
        + """
    DetailScreen > Vertical {
        width: 90;
        max-height: 100%;
    }
    """
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,enter,q", "close", "Close"),
    ]

    def __init__(self, title: str, fields: list[tuple[str, str]]) -> None:
        super().__init__()
        self.heading = title
        self.fields = fields

    def compose(self) -> ComposeResult:
        width = max((len(name) for name, _ in self.fields), default=0)
        text = Text()
        text.append(printable(self.heading) + "\n", style="bold")
        for name, value in self.fields:
            text.append(f"{printable(name).ljust(width)}  ", style="bold")
            text.append(printable(value) + "\n")
        with Vertical():
            yield Label(text, id="fields")
            yield Label("Escape, Enter or q: close")

    def action_close(self) -> None:
        self.dismiss(None)
