"""Simulated LAN devices for tests: small aiohttp servers on 127.0.0.1 that speak the real
device APIs (Shelly Gen2 JSON-RPC over `/rpc`, WLED `/json/...`) and keep state, plus
announcing them with real zeroconf on loopback only.

Written from the public API documentation; behaviour the docs leave open (exact HTTP status
of an error, motion timing) is kept simple and is not something the drivers rely on.
"""

from __future__ import annotations

import asyncio
import copy
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Self

from aiohttp import web
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

LOOPBACK = "127.0.0.1"


class RpcFail(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _FakeHttpDevice:
    """Start/stop an aiohttp app on loopback; can go away and come back on the same port."""

    def __init__(self) -> None:
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.requests = 0

    def build_app(self) -> web.Application:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> int:
        runner = web.AppRunner(self.build_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, LOOPBACK, self.port, reuse_address=True)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# ----------------------------------------------------------------------------- Shelly Gen2


def _switch(load_watts: float) -> dict[str, Any]:
    return {
        "id": 0,
        "source": "init",
        "output": False,
        "apower": 0.0,
        "voltage": 230.4,
        "current": 0.0,
        "freq": 50.0,
        "aenergy": {"total": 1234.567, "by_minute": [0.0, 0.0, 0.0], "minute_ts": 1700000000},
        "temperature": {"tC": 41.3, "tF": 106.3},
        "_load": load_watts,
    }


def _cover() -> dict[str, Any]:
    return {
        "id": 0,
        "source": "init",
        "state": "stopped",
        "apower": 0.0,
        "voltage": 231.0,
        "current": 0.0,
        "pf": 0.0,
        "freq": 50.0,
        "aenergy": {"total": 56.8, "by_minute": [0.0, 0.0, 0.0], "minute_ts": 1700000000},
        "current_pos": 50,
        "target_pos": None,
        "move_timeout": None,
        "move_started_at": None,
        "pos_control": True,
        "temperature": {"tC": 38.0, "tF": 100.4},
    }


def _light() -> dict[str, Any]:
    return {
        "id": 0,
        "source": "init",
        "output": False,
        "brightness": 60,
        "temperature": {"tC": 35.2, "tF": 95.4},
    }


class FakeShelly(_FakeHttpDevice):
    """A Shelly Gen2 device: `POST /rpc` (full frames) and `GET|POST /rpc/<Method>`."""

    def __init__(
        self,
        *,
        model: str,
        app: str,
        mac: str,
        components: dict[str, dict[str, Any]],
        profile: str | None = None,
        move_time: float = 0.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.app = app
        self.mac = mac.upper()
        self.device_id = f"shelly{app.lower()}-{mac.lower()}"
        self.profile = profile
        self.components = components
        self.move_time = move_time
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._moves: dict[int, asyncio.TimerHandle] = {}

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/rpc", self._frame)
        app.router.add_route("GET", "/rpc/{method}", self._args)
        app.router.add_route("POST", "/rpc/{method}", self._args)
        return app

    # -- HTTP channels

    async def _frame(self, request: web.Request) -> web.Response:
        self.requests += 1
        try:
            frame = json.loads(await request.text())
        except ValueError:
            return web.json_response({"code": -32700, "message": "Parse error"}, status=400)
        rid = frame.get("id")
        reply: dict[str, Any] = {"id": rid, "src": self.device_id}
        if "src" in frame:
            reply["dst"] = frame["src"]
        try:
            reply["result"] = self.dispatch(frame.get("method", ""), frame.get("params") or {})
        except RpcFail as fail:
            reply["error"] = {"code": fail.code, "message": fail.message}
        return web.json_response(reply)

    async def _args(self, request: web.Request) -> web.Response:
        self.requests += 1
        if request.method == "POST":
            text = await request.text()
            params = json.loads(text) if text else {}
        else:
            params = {k: _query_value(v) for k, v in request.query.items()}
        try:
            result = self.dispatch(request.match_info["method"], params)
        except RpcFail as fail:
            status = 404 if fail.code == 404 else 400
            return web.json_response({"code": fail.code, "message": fail.message}, status=status)
        return web.json_response(result)

    # -- methods

    def dispatch(self, method: str, params: dict[str, Any]) -> Any:
        self.calls.append((method, dict(params)))
        ns, _, verb = method.partition(".")
        ns = ns.lower()
        if ns == "shelly" and verb == "GetDeviceInfo":
            info: dict[str, Any] = {
                "name": None,
                "id": self.device_id,
                "mac": self.mac,
                "slot": 0,
                "model": self.model,
                "gen": 2,
                "fw_id": "20231107-164738/1.0.8-g8c7bb8d",
                "ver": "1.0.8",
                "app": self.app,
                "auth_en": False,
                "auth_domain": None,
            }
            if self.profile:
                info["profile"] = self.profile
            return info
        if ns == "shelly" and verb == "GetStatus":
            status = {key: self._public(key) for key in self.components}
            status["sys"] = {"mac": self.mac, "restart_required": False, "uptime": 1234}
            status["wifi"] = {"sta_ip": LOOPBACK, "status": "got ip", "ssid": "home", "rssi": -58}
            return status
        if ns in ("switch", "cover", "light"):
            handler = getattr(self, f"_{ns}_{verb.lower()}", None)
            if handler is not None:
                key = self._component(ns, params)
                return handler(self.components[key], params)
        raise RpcFail(404, f"No handler for {method}")

    def _component(self, ns: str, params: dict[str, Any]) -> str:
        if "id" not in params:
            raise RpcFail(-103, "Missing required 'id'")
        key = f"{ns}:{params['id']}"
        if key not in self.components:
            raise RpcFail(-105, f"Bad id={params['id']}")
        return key

    def _public(self, key: str) -> dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in self.components[key].items() if k[0] != "_"}

    # Switch
    def _switch_getstatus(self, st: dict[str, Any], params: dict[str, Any]) -> Any:
        return {k: copy.deepcopy(v) for k, v in st.items() if k[0] != "_"}

    def _switch_set(self, st: dict[str, Any], params: dict[str, Any]) -> Any:
        on = params.get("on")
        if not isinstance(on, bool):
            raise RpcFail(-103, "Missing required argument 'on'!")
        was = st["output"]
        self._set_switch(st, on)
        return {"was_on": was}

    def _switch_toggle(self, st: dict[str, Any], params: dict[str, Any]) -> Any:
        was = st["output"]
        self._set_switch(st, not was)
        return {"was_on": was}

    @staticmethod
    def _set_switch(st: dict[str, Any], on: bool) -> None:
        st["output"] = on
        st["source"] = "HTTP_in"
        st["apower"] = st["_load"] if on else 0.0
        st["current"] = round(st["apower"] / st["voltage"], 3)

    # Light
    def _light_getstatus(self, st: dict[str, Any], params: dict[str, Any]) -> Any:
        return copy.deepcopy(st)

    def _light_set(self, st: dict[str, Any], params: dict[str, Any]) -> Any:
        if "brightness" in params:
            b = params["brightness"]
            if isinstance(b, bool) or not isinstance(b, int | float) or not 0 <= b <= 100:
                raise RpcFail(-103, "Invalid argument 'brightness'!")
            st["brightness"] = b
        if "on" in params:
            st["output"] = bool(params["on"])
        st["source"] = "HTTP_in"
        return None

    def _light_toggle(self, st: dict[str, Any], params: dict[str, Any]) -> Any:
        st["output"] = not st["output"]
        return None

    # Cover
    def _cover_getstatus(self, st: dict[str, Any], params: dict[str, Any]) -> Any:
        return copy.deepcopy(st)

    def _cover_gotoposition(self, st: dict[str, Any], params: dict[str, Any]) -> Any:
        pos = params.get("pos")
        if isinstance(pos, bool) or not isinstance(pos, int | float) or not 0 <= pos <= 100:
            raise RpcFail(-103, "Invalid argument 'pos'!")
        if not st["pos_control"]:
            raise RpcFail(-103, "Cover is not calibrated!")
        self._move(st, int(pos))
        return None

    def _cover_open(self, st: dict[str, Any], params: dict[str, Any]) -> Any:
        self._move(st, 100)
        return None

    def _cover_close(self, st: dict[str, Any], params: dict[str, Any]) -> Any:
        self._move(st, 0)
        return None

    def _cover_stop(self, st: dict[str, Any], params: dict[str, Any]) -> Any:
        handle = self._moves.pop(st["id"], None)
        if handle is not None:
            handle.cancel()
        st.update(state="stopped", target_pos=None, apower=0.0, source="HTTP_in")
        return None

    def _move(self, st: dict[str, Any], target: int) -> None:
        old = self._moves.pop(st["id"], None)
        if old is not None:
            old.cancel()
        if target == st["current_pos"]:
            self._arrive(st, target)
            return
        st.update(
            state="opening" if target > st["current_pos"] else "closing",
            target_pos=target,
            apower=120.0,
            source="HTTP_in",
        )
        if self.move_time <= 0:
            self._arrive(st, target)
        else:
            loop = asyncio.get_running_loop()
            self._moves[st["id"]] = loop.call_later(self.move_time, self._arrive, st, target)

    def _arrive(self, st: dict[str, Any], target: int) -> None:
        self._moves.pop(st["id"], None)
        state = {100: "open", 0: "closed"}.get(target, "stopped")
        st.update(state=state, current_pos=target, target_pos=None, apower=0.0)


def _query_value(raw: str) -> Any:
    # Shelly's GET form: only true/false and numbers are typed, anything else is a string.
    if raw in ("true", "false"):
        return raw == "true"
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def shelly_plus_1pm(mac: str = "A8032AB12345", load_watts: float = 42.5) -> FakeShelly:
    return FakeShelly(
        model="SNSW-001P16EU",
        app="Plus1PM",
        mac=mac,
        components={"switch:0": _switch(load_watts)},
    )


def shelly_plus_2pm_cover(mac: str = "C4D8D5123456", move_time: float = 0.0) -> FakeShelly:
    return FakeShelly(
        model="SNSW-102P16EU",
        app="Plus2PM",
        mac=mac,
        profile="cover",
        components={"cover:0": _cover()},
        move_time=move_time,
    )


def shelly_plus_dimmer(mac: str = "80646FABCDEF") -> FakeShelly:
    return FakeShelly(
        model="SNDM-0013US",
        app="PlusWallDimmer",
        mac=mac,
        components={"light:0": _light()},
    )


# ----------------------------------------------------------------------------- WLED


class FakeWled(_FakeHttpDevice):
    """A WLED controller: `GET /json`, `GET /json/state`, `GET /json/info`, `POST /json/state`."""

    def __init__(self, mac: str = "a8032abcdef0", name: str = "WLED", leds: int = 30) -> None:
        super().__init__()
        self.mac = mac.lower()
        self.name = name
        self.leds = leds
        self.locked = False  # answer every write with WLED's "buffer locked" error
        self.posts: list[dict[str, Any]] = []
        self.state: dict[str, Any] = {
            "on": True,
            "bri": 128,
            "transition": 7,
            "ps": -1,
            "pl": -1,
            "lor": 0,
            "mainseg": 0,
            "seg": [
                {
                    "id": 0,
                    "start": 0,
                    "stop": leds,
                    "len": leds,
                    "grp": 1,
                    "spc": 0,
                    "on": True,
                    "bri": 255,
                    "col": [[255, 160, 0], [0, 0, 0], [0, 0, 0]],
                    "fx": 0,
                    "sx": 128,
                    "ix": 128,
                    "pal": 0,
                    "sel": True,
                    "rev": False,
                    "mi": False,
                }
            ],
        }
        self.presets: dict[int, dict[str, Any]] = {
            1: {"on": True, "bri": 200, "seg": [{"id": 0, "col": [[0, 0, 255]], "fx": 0}]},
            2: {"on": True, "bri": 40, "seg": [{"id": 0, "col": [[255, 80, 10]], "fx": 2}]},
        }

    def info(self) -> dict[str, Any]:
        return {
            "ver": "0.14.4",
            "vid": 2405180,
            "leds": {"count": self.leds, "rgbw": False, "pwr": 0, "maxpwr": 850, "maxseg": 32},
            "name": self.name,
            "udpport": 21324,
            "live": False,
            "fxcount": 187,
            "palcount": 71,
            "arch": "esp32",
            "brand": "WLED",
            "product": "FOSS",
            "mac": self.mac,
            "ip": LOOPBACK,
            "wifi": {"rssi": -61, "signal": 78, "channel": 6},
        }

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/json", self._all)
        app.router.add_get("/json/state", self._get_state)
        app.router.add_get("/json/info", self._get_info)
        app.router.add_post("/json/state", self._post_state)
        app.router.add_post("/json", self._post_state)
        return app

    async def _all(self, request: web.Request) -> web.Response:
        self.requests += 1
        return web.json_response({"state": self.state, "info": self.info()})

    async def _get_state(self, request: web.Request) -> web.Response:
        self.requests += 1
        return web.json_response(self.state)

    async def _get_info(self, request: web.Request) -> web.Response:
        self.requests += 1
        return web.json_response(self.info())

    async def _post_state(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.locked:
            return web.json_response({"error": 3}, status=503)
        try:
            body = json.loads(await request.text())
        except ValueError:
            return web.json_response({"error": 9}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": 9}, status=400)
        self.posts.append(body)
        self.apply(body)
        if body.get("v"):
            return web.json_response(self.state)
        return web.json_response({"success": True})

    def apply(self, body: dict[str, Any]) -> None:
        ps = body.get("ps")
        if isinstance(ps, int) and ps in self.presets:
            self.apply(self.presets[ps])
            self.state["ps"] = ps
        changed = False
        if "on" in body:
            self.state["on"] = (not self.state["on"]) if body["on"] == "t" else bool(body["on"])
            changed = True
        if isinstance(body.get("bri"), int):
            self.state["bri"] = max(1, min(255, body["bri"]))  # the state never reports 0
            changed = True
        for i, seg in enumerate(body.get("seg") or []):
            sid = seg.get("id", i)
            target = next((s for s in self.state["seg"] if s["id"] == sid), None)
            if target is None:
                continue
            if "col" in seg:
                for n, col in enumerate(seg["col"][:3]):
                    target["col"][n] = list(col)
            for key in ("fx", "sx", "ix", "pal", "on", "bri"):
                if key in seg:
                    target[key] = seg[key]
            changed = True
        if changed and not isinstance(ps, int):
            self.state["ps"] = -1  # a manual change leaves the preset


# ----------------------------------------------------------------------------- mDNS


def service_info(
    service_type: str,
    instance: str,
    port: int,
    properties: dict[str, str] | None = None,
    address: str = LOOPBACK,
) -> AsyncServiceInfo:
    return AsyncServiceInfo(
        service_type,
        f"{instance}.{service_type}",
        addresses=[socket.inet_aton(address)],
        port=port,
        properties=properties or {},
        server=f"{instance}.local.",
    )


def shelly_service(fake: FakeShelly, service_type: str = "_shelly._tcp.local.") -> AsyncServiceInfo:
    """How a Gen2 Shelly announces itself: instance = device id, TXT gen/app/ver."""
    props = {"gen": "2", "app": fake.app, "ver": "1.0.8"}
    return service_info(service_type, fake.device_id, fake.port, props)


def wled_service(
    fake: FakeWled, instance: str | None = None, service_type: str = "_wled._tcp.local."
) -> AsyncServiceInfo:
    """How WLED announces itself: instance = its mDNS host name, TXT mac."""
    name = instance or f"wled-{fake.mac[-6:]}"
    return service_info(service_type, name, fake.port, {"mac": fake.mac})


class Announcer:
    """A simulated device's mDNS responder, on loopback only (never the machine's network).

    zeroconf answers queries for a service as soon as it is registered; the task it returns
    only repeats the announcement (and the goodbye, on unregister) over the next second.
    Tests don't wait for those repeats: a browser on loopback hears the first packet.
    """

    def __init__(self, azc: AsyncZeroconf) -> None:
        self.azc = azc
        self._pending: set[asyncio.Task[Any]] = set()

    def _keep(self, task: asyncio.Task[Any]) -> None:
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def register(self, info: AsyncServiceInfo) -> None:
        # cooperating_responders skips probing: found in milliseconds rather than ~1.2 s.
        self._keep(await self.azc.async_register_service(info, cooperating_responders=True))

    async def unregister(self, info: AsyncServiceInfo) -> None:
        self._keep(await self.azc.async_unregister_service(info))

    async def update(self, info: AsyncServiceInfo) -> None:
        self._keep(await self.azc.async_update_service(info))

    async def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        await self.azc.async_close()


@asynccontextmanager
async def announcer() -> AsyncIterator[Announcer]:
    ann = Announcer(AsyncZeroconf(interfaces=[LOOPBACK]))
    try:
        yield ann
    finally:
        await ann.close()


def free_port() -> int:
    """A loopback port with nothing listening on it (for 'unreachable' tests)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])
