"""The demo's LAN device: a Shelly Gen2 plug with one switch, served on loopback.

Only what the gateway's Shelly driver (devices/lan/shelly.py) uses is answered: JSON-RPC 2.0
frames on ``POST /rpc`` for Shelly.GetDeviceInfo, Shelly.GetStatus, Switch.GetStatus,
Switch.Set and Switch.Toggle, for switch id 0. Error codes follow Shelly's documentation
(-105 for an unknown component id, 404 for an unknown method).
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from aiohttp import web

DEVICE_ID = "shellyplusplugs-demo00000001"
_MAC = "DE0000000001"


class _RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class DemoPlug:
    """A Shelly Plus Plug S: switch:0, drawing about `load_watts` when on."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        load_watts: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        self.host = host
        self.port = 0
        self.load_watts = load_watts
        self.rng = rng or random.Random()
        self.output = False
        self.energy_wh = 0.0
        self.calls: list[str] = []  # RPC methods received, in order
        self._since = self._started = time.monotonic()
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        """Serve on `host`, on a free port (the port is returned and kept in `port`)."""
        app = web.Application()
        app.router.add_post("/rpc", self._rpc)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, 0)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def _power(self) -> float:
        if not self.output:
            return 0.0
        return round(max(0.0, self.load_watts + self.rng.gauss(0.0, self.load_watts * 0.03)), 1)

    def _account(self) -> None:
        # Energy grows with the load while on (an average, which is all a demo needs).
        now = time.monotonic()
        if self.output:
            self.energy_wh += self.load_watts * (now - self._since) / 3600
        self._since = now

    def switch_status(self) -> dict[str, Any]:
        self._account()
        power = self._power()
        voltage = round(230.0 + self.rng.gauss(0.0, 0.8), 1)
        return {
            "id": 0,
            "source": "demo",
            "output": self.output,
            "apower": power,
            "voltage": voltage,
            "current": round(power / voltage, 3),
            "aenergy": {"total": round(self.energy_wh, 3)},
            "temperature": {"tC": 31.5, "tF": 88.7},
        }

    def _status(self) -> dict[str, Any]:
        return {
            "switch:0": self.switch_status(),
            "sys": {"mac": _MAC, "uptime": round(time.monotonic() - self._started)},
            "wifi": {"sta_ip": self.host, "status": "got ip", "rssi": -55},
        }

    def _switch_id(self, params: dict[str, Any]) -> None:
        if params.get("id") != 0:
            raise _RpcError(-105, f"Argument 'id', value {params.get('id')!r} not found!")

    def _set(self, on: bool) -> dict[str, Any]:
        self._account()
        was_on, self.output = self.output, on
        return {"was_on": was_on}

    def call(self, method: str, params: dict[str, Any]) -> Any:
        self.calls.append(method)
        if method == "Shelly.GetDeviceInfo":
            return {
                "id": DEVICE_ID,
                "mac": _MAC,
                "model": "SNPL-00112EU",
                "gen": 2,
                "fw_id": "demo",
                "ver": "1.0.0-demo",
                "app": "PlusPlugS",
                "name": "Demo plug",
            }
        if method == "Shelly.GetStatus":
            return self._status()
        if method == "Switch.GetStatus":
            self._switch_id(params)
            return self.switch_status()
        if method == "Switch.Set":
            self._switch_id(params)
            on = params.get("on")
            if not isinstance(on, bool):
                raise _RpcError(-103, "Argument 'on' must be a boolean")
            return self._set(on)
        if method == "Switch.Toggle":
            self._switch_id(params)
            return self._set(not self.output)
        raise _RpcError(404, f"No handler for {method}")

    async def _rpc(self, request: web.Request) -> web.Response:
        try:
            frame = json.loads(await request.read())
        except ValueError:
            frame = None
        if not isinstance(frame, dict) or not isinstance(frame.get("method"), str):
            return web.json_response({"code": -103, "message": "Bad request frame"}, status=400)
        params = frame.get("params") or {}
        answer: dict[str, Any] = {"id": frame.get("id"), "src": DEVICE_ID}
        if isinstance(frame.get("src"), str):
            answer["dst"] = frame["src"]
        try:
            if not isinstance(params, dict):
                raise _RpcError(-103, "params must be an object")
            answer["result"] = self.call(frame["method"], params)
        except _RpcError as exc:
            answer["error"] = {"code": exc.code, "message": exc.message}
        return web.json_response(answer)
