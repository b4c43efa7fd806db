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
from gateway.devicetypes.policy import DevicePolicy, PolicyError
from gateway.tui.examples import example as command_example
from gateway.tui.examples import key_lines
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
        raise ValueError("type a JSON object (see the example)")
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
        self.schema = schema
        # The device's own keys, never a guess that fits another kind of device.
        self.example = example or (command_example(schema) if schema is not None else "")

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(shown(f"Send a command to {self.device}", style="bold"))
            if self.schema is not None and self.schema.keys:
                lines = ["Its command keys:", *key_lines(self.schema)]
                # Each line made printable on its own: the newlines between them are ours.
                yield Label(Text("\n".join(printable(line) for line in lines)), id="keys")
            elif self.schema is None:
                yield Label("Its command keys are not known here: the gateway checks.", id="keys")
            hint = f" e.g. {self.example}" if self.example else ""
            yield Label(shown(f"Command (JSON object):{hint}"))
            yield Input(placeholder=self.example or "a JSON object", id="command")
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


# (key, label, what it takes), in the order the form shows them.
POLICY_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("session", "Session", "clean | persistent"),
    ("session_expiry", "Session expiry", "seconds"),
    ("queue_depth", "Queue depth", "commands"),
    ("overflow", "Overflow", "drop-oldest | reject-new"),
    ("command_ttl", "Command TTL", "seconds"),
    ("max_attempts", "Attempts", "per command"),
    ("coalesce", "Coalesce", "true | false"),
    ("wake_interval", "Wake interval", "seconds | none"),
)
_WHOLE = ("session_expiry", "queue_depth", "command_ttl", "max_attempts")


def policy_text(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value == int(value):
        return str(int(value))
    return str(value)


def parse_policy_value(key: str, text: str) -> object:
    """One form field as the policy key's type (ValueError names the key)."""
    text = text.strip()
    if key in _WHOLE:
        if not text.isdigit():
            raise ValueError(f"{key}: a whole number, got {text!r}")
        return int(text)
    if key == "coalesce":
        if text.lower() not in ("true", "false"):
            raise ValueError(f"coalesce: true or false, got {text!r}")
        return text.lower() == "true"
    if key == "wake_interval":
        if text.lower() in ("none", "null", "always on"):
            return None
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"wake_interval: seconds, or none (always on), got {text!r}") from None
        return int(number) if number == int(number) else number
    return text


def policy_overrides(
    fields: dict[str, str], current: dict[str, object], sources: dict[str, str]
) -> dict[str, object]:
    """The overrides the form asks for: a field set here before and not emptied, or changed
    from the value it inherits; an empty field inherits. Checked as a whole policy
    (ValueError names the key)."""
    overrides: dict[str, object] = {}
    for key, text in fields.items():
        if not text.strip():
            continue
        value = parse_policy_value(key, text)
        if sources.get(key) == "admin" or key not in current or value != current[key]:
            overrides[key] = value
    try:
        DevicePolicy().with_overrides(overrides)
    except PolicyError as exc:
        raise ValueError(str(exc)) from None
    return overrides


_SOURCE_TEXT = {"default": "{kind} default", "config": "config.yaml", "admin": "set here"}


class PolicyScreen(ModalScreen[PolicyChange | None]):
    """A device's policy as a form, one field per key, each saying where its value comes
    from (the kind's default, config.yaml, or set here). Changing a field overrides it;
    emptying one inherits it again; "Reset" drops every override."""

    DEFAULT_CSS = (
        _DIALOG_CSS.format(name="PolicyScreen")
        + """
    PolicyScreen .row {
        height: 1;
        align: left middle;
    }
    PolicyScreen .row Label {
        width: auto;
    }
    PolicyScreen .row .name {
        width: 15;
    }
    PolicyScreen .row Input {
        width: 14;
        height: 1;
        border: none;
        padding: 0 1;
    }
    PolicyScreen .row .from {
        width: 1fr;
        color: $text-muted;
        padding-left: 1;
    }
    """
    )
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self,
        device: str,
        policy: dict[str, object],
        sources: dict[str, str] | None = None,
        kind: str = "",
    ) -> None:
        super().__init__()
        self.device = device
        self.policy = policy
        self.sources = sources or {}
        self.kind = kind or "kind"

    def _from(self, key: str, what: str) -> str:
        source = self.sources.get(key)
        text = _SOURCE_TEXT.get(source or "", "").format(kind=self.kind)
        return f"{text}; {what}" if text else what

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(shown(f"Policy of {self.device}", style="bold"))
            yield Label("Change a value to override it; empty: inherit. Enter applies.")
            for key, label, what in POLICY_FIELDS:
                value = policy_text(self.policy[key]) if key in self.policy else ""
                with Horizontal(classes="row"):
                    yield Label(label, classes="name")
                    yield Input(value=value, id=f"p-{key}", placeholder="inherit")
                    yield Label(shown(self._from(key, what)), classes="from")
            yield Label("", id="error", classes="error")
            with Horizontal():
                yield Button("Apply", id="apply", variant="primary")
                yield Button("Reset to config", id="reset")
                yield Button("Cancel (Esc)", id="cancel")

    def fields(self) -> dict[str, str]:
        return {key: self.query_one(f"#p-{key}", Input).value for key, _, _ in POLICY_FIELDS}

    @on(Input.Submitted)
    @on(Button.Pressed, "#apply")
    def _submit(self) -> None:
        try:
            overrides = policy_overrides(self.fields(), self.policy, self.sources)
        except ValueError as exc:
            self.query_one("#error", Label).update(shown(f"Error: {exc}"))
            return
        self.dismiss(PolicyChange(self.device, overrides or None))

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
