"""End to end: a device session's queue policy survives a gateway restart (real SqliteStore).

A trusted in-process client (as a device session is) asks for coalescing, result notices and
a pending list, then goes to sleep. The gateway is stopped and started again from its store.
Commands published by paho before the device is back must already be coalesced and reported.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from gateway.client.mqtt import MQTTClient
from gateway.mqtt.packets import Publish
from tests import paho_helpers
from tests.conftest import ThreadGateway, free_port, write_config

T = TypeVar("T")

DEVICE = "dev-thermo"
SET, RESULT, PENDING = "gw/thermo/set", "gw/thermo/result", "gw/thermo/pending"
POLICY = (
    ("queue-coalesce", "json-keys"),
    ("queue-notify-topic", RESULT),
    ("queue-pending-topic", PENDING),
)


def on_loop(gw: ThreadGateway, coro: Coroutine[Any, Any, T]) -> T:
    assert gw.loop is not None
    return asyncio.run_coroutine_threadsafe(coro, gw.loop).result(10)


async def device_session(gw: ThreadGateway, inbox: list[Publish]) -> MQTTClient:
    async def on_command(message: Publish) -> bool:
        inbox.append(message)
        return True

    client = MQTTClient(gw.gateway.server.connect_in_process, on_command)
    ack = await client.connect(
        DEVICE, clean_start=False, session_expiry=3600, user_properties=POLICY
    )
    if not ack.session_present:
        await client.subscribe(SET, qos=1)
    return client


def queued(gw: ThreadGateway) -> int:
    infos = gw.call(lambda: gw.gateway.broker.sessions_info())
    (info,) = [i for i in infos if i.client_id == DEVICE]
    assert not info.connected
    return int(info.queued + info.inflight)


def test_coalescing_notices_and_pending_list_work_before_the_device_reconnects(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    gw = ThreadGateway(config).start()
    try:

        async def sleep_after_setup() -> None:
            client = await device_session(gw, [])
            await client.disconnect()

        on_loop(gw, sleep_after_setup())
    finally:
        gw.stop()

    gw = ThreadGateway(config).start()  # everything the broker knows now came from gw.db
    watcher = app = None
    try:
        watcher = paho_helpers.Client(port, "watcher")
        watcher.subscribe(RESULT, qos=1)
        app = paho_helpers.Client(port, "app")
        for t in (20.0, 21.0, 22.0):
            app.publish(SET, json.dumps({"target_temp": t}), qos=1)  # waits for the PUBACK

        assert queued(gw) == 1
        notices = [json.loads(m.payload) for m in watcher.drain(0.5)]
        assert [(n["result"], n["command"]) for n in notices] == [
            ("superseded", {"target_temp": 20.0}),
            ("superseded", {"target_temp": 21.0}),
        ]
        watcher.subscribe(PENDING, qos=1)
        (listed,) = watcher.drain(0.5)
        assert listed.retain
        assert [(c["command"], c["state"]) for c in json.loads(listed.payload)] == [
            ({"target_temp": 22.0}, "queued")
        ]

        # The device wakes: it gets the last command only.
        inbox: list[Publish] = []

        async def wake() -> None:
            client = await device_session(gw, inbox)
            for _ in range(100):
                if inbox:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)  # nothing else follows
            await client.disconnect()

        on_loop(gw, wake())
        assert [json.loads(m.payload) for m in inbox] == [{"target_temp": 22.0}]
    finally:
        for client in (watcher, app):
            if client is not None:
                client.disconnect()
        gw.stop()
