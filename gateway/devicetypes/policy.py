"""A device's session policy: how the broker session of a device behaves (DESIGN §3).

A sensor that only reports gets a ``clean`` session; a device that must receive commands, even
asleep, gets a ``persistent`` one whose broker queue is its command queue. Shared by the
config loader, the admin API, the terminal UI and the device layer, so it lives here, below
all of them, and needs only the standard library.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

SessionKind = Literal["clean", "persistent"]
Overflow = Literal["drop-oldest", "reject-new"]

_SESSION_KINDS: tuple[str, ...] = get_args(SessionKind)
_OVERFLOWS: tuple[str, ...] = get_args(Overflow)


class PolicyError(ValueError):
    """A policy value is invalid; the message names the key."""


@dataclass(frozen=True, slots=True)
class DevicePolicy:
    session: SessionKind = "clean"
    session_expiry: int = 7 * 24 * 3600  # seconds; persistent sessions only
    queue_depth: int = 20
    overflow: Overflow = "drop-oldest"
    command_ttl: int = 24 * 3600  # seconds; for publishers that set no message expiry
    max_attempts: int = 5
    coalesce: bool = True
    wake_interval: float | None = None  # seconds between expected wake-ups; None: always on

    def __post_init__(self) -> None:
        if self.session not in _SESSION_KINDS:
            raise PolicyError(f"session: must be one of {', '.join(_SESSION_KINDS)}")
        if self.overflow not in _OVERFLOWS:
            raise PolicyError(f"overflow: must be one of {', '.join(_OVERFLOWS)}")
        for key in ("session_expiry", "queue_depth", "command_ttl", "max_attempts"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PolicyError(f"{key}: must be a whole number >= 1, got {value!r}")
        if self.session_expiry > 0xFFFFFFFF:
            raise PolicyError("session_expiry: at most 4294967295 seconds (MQTT 5 limit)")
        if not isinstance(self.coalesce, bool):
            raise PolicyError(f"coalesce: must be true or false, got {self.coalesce!r}")
        wake = self.wake_interval
        if wake is not None and (
            isinstance(wake, bool) or not isinstance(wake, int | float) or wake <= 0
        ):
            raise PolicyError(f"wake_interval: must be a number of seconds > 0, got {wake!r}")

    @property
    def persistent(self) -> bool:
        return self.session == "persistent"

    def with_overrides(self, overrides: Mapping[str, object]) -> DevicePolicy:
        """This policy with some keys replaced (from config); raises PolicyError."""
        known = {f.name for f in dataclasses.fields(self)}
        for key in overrides:
            if key not in known:
                raise PolicyError(f"{key}: unknown policy key (known: {', '.join(sorted(known))})")
        try:
            return dataclasses.replace(self, **overrides)  # type: ignore[arg-type]
        except TypeError as exc:  # pragma: no cover - unknown keys are caught above
            raise PolicyError(str(exc)) from exc

    @staticmethod
    def for_kind(kind: str) -> DevicePolicy:
        """The default policy of a device kind (unknown kinds: a clean, reporting device)."""
        return KIND_DEFAULTS.get(kind, DevicePolicy())


KIND_DEFAULTS: dict[str, DevicePolicy] = {
    # Broadcast-only sensors: nothing to command, a missed reading is replaced by the next.
    # Heard every few seconds to minutes; silent for 3 x 5 minutes (Home Assistant's own
    # limit for BLE devices is 15 minutes) means gone: availability "offline".
    "bthome": DevicePolicy(session="clean", wake_interval=300),
    "sensor": DevicePolicy(session="clean"),
    # Battery devices that sleep between short wake windows: commands wait, the newest
    # setpoint wins, and a few missed wake-ups mark them offline.
    "thermostat": DevicePolicy(
        session="persistent", coalesce=True, command_ttl=12 * 3600, wake_interval=600
    ),
    # eQ-3 radiator thermostats (devices/ble/eq3.py) are thermostats of this kind.
    "eq3": DevicePolicy(
        session="persistent", coalesce=True, command_ttl=12 * 3600, wake_interval=600
    ),
    "sleepy": DevicePolicy(session="persistent", coalesce=True, wake_interval=600),
    "switchbot": DevicePolicy(session="persistent", coalesce=False, command_ttl=3600),
    "gatt": DevicePolicy(session="persistent", coalesce=False),
    # Mains-powered LAN devices: usually reachable; commands wait briefly while they are not.
    "shelly": DevicePolicy(session="persistent", coalesce=True, command_ttl=600),
    "wled": DevicePolicy(session="persistent", coalesce=True, command_ttl=600),
}
