"""What the LAN drivers share: typed errors, device details, and one JSON-over-HTTP client.

The error classes say whether trying again later can help (`retryable`): the device bridge
keeps a command queued while its device is unreachable, but a command the device refused
will be refused again, so it must fail at once instead of burning delivery attempts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiohttp

from devices.model import InvalidCommand

DEFAULT_TIMEOUT = 5.0


class LanDeviceError(Exception):
    """Something went wrong talking to a LAN device."""

    retryable = False

    def __init__(self, host: str, message: str) -> None:
        super().__init__(f"{host}: {message}")
        self.host = host
        self.detail = message


class DeviceUnreachable(LanDeviceError):
    """No answer: connection refused, no route, DNS failure or timeout."""

    retryable = True


class DeviceHTTPError(LanDeviceError):
    """The device answered with an HTTP error status or a body that is not what its API says."""

    def __init__(self, host: str, message: str, status: int | None = None) -> None:
        super().__init__(host, message)
        self.status = status
        # 5xx and 429 are the device being busy; 4xx is the request being wrong.
        self.retryable = status is not None and (status >= 500 or status == 429)


class DeviceAuthRequired(DeviceHTTPError):
    """The device has authentication enabled (HTTP 401); credentials are not supported yet."""


class CommandRejected(LanDeviceError, InvalidCommand):
    """The command is not something this driver can express (unknown key, bad value).

    Raised before anything is sent, so a rejected command never half-applies.
    """

    def __init__(self, host: str, message: str) -> None:
        super().__init__(host, message)


@dataclass(frozen=True, slots=True)
class DeviceDetails:
    """Identity of a device as it reports it (for the device registry and HA's device block)."""

    id: str
    manufacturer: str
    model: str
    name: str | None = None
    sw_version: str | None = None
    mac: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # A WLED's effect names (by index) and preset names (by id): Home Assistant offers them.
    effects: tuple[str, ...] = ()
    presets: tuple[tuple[int, str], ...] = ()


class JsonHttpClient:
    """An aiohttp session bound to one device, mapping every failure to a `LanDeviceError`.

    The session is created on first use so a driver can be built outside an event loop
    (from configuration) and reused across reconnects; `close()` releases it.
    """

    def __init__(
        self,
        host: str,
        port: int = 80,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._session = session
        self._owns_session = session is None
        # IPv6 literals need brackets inside a URL.
        hostpart = f"[{host}]" if ":" in host and not host.startswith("[") else host
        self.base_url = f"http://{hostpart}:{port}"

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                # A device answers one request at a time; don't keep idle sockets to it.
                connector=aiohttp.TCPConnector(limit=2, force_close=True),
            )
            self._owns_session = True
        return self._session

    async def request_json(self, method: str, path: str, *, body: Any = None) -> tuple[int, Any]:
        """Send one request; return (HTTP status, decoded JSON body or None).

        Only transport failures raise here; interpreting the status is the driver's job,
        because each API puts its error details in the body differently.
        """
        data = None if body is None else json.dumps(body, separators=(",", ":"))
        headers = {"Content-Type": "application/json"} if data is not None else None
        try:
            async with self._client().request(
                method,
                self.base_url + path,
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as resp:
                status = resp.status
                text = await resp.text()
        except TimeoutError:
            raise DeviceUnreachable(self.label, f"no answer within {self.timeout:g} s") from None
        except aiohttp.ClientConnectionError as exc:
            raise DeviceUnreachable(self.label, f"cannot connect: {exc}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise DeviceUnreachable(self.label, f"transport error: {exc}") from exc
        if status == 401:
            raise DeviceAuthRequired(self.label, "authentication required", status)
        if not text:
            return status, None
        try:
            return status, json.loads(text)
        except ValueError:
            if 200 <= status < 300:
                raise DeviceHTTPError(self.label, "answer is not JSON", status) from None
            raise DeviceHTTPError(self.label, f"HTTP {status}: {text[:200]}", status) from None

    async def close(self) -> None:
        if self._session is not None and self._owns_session and not self._session.closed:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
