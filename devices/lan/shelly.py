"""Shelly Gen2+ devices over their local JSON-RPC 2.0 HTTP API (`POST /rpc`).

A device is a set of numbered components (`switch:0`, `cover:0`, `light:0`, ...).
`Shelly.GetStatus` returns all of them at once, so one request reads the whole state.
Commands use the gateway's flat keys (`on`, `brightness`, `position`, `cover`) when the device
has one component of the kind, or a component key (`{"switch:1": {"on": false}}`) otherwise.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import aiohttp

from devices.lan.http import (
    DEFAULT_TIMEOUT,
    CommandRejected,
    DeviceDetails,
    DeviceHTTPError,
    JsonHttpClient,
    LanDeviceError,
)
from gateway.commands.schema import CommandSchema

CONTROL_KINDS = ("switch", "cover", "light")
COVER_ACTIONS = {"open": "Cover.Open", "close": "Cover.Close", "stop": "Cover.Stop"}

_ON: dict[str, object] = {"type": "boolean"}
_TOGGLE: dict[str, object] = {"enum": [True]}  # Switch.Toggle / Light.Toggle, on its own
_PERCENT: dict[str, object] = {"type": "number", "minimum": 0, "maximum": 100}
_COVER_ACTION: dict[str, object] = {"enum": list(COVER_ACTIONS)}
_COVER_KEYS: dict[str, object] = {
    "type": "object",
    "properties": {"position": _PERCENT, "cover": _COVER_ACTION},
    "additionalProperties": False,
    "minProperties": 1,
    "exclusive": [["position", "cover"]],
}

# Every Shelly command, in one place: checked by the broker before the command is queued and
# by `plan` before the first call; Home Assistant discovery reads it. Which components a
# device has (a flat key needs exactly one of its kind) only the device can tell: `plan`.
COMMAND_SCHEMA = CommandSchema.from_data(
    {
        "type": "object",
        "properties": {
            "on": _ON,
            "toggle": _TOGGLE,
            "brightness": _PERCENT,
            "position": _PERCENT,
            "cover": _COVER_ACTION,
        },
        "patternProperties": {
            "^switch:[0-9]+$": {
                "type": "object",
                "properties": {"on": _ON, "toggle": _TOGGLE},
                "additionalProperties": False,
                "minProperties": 1,
                "exclusive": [["toggle", "on"]],
            },
            "^light:[0-9]+$": {
                "type": "object",
                "properties": {"on": _ON, "toggle": _TOGGLE, "brightness": _PERCENT},
                "additionalProperties": False,
                "minProperties": 1,
                "exclusive": [["toggle", "on"], ["toggle", "brightness"]],
            },
            # {"cover:0": "open"} is short for {"cover:0": {"cover": "open"}}.
            "^cover:[0-9]+$": {"anyOf": [_COVER_ACTION, _COVER_KEYS]},
        },
        "additionalProperties": False,
        "minProperties": 1,
        "exclusive": [["toggle", "on"], ["toggle", "brightness"], ["position", "cover"]],
    }
)

# Shelly's own error code for "deadline exceeded": the device was busy, not the request wrong.
_RETRYABLE_RPC_CODES = frozenset({-104})


class ShellyRpcError(LanDeviceError):
    """The device answered the RPC with an error object (`{"code": ..., "message": ...}`)."""

    def __init__(self, host: str, method: str, code: int, message: str) -> None:
        super().__init__(host, f"{method} failed: {code} {message}")
        self.method = method
        self.code = code
        self.message = message
        self.retryable = code in _RETRYABLE_RPC_CODES


Components = dict[str, list[int]]  # kind -> instance ids, e.g. {"switch": [0, 1]}


def components_of(status: Mapping[str, Any]) -> Components:
    found: Components = {}
    for key in status:
        kind, sep, num = key.partition(":")
        if sep and kind in CONTROL_KINDS and num.isdigit():
            found.setdefault(kind, []).append(int(num))
    for ids in found.values():
        ids.sort()
    return found


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _metering(st: Mapping[str, Any]) -> dict[str, Any]:
    energy = st.get("aenergy")
    temp = st.get("temperature")
    return {
        "power": st.get("apower"),
        "voltage": st.get("voltage"),
        "current": st.get("current"),
        "energy": energy.get("total") if isinstance(energy, Mapping) else None,
        "temperature": temp.get("tC") if isinstance(temp, Mapping) else None,
    }


def component_state(kind: str, st: Mapping[str, Any]) -> dict[str, Any]:
    """Gateway state keys for one component's status object."""
    if kind == "switch":
        values = {"on": st.get("output"), **_metering(st)}
    elif kind == "light":
        values = {"on": st.get("output"), "brightness": st.get("brightness"), **_metering(st)}
    elif kind == "cover":
        # current_pos is null until the cover is calibrated: then there is no position at all.
        values = {"cover": st.get("state"), "position": st.get("current_pos"), **_metering(st)}
    else:
        values = {}
    if st.get("errors"):
        values["errors"] = list(st["errors"])
    return _drop_none(values)


def state_from_status(status: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten `Shelly.GetStatus` into the gateway's state object.

    A device with a single controllable component (a Plus 1PM, a 2PM in cover mode) gets flat
    keys, so its state and its commands use the same words; several components stay nested
    under their component keys.
    """
    comps = components_of(status)
    keys = [f"{kind}:{i}" for kind in CONTROL_KINDS for i in comps.get(kind, [])]
    state: dict[str, Any] = {}
    if len(keys) == 1:
        state.update(component_state(keys[0].partition(":")[0], status[keys[0]]))
    else:
        for key in keys:
            state[key] = component_state(key.partition(":")[0], status[key])
    wifi = status.get("wifi")
    if isinstance(wifi, Mapping) and isinstance(wifi.get("rssi"), int | float):
        state["rssi"] = wifi["rssi"]
    return state


def plan(
    command: Mapping[str, Any], comps: Components, label: str
) -> list[tuple[str, dict[str, Any]]]:
    """Turn a gateway command into the RPC calls that carry it out, or raise CommandRejected.

    Everything is validated before the first call is sent, so a command with one bad key
    changes nothing on the device: first against `COMMAND_SCHEMA`, then against the
    components this device has.
    """
    problem = COMMAND_SCHEMA.problem(dict(command) if isinstance(command, Mapping) else command)
    if problem is not None:
        raise CommandRejected(label, problem)
    # (kind, id) -> {sub-key: value}, merged so {"on": true, "brightness": 30} is one Light.Set.
    targets: dict[tuple[str, int], dict[str, Any]] = {}

    def only(kinds: tuple[str, ...], key: str) -> tuple[str, int]:
        found = [(k, i) for k in kinds for i in comps.get(k, [])]
        if len(found) != 1:
            what = " or ".join(kinds)
            if not found:
                raise CommandRejected(label, f"{key!r}: the device has no {what}")
            names = ", ".join(f"{k}:{i}" for k, i in found)
            raise CommandRejected(label, f"{key!r} is ambiguous here; address one of {names}")
        return found[0]

    for key, value in command.items():
        kind, sep, num = key.partition(":")
        if sep:
            if isinstance(value, str):  # the schema allows this for covers only
                value = {"cover": value}
            targets.setdefault((kind, int(num)), {}).update(value)
        elif key in ("on", "toggle"):
            targets.setdefault(only(("switch", "light"), key), {})[key] = value
        elif key == "brightness":
            targets.setdefault(only(("light",), key), {})[key] = value
        else:  # position, cover
            targets.setdefault(only(("cover",), key), {})[key] = value

    calls: list[tuple[str, dict[str, Any]]] = []
    for (kind, cid), sub in targets.items():
        calls.append(_call(kind, cid, sub, label))
    return calls


_ALLOWED = {
    "switch": {"on", "toggle"},
    "light": {"on", "toggle", "brightness"},
    "cover": {"position", "cover"},
}


def _call(kind: str, cid: int, sub: dict[str, Any], label: str) -> tuple[str, dict[str, Any]]:
    """The RPC call for one component. A flat key and a component key can meet on the same
    component, so the schema's own checks are made again on what they add up to."""
    where = f"{kind}:{cid}"
    extra = sorted(set(sub) - _ALLOWED[kind])
    if extra:
        raise CommandRejected(label, f"{where} does not take {', '.join(map(repr, extra))}")
    if kind == "cover":
        if "position" in sub and "cover" in sub:
            raise CommandRejected(label, f"{where}: give 'position' or 'cover', not both")
        if "position" in sub:
            return "Cover.GoToPosition", {"id": cid, "pos": round(sub["position"])}
        return COVER_ACTIONS[sub["cover"]], {"id": cid}
    name = "Switch" if kind == "switch" else "Light"
    if "toggle" in sub:
        if len(sub) == 1:
            return f"{name}.Toggle", {"id": cid}
        raise CommandRejected(label, f"{where}: 'toggle' must be true and on its own")
    params: dict[str, Any] = {"id": cid}
    if "on" in sub:
        params["on"] = sub["on"]
    if "brightness" in sub:
        params["brightness"] = round(sub["brightness"])
    return f"{name}.Set", params


class ShellyGen2(JsonHttpClient):
    """Driver for one Shelly Gen2+ device, found by mDNS or declared by host."""

    kind = "shelly"
    schema = COMMAND_SCHEMA

    def __init__(
        self,
        host: str,
        port: int = 80,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        session: aiohttp.ClientSession | None = None,
        src: str = "edge-gateway",
    ) -> None:
        super().__init__(host, port, timeout=timeout, session=session)
        self.src = src
        self._ids = itertools.count(1)
        self._components: Components | None = None

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """One JSON-RPC request frame to `POST /rpc`; returns its `result`."""
        rid = next(self._ids)
        frame: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "src": self.src, "method": method}
        if params:
            frame["params"] = dict(params)
        status, body = await self.request_json("POST", "/rpc", body=frame)
        if isinstance(body, Mapping):
            err = body.get("error")
            if isinstance(err, Mapping):
                raise ShellyRpcError(
                    self.label, method, int(err.get("code", 0)), str(err.get("message", ""))
                )
            # The args-only endpoints answer a bare error object; accept it here too.
            if status >= 400 and "code" in body and "message" in body:
                raise ShellyRpcError(self.label, method, int(body["code"]), str(body["message"]))
        if not 200 <= status < 300:
            raise DeviceHTTPError(self.label, f"{method}: HTTP {status}", status)
        if not isinstance(body, Mapping) or body.get("id") != rid:
            raise DeviceHTTPError(
                self.label, f"{method}: not a response frame for id {rid}", status
            )
        return body.get("result")

    async def get_info(self) -> DeviceDetails:
        info = await self.call("Shelly.GetDeviceInfo")
        if not isinstance(info, Mapping) or not isinstance(info.get("id"), str):
            raise DeviceHTTPError(self.label, "Shelly.GetDeviceInfo: no device id in the answer")
        return DeviceDetails(
            id=info["id"],
            manufacturer="Shelly",
            model=str(info.get("model") or info.get("app") or "unknown"),
            name=info.get("name") or None,
            sw_version=info.get("ver"),
            mac=info.get("mac"),
            raw=dict(info),
        )

    async def get_status(self) -> dict[str, Any]:
        status = await self.call("Shelly.GetStatus")
        if not isinstance(status, Mapping):
            raise DeviceHTTPError(self.label, "Shelly.GetStatus: result is not an object")
        self._components = components_of(status)
        return dict(status)

    async def get_state(self) -> dict[str, Any]:
        return state_from_status(await self.get_status())

    async def execute(self, command: Mapping[str, Any]) -> None:
        """Carry out a command; return only once the device has accepted every call."""
        needs_map = (
            any(":" not in key for key in command) if isinstance(command, Mapping) else False
        )
        if needs_map and self._components is None:
            await self.get_status()
        for method, params in plan(command, self._components or {}, self.label):
            try:
                await self.call(method, params)
            except ShellyRpcError as exc:
                if exc.code == -105:
                    # "Bad id": the device's components changed (profile switch); re-learn them.
                    self._components = None
                raise
