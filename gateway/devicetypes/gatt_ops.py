"""What a command becomes on a GATT device: writes, each optionally confirmed.

A device family (devices/ble/eq3.py) or a profile declared in config.yaml (gatt_profile.py
here) turns one JSON command into :class:`GattStep`s without any I/O; devices/ble/sleepy.py
carries them out over a `GattSession` while the device is awake. Keeping the plan pure lets
the byte formats be tested against published vectors and lets a bad command be refused
(``failed``, reason ``invalid``) before a radio is touched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from gateway.commands.schema import CommandSchema
from gateway.devicetypes.errors import InvalidCommand


class CommandError(InvalidCommand):
    """The command cannot be expressed for this device (unknown key, value out of range).

    Sending it again cannot help, so it is reported ``failed`` at once, never retried.
    """


@dataclass(frozen=True, slots=True)
class Confirmation:
    """How the device shows it carried out a write.

    ``notify``: wait (up to ``timeout`` seconds) for a notification on this characteristic
    that ``accept`` returns True for (notifications it rejects are skipped);
    ``read``: read this characteristic after the write and ``accept`` its value.
    Exactly one of the two is set.
    """

    accept: Callable[[bytes], bool]
    notify: str | None = None
    read: str | None = None
    timeout: float = 5.0

    def __post_init__(self) -> None:
        if (self.notify is None) == (self.read is None):
            raise ValueError("a confirmation reads or waits for a notification: exactly one")


@dataclass(frozen=True, slots=True)
class GattStep:
    """Write ``data`` to characteristic ``char`` (with or without response), then confirm."""

    char: str
    data: bytes
    response: bool = True
    confirm: Confirmation | None = None


class GattProfile(Protocol):
    """A device family's command set."""

    @property
    def schema(self) -> CommandSchema:
        """Every command `plan` accepts (it refuses the rest with this schema's words)."""
        ...

    @property
    def notify_chars(self) -> tuple[str, ...]:
        """Characteristics to subscribe to right after connecting (before any write), so
        that a confirmation that comes quickly is not missed."""
        ...

    def plan(self, command: Mapping[str, object]) -> list[GattStep]:
        """The steps that carry out ``command``, in order; raises `CommandError`."""
        ...

    def state(self, notification: bytes) -> dict[str, object] | None:
        """Readings carried by a notification (e.g. a thermostat's status), if any."""
        ...

    def refresh(self) -> list[GattStep]:
        """Steps that make the device report its state (and set its clock, where it has
        one), for a device that is otherwise only heard when it carries out a command;
        empty when it cannot be asked."""
        ...
