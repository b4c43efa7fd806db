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
from gateway.commands.schema import CommandSchema


class WledError(LanDeviceError):
    """WLED answered `{"error": <code>}` (e.g. 3: its JSON buffer was locked by another request)."""

    def __init__(self, host: str, code: int, status: int) -> None:
        super().__init__(host, f"WLED error {code} (HTTP {status})")
        self.code = code
        self.status = status
        # Code 3 ("buffer locked") is the device being busy with a concurrent request.
        self.retryable = code == 3 or status >= 500


_BYTE: dict[str, object] = {"type": "integer", "minimum": 0, "maximum": 255}
MAX_PRESET = 250  # WLED's highest preset id
MAX_NAMES = 255  # effects/presets offered to Home Assistant (an effect number is one byte)

# Every WLED command, in one place: checked by the broker before the command is queued and by
# `wled_body` before the request; Home Assistant discovery reads it.
COMMAND_SCHEMA = CommandSchema.from_data(
    {
        "type": "object",
        "properties": {
            "on": {"enum": [True, False, "t"]},  # "t" toggles
            "brightness": _BYTE,
            "preset": {"type": "integer", "minimum": 1, "maximum": MAX_PRESET},
            "transition": {"type": "integer", "minimum": 0, "maximum": 65535},  # 0.1 s
            "color": {"type": "array", "minItems": 3, "maxItems": 4, "items": _BYTE},
            "effect": _BYTE,
        },
        "additionalProperties": False,
        "minProperties": 1,
    }
)
# Gateway key -> WLED's key in the state object (color and effect go to the main segment).
_STATE_KEYS = {"on": "on", "brightness": "bri", "preset": "ps", "transition": "tt"}
_SEGMENT_KEYS = {"color": "col", "effect": "fx"}


def _json_int(value: Any) -> Any:
    # The schema's integers may be written 3.0 in JSON; WLED wants 3.
    return int(value) if isinstance(value, float) else value


def wled_body(command: Mapping[str, Any], label: str, main_segment: int = 0) -> dict[str, Any]:
    """The `POST /json/state` body for a gateway command, validated before anything is sent."""
    problem = COMMAND_SCHEMA.problem(dict(command) if isinstance(command, Mapping) else command)
    if problem is not None:
        raise CommandRejected(label, problem)
    body: dict[str, Any] = {}
    seg: dict[str, Any] = {}
    for key, value in command.items():
        if key == "color":
            seg["col"] = [[_json_int(c) for c in value]]
        elif key in _SEGMENT_KEYS:
            seg[_SEGMENT_KEYS[key]] = _json_int(value)
        else:
            body[_STATE_KEYS[key]] = _json_int(value)
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
    if primary and isinstance(primary.get("effect"), int):
        state["effect"] = primary["effect"]  # the `effect` command key's number
    state["segments"] = segments
    return state


class Wled(JsonHttpClient):
    """Driver for one WLED controller, found by mDNS (`_wled._tcp`) or declared by host."""

    kind = "wled"
    schema = COMMAND_SCHEMA

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
            effects=await self._effects(),
            presets=await self._presets(),
        )

    async def _effects(self) -> tuple[str, ...]:
        """The effect names, by effect number (`/json/effects`); () if it does not say."""
        try:
            status, body = await self.request_json("GET", "/json/effects")
        except LanDeviceError:
            return ()
        if not (200 <= status < 300 and isinstance(body, list)):
            return ()
        if not all(isinstance(name, str) for name in body[:MAX_NAMES]):
            return ()
        return tuple(body[:MAX_NAMES])

    async def _presets(self) -> tuple[tuple[int, str], ...]:
        """(id, name) of the saved presets (`/presets.json`, id 0 is not a preset)."""
        try:
            status, body = await self.request_json("GET", "/presets.json")
        except LanDeviceError:
            return ()
        if not (200 <= status < 300 and isinstance(body, Mapping)):
            return ()
        found: dict[int, str] = {}
        for key, preset in body.items():
            if not (isinstance(key, str) and key.isdigit() and isinstance(preset, Mapping)):
                continue
            number, name = int(key), preset.get("n")
            if 1 <= number <= MAX_PRESET and isinstance(name, str) and name:
                found[number] = name[:64]
        # Names are what Home Assistant chooses by: two presets with one name keep the first.
        by_name: dict[str, int] = {}
        for number in sorted(found):
            by_name.setdefault(found[number], number)
        return tuple(sorted((n, name) for name, n in by_name.items()))[:MAX_NAMES]

    async def get_state(self) -> dict[str, Any]:
        return state_from_wled(await self._get("/json/state"))

    async def execute(self, command: Mapping[str, Any]) -> None:
        body = wled_body(command, self.label)
        status, answer = await self.request_json("POST", "/json/state", body=body)
        self._check(status, answer, "POST /json/state")
        # WLED confirms with {"success": true}; anything else means it did not apply the state.
        if not (isinstance(answer, Mapping) and (answer.get("success") is True or "on" in answer)):
            raise DeviceHTTPError(self.label, f"POST /json/state not confirmed: {answer!r}", status)
