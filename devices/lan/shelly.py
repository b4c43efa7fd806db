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

CONTROL_KINDS = ("switch", "cover", "light")
COVER_ACTIONS = {"open": "Cover.Open", "close": "Cover.Close", "stop": "Cover.Stop"}

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


def _percent(label: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        raise CommandRejected(label, f"{key!r} must be a number from 0 to 100, got {value!r}")
    return round(value)


def _flag(label: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise CommandRejected(label, f"{key!r} must be true or false, got {value!r}")
    return value


def plan(
    command: Mapping[str, Any], comps: Components, label: str
) -> list[tuple[str, dict[str, Any]]]:
    """Turn a gateway command into the RPC calls that carry it out, or raise CommandRejected.

    Everything is validated before the first call is sent, so a command with one bad key
    changes nothing on the device.
    """
    if not isinstance(command, Mapping) or not command:
        raise CommandRejected(label, "a command is a non-empty JSON object")
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
            if kind not in CONTROL_KINDS or not num.isdigit():
                raise CommandRejected(label, f"unknown component {key!r}")
            if kind == "cover" and isinstance(value, str):
                value = {"cover": value}
            if not isinstance(value, Mapping) or not value:
                raise CommandRejected(label, f'{key!r} takes an object, e.g. {{"on": true}}')
            targets.setdefault((kind, int(num)), {}).update(value)
        elif key in ("on", "toggle"):
            targets.setdefault(only(("switch", "light"), key), {})[key] = value
        elif key == "brightness":
            targets.setdefault(only(("light",), key), {})[key] = value
        elif key in ("position", "cover"):
            targets.setdefault(only(("cover",), key), {})[key] = value
        else:
            raise CommandRejected(label, f"unknown command key {key!r}")

    calls: list[tuple[str, dict[str, Any]]] = []
    for (kind, cid), sub in targets.items():
        where = f"{kind}:{cid}"
        allowed = {
            "switch": {"on", "toggle"},
            "light": {"on", "toggle", "brightness"},
            "cover": {"position", "cover"},
        }[kind]
        extra = sorted(set(sub) - allowed)
        if extra:
            raise CommandRejected(label, f"{where} does not take {', '.join(map(repr, extra))}")
        if kind == "cover":
            if "position" in sub and "cover" in sub:
                raise CommandRejected(label, f"{where}: give 'position' or 'cover', not both")
            if "position" in sub:
                pos = _percent(label, "position", sub["position"])
                calls.append(("Cover.GoToPosition", {"id": cid, "pos": pos}))
            else:
                action = sub["cover"]
                if action not in COVER_ACTIONS:
                    raise CommandRejected(
                        label, f"'cover' must be one of open, close, stop, got {action!r}"
                    )
                calls.append((COVER_ACTIONS[action], {"id": cid}))
            continue
        name = "Switch" if kind == "switch" else "Light"
        if sub.get("toggle") is not None:
            if _flag(label, "toggle", sub["toggle"]) and len(sub) == 1:
                calls.append((f"{name}.Toggle", {"id": cid}))
                continue
            raise CommandRejected(label, f"{where}: 'toggle' must be true and on its own")
        params: dict[str, Any] = {"id": cid}
        if "on" in sub:
            params["on"] = _flag(label, "on", sub["on"])
        if "brightness" in sub:
            params["brightness"] = _percent(label, "brightness", sub["brightness"])
        calls.append((f"{name}.Set", params))
    return calls


class ShellyGen2(JsonHttpClient):
    """Driver for one Shelly Gen2+ device, found by mDNS or declared by host."""

    kind = "shelly"

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
