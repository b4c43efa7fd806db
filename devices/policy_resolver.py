"""Which session policy a device runs with: its base policy (config.yaml's, or the one it was
given when it first showed up) with the overrides an administrator set at run time on top.

The overrides live as retained ``<prefix>/bridge/policy/<id>`` messages (read back at start),
so this holds plain data and no I/O: the supervisor feeds it and reconnects the sessions whose
policy changed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping

from devices.model import DevicePolicy, PolicyError

log = logging.getLogger(__name__)


def parse_overrides(payload: bytes) -> dict[str, object] | None:
    """A retained policy message's overrides; None for an empty one (back to the base).
    Raises ValueError for anything that is not a JSON object."""
    if not payload:
        return None
    try:
        overrides = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("not JSON") from exc
    if not isinstance(overrides, dict):
        raise ValueError("not a JSON object")
    return overrides


class PolicyResolver:
    def __init__(self) -> None:
        self._base: dict[str, DevicePolicy] = {}  # per device, as it was first given
        self._overrides: dict[str, dict[str, object]] = {}  # set at run time

    def remember_base(self, device_id: str, policy: DevicePolicy) -> None:
        """The policy a device came with (the first one counts: later ones carry overrides)."""
        self._base.setdefault(device_id, policy)

    def base(self, device_id: str) -> DevicePolicy | None:
        return self._base.get(device_id)

    def update(self, device_id: str, overrides: Mapping[str, object] | None) -> bool:
        """Set a device's overrides (None or empty: none); False if nothing changed."""
        new = dict(overrides) if overrides else None
        if new == self._overrides.get(device_id):
            return False
        if new:
            self._overrides[device_id] = new
        else:
            self._overrides.pop(device_id, None)
        return True

    def effective(self, device_id: str, base: DevicePolicy) -> DevicePolicy:
        """``base`` with the device's overrides; ``base`` itself if they no longer fit it (a
        retained message from an older version, say): logged, not fatal."""
        overrides = self._overrides.get(device_id)
        if not overrides:
            return base
        try:
            return base.with_overrides(overrides)
        except (PolicyError, TypeError) as exc:
            log.warning("%s: stored policy %s not applied: %s", device_id, overrides, exc)
            return base

    def sources(self, device_id: str, kind: str, base: DevicePolicy | None) -> dict[str, str]:
        """Per policy key: "admin" (set at run time), "config" (``base`` differs from the
        kind's default) or "default" (the kind's built-in default)."""
        default = DevicePolicy.for_kind(kind)
        config = base if base is not None else default
        overrides = self._overrides.get(device_id) or {}
        return {
            f.name: "admin"
            if f.name in overrides
            else "config"
            if getattr(config, f.name) != getattr(default, f.name)
            else "default"
            for f in dataclasses.fields(DevicePolicy)
        }
