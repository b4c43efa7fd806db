"""Thin helpers around paho-mqtt (a real, independent MQTT client) for black-box tests."""

from __future__ import annotations

import queue
import threading
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

V311 = paho.MQTTv311
V5 = paho.MQTTv5


class Client:
    """A connected paho client whose received messages land in a queue."""

    def __init__(
        self,
        port: int,
        client_id: str = "",
        *,
        version: int = V311,
        clean: bool = True,
        session_expiry: int | None = None,
        username: str | None = None,
        password: str | None = None,
        will: tuple[str, bytes, int, bool] | None = None,
        keepalive: int = 60,
        connect: bool = True,
        transport: str = "tcp",  # or "websockets" (a ws/wss listener)
        ws_path: str = "/mqtt",
        cafile: str | None = None,  # TLS (tls/wss) with this CA
    ) -> None:
        self.port = port
        self.version = version
        self.clean = clean
        self.session_expiry = session_expiry
        self.keepalive = keepalive
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.connack: queue.Queue[tuple[Any, Any, Any]] = queue.Queue()
        self.subacks: queue.Queue[list[Any]] = queue.Queue()
        self.pubacks: dict[int, Any] = {}
        self.puback_properties: dict[int, Any] = {}  # MQTT 5: e.g. the ReasonString
        self.disconnects: queue.Queue[Any] = queue.Queue()
        self._acked = threading.Condition()
        kwargs: dict[str, Any] = {
            "client_id": client_id,
            "protocol": version,
            "transport": transport,
        }
        if version != V5:
            kwargs["clean_session"] = clean
        self.c = paho.Client(CallbackAPIVersion.VERSION2, **kwargs)
        self.c.enable_logger()
        if transport == "websockets":
            self.c.ws_set_options(path=ws_path)
        if cafile is not None:
            self.c.tls_set(ca_certs=cafile)
        if username is not None:
            self.c.username_pw_set(username, password)
        if will is not None:
            self.c.will_set(*will)
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        self.c.on_connect = lambda c, u, flags, rc, props: self.connack.put((flags, rc, props))
        self.c.on_subscribe = lambda c, u, mid, rcs, props: self.subacks.put(list(rcs))
        self.c.on_disconnect = lambda c, u, flags, rc, props: self.disconnects.put(rc)
        self.c.on_publish = self._on_publish
        if connect:
            self.connect()

    def _on_publish(self, c: Any, u: Any, mid: int, rc: Any, props: Any) -> None:
        with self._acked:
            self.pubacks[mid] = rc
            self.puback_properties[mid] = props
            self._acked.notify_all()

    def connect(self, timeout: float = 5.0) -> tuple[Any, Any, Any]:
        props = None
        if self.version == V5:
            props = Properties(PacketTypes.CONNECT)
            if self.session_expiry is not None:
                props.SessionExpiryInterval = self.session_expiry
            self.c.connect(
                "127.0.0.1",
                self.port,
                keepalive=self.keepalive,
                clean_start=self.clean,
                properties=props,
            )
        else:
            self.c.connect("127.0.0.1", self.port, keepalive=self.keepalive)
        self.c.loop_start()
        result = self.connack.get(timeout=timeout)
        return result

    def subscribe(self, topic: str, qos: int = 1, timeout: float = 5.0, **opts: Any) -> list[Any]:
        if self.version == V5 and opts:
            options = paho.SubscribeOptions(qos=qos, **opts)
            self.c.subscribe(topic, options=options)
        else:
            self.c.subscribe(topic, qos)
        return self.subacks.get(timeout=timeout)

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 0,
        retain: bool = False,
        wait: bool = True,
    ) -> paho.MQTTMessageInfo:
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        if wait and qos > 0:
            info.wait_for_publish(5)
        return info

    def get(self, timeout: float = 5.0) -> paho.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def drain(self, timeout: float = 0.3) -> list[paho.MQTTMessage]:
        out = []
        try:
            while True:
                out.append(self.messages.get(timeout=timeout))
        except queue.Empty:
            return out

    def disconnect(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()

    def drop(self) -> None:
        """Break the connection without DISCONNECT (the broker sees a lost link)."""
        sock = self.c.socket()
        self.c.loop_stop()
        if sock is not None:
            sock.close()
