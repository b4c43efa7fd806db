"""What the bridge knows about a device: identity, session policy, and how to command it.

The policy (DESIGN §3) and the command errors are shared with the gateway's config, admin API
and terminal UI, so they live in gateway/devicetypes/ and are re-exported here.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from gateway.commands.schema import CommandSchema
from gateway.devicetypes.errors import InvalidCommand as InvalidCommand
from gateway.devicetypes.policy import KIND_DEFAULTS as KIND_DEFAULTS
from gateway.devicetypes.policy import DevicePolicy as DevicePolicy
from gateway.devicetypes.policy import Overflow as Overflow
from gateway.devicetypes.policy import PolicyError as PolicyError
from gateway.devicetypes.policy import SessionKind as SessionKind

# One MQTT topic level: no separators or wildcards; no whitespace, so ids stay easy to type.
_BAD_ID = re.compile(r"[/+#\s\x00]")

# Consecutive wake-ups a device may miss before it counts as gone (availability "offline").
MISSED_WAKES_BEFORE_OFFLINE = 3


@dataclass(frozen=True, slots=True)
class Device:
    id: str  # the topic level in gw/<id>/...
    kind: str
    name: str = ""
    address: str | None = None  # BLE address, host name or IP
    policy: DevicePolicy = dataclasses.field(default_factory=DevicePolicy)
    # The commands it takes (its kind's, or its GATT profile's); None: it takes none. The
    # broker checks every command against it before queueing it (devices/session.py).
    schema: CommandSchema | None = None

    def __post_init__(self) -> None:
        if not self.id or _BAD_ID.search(self.id) or self.id.startswith("$"):
            raise ValueError(f"device id {self.id!r}: one topic level, no '/', '+', '#', spaces")

    @classmethod
    def of_kind(
        cls,
        id: str,
        kind: str,
        *,
        name: str = "",
        address: str | None = None,
        overrides: Mapping[str, object] | None = None,
        schema: CommandSchema | None = None,
    ) -> Device:
        policy = DevicePolicy.for_kind(kind)
        if overrides:
            policy = policy.with_overrides(overrides)
        return cls(id, kind, name or id, address, policy, schema)


class DeviceUnreachable(Exception):
    """The command did not reach the device (no connection could be made).

    It is not a delivery attempt: the command stays queued for the next wake-up, however
    often that happens, until its time-to-live runs out.
    """


class Adapter(Protocol):
    """Executes commands on the real device (GATT write, HTTP RPC, ...)."""

    async def execute(self, command: dict[str, object]) -> None:
        """Carry out one command; return only once the device confirmed it, else raise
        (`InvalidCommand` for a command the device can never carry out, `DeviceUnreachable`
        when it did not get through to the device at all)."""
        ...
