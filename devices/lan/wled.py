"""WLED LED controllers over their JSON API (`/json/state`, `/json/info`).

Gateway keys map onto WLED's: `brightness` is WLED's `bri` (0-255), `preset` is `ps`,
`color` is the primary color of the main segment (`seg[].col[0]`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devices.lan.http import (
    CommandRejected,
    DeviceDetails,
    DeviceHTTPError,
    JsonHttpClient,
    LanDeviceError,
)


class WledError(LanDeviceError):
    """WLED answered `{"error": <code>}` (e.g. 3: its JSON buffer was locked by another request)."""

    def __init__(self, host: str, code: int, status: int) -> None:
        super().__init__(host, f"WLED error {code} (HTTP {status})")
        self.code = code
        self.status = status
        # Code 3 ("buffer locked") is the device being busy with a concurrent request.
        self.retryable = code == 3 or status >= 500


def _byte(label: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise CommandRejected(label, f"{key!r} must be an integer from 0 to 255, got {value!r}")
    return value


def _rgb(label: str, value: Any) -> list[int]:
    if not isinstance(value, list | tuple) or len(value) not in (3, 4):
        raise CommandRejected(label, f"'color' must be [r, g, b] or [r, g, b, w], got {value!r}")
    return [_byte(label, "color", c) for c in value]


def wled_body(command: Mapping[str, Any], label: str, main_segment: int = 0) -> dict[str, Any]:
    """The `POST /json/state` body for a gateway command, validated before anything is sent."""
    if not isinstance(command, Mapping) or not command:
        raise CommandRejected(label, "a command is a non-empty JSON object")
    body: dict[str, Any] = {}
    seg: dict[str, Any] = {}
    for key, value in command.items():
        if key == "on":
            if not isinstance(value, bool) and value != "t":
                raise CommandRejected(label, f"'on' must be true, false or \"t\", got {value!r}")
            body["on"] = value
        elif key == "brightness":
            body["bri"] = _byte(label, key, value)
        elif key == "preset":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 250:
                raise CommandRejected(label, f"'preset' must be 1 to 250, got {value!r}")
            body["ps"] = value
        elif key == "transition":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
                raise CommandRejected(label, f"'transition' must be 0 to 65535, got {value!r}")
            body["tt"] = value  # tenths of a second, for this call only
        elif key == "color":
            seg["col"] = [_rgb(label, value)]
        elif key == "effect":
            seg["fx"] = _byte(label, key, value)
        else:
            raise CommandRejected(label, f"unknown command key {key!r}")
    if seg:
        body["seg"] = [{"id": main_segment, **seg}]
    return body


def state_from_wled(st: Mapping[str, Any]) -> dict[str, Any]:
    """The gateway's state object for WLED's `/json/state`."""
    segments: list[dict[str, Any]] = []
    for i, s in enumerate(st.get("seg") or []):
        if not isinstance(s, Mapping):
            continue
        cols = [list(c) for c in s.get("col") or [] if isinstance(c, list)]
        segments.append(
            {
                k: v
                for k, v in {
                    "id": s.get("id", i),
                    "on": s.get("on"),
                    "brightness": s.get("bri"),
                    "colors": cols,
                    "effect": s.get("fx"),
                }.items()
                if v is not None
            }
        )
    state: dict[str, Any] = {"on": st.get("on"), "brightness": st.get("bri")}
    ps = st.get("ps")
    state["preset"] = ps if isinstance(ps, int) and ps > 0 else None
    main = st.get("mainseg", 0)
    primary = next((s for s in segments if s.get("id") == main), segments[0] if segments else None)
    if primary and primary.get("colors"):
        state["color"] = primary["colors"][0]
    state["segments"] = segments
    return state


class Wled(JsonHttpClient):
    """Driver for one WLED controller, found by mDNS (`_wled._tcp`) or declared by host."""

    kind = "wled"

    async def _get(self, path: str) -> dict[str, Any]:
        status, body = await self.request_json("GET", path)
        self._check(status, body, path)
        if not isinstance(body, Mapping):
            raise DeviceHTTPError(self.label, f"{path}: answer is not an object", status)
        return dict(body)

    def _check(self, status: int, body: Any, what: str) -> None:
        if isinstance(body, Mapping) and isinstance(body.get("error"), int):
            raise WledError(self.label, body["error"], status)
        if not 200 <= status < 300:
            raise DeviceHTTPError(self.label, f"{what}: HTTP {status}", status)

    async def get_info(self) -> DeviceDetails:
        info = await self._get("/json/info")
        mac = info.get("mac")
        # WLED's default mDNS host name is "wled-" + the last 6 hex digits of its MAC: the
        # same id whether the device was discovered or declared by host.
        ident = f"wled-{mac[-6:].lower()}" if isinstance(mac, str) and mac else f"wled-{self.host}"
        return DeviceDetails(
            id=ident,
            manufacturer=str(info.get("brand") or "WLED"),
            model=str(info.get("product") or info.get("arch") or "WLED"),
            name=info.get("name"),
            sw_version=info.get("ver"),
            mac=mac if isinstance(mac, str) else None,
            raw=info,
        )

    async def get_state(self) -> dict[str, Any]:
        return state_from_wled(await self._get("/json/state"))

    async def execute(self, command: Mapping[str, Any]) -> None:
        body = wled_body(command, self.label)
        status, answer = await self.request_json("POST", "/json/state", body=body)
        self._check(status, answer, "POST /json/state")
        # WLED confirms with {"success": true}; anything else means it did not apply the state.
        if not (isinstance(answer, Mapping) and (answer.get("success") is True or "on" in answer)):
            raise DeviceHTTPError(self.label, f"POST /json/state not confirmed: {answer!r}", status)
