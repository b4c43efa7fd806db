"""A device's session belongs to the gateway (DESIGN §8), end to end: real paho clients try
to take a sleeping thermostat's session (and its queued command) with the device's client
id, as 3.1.1 clean session 0, as 5.0 clean start 0 and as a user with a password. All are
refused, and the command still reaches the device when it wakes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import free_port
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho_helpers import V5, V311, Client
from test_demo import FAST, commands
from watcher import Watcher

from devices.ble.eq3 import OP_TARGET
from gateway.app import Gateway
from gateway.auth.passwords import hash_password, write_password_file
from gateway.config import parse_config

pytestmark = [pytest.mark.filterwarnings("ignore::ResourceWarning")]

DEVICE_CLIENT_ID = "dev-demo-thermostat"
# Asleep long enough for three refused attempts (one with a password check) in between.
TIMINGS = dataclasses.replace(FAST, thermostat_period=8.0)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Gateway, int]]:
    port = free_port()
    pwfile = tmp_path / "passwd"
    write_password_file(pwfile, {"alice": hash_password("alicepw")})
    config = {
        "listeners": [{"type": "tcp", "host": "127.0.0.1", "port": port}],
        "persistence": {"path": str(tmp_path / "gw.db")},
        "sys_interval": 0,
        "auth": {"password_file": str(pwfile)},
        "devices": {"ble": {"enabled": False}, "lan": {"poll_interval": 0.2, "timeout": 1}},
        "demo": True,
    }
    gw = Gateway(parse_config(json.dumps(config), "demo.yaml"), demo_timings=TIMINGS)
    await gw.start()
    try:
        yield gw, port
    finally:
        await gw.stop()


def attempt(port: int, **kwargs: object) -> tuple[int, list[bytes]]:
    """Connect with the device's client id; the CONNACK reason code and anything received."""
    client = Client(port, DEVICE_CLIENT_ID, connect=False, **kwargs)  # type: ignore[arg-type]
    try:
        _, rc, _ = client.connect()
        got = [bytes(m.payload) for m in client.drain(0.3)]
    finally:
        client.disconnect()  # also stops paho from reconnecting after a refusal
    return rc.value, got


async def test_device_session_cannot_be_taken_by_a_network_client(
    gateway: tuple[Gateway, int],
) -> None:
    gw, port = gateway
    demo = gw.demo
    assert demo is not None
    thermostat = demo.thermostat
    w = await Watcher.start(port, "gw/#", client_id="ownership-watcher")
    try:
        if thermostat.awake:
            await asyncio.wait_for(thermostat.wait_asleep(), 5)
        wake = thermostat.wakes
        await asyncio.to_thread(
            w.client.publish, "gw/demo-thermostat/set", b'{"target_temp": 22.5}', 1
        )
        pending = "gw/demo-thermostat/pending"
        await w.until(lambda w: len(json.loads(w.last.get(pending) or b"[]")) == 1, 1.5)

        tries = [
            await asyncio.to_thread(attempt, port, version=V311, clean=False),
            await asyncio.to_thread(attempt, port, version=V5, clean=False, session_expiry=3600),
            await asyncio.to_thread(
                attempt, port, version=V311, clean=False, username="alice", password="alicepw"
            ),
        ]
        # 0x85 Client Identifier not valid (paho reports 3.1.1's code 2 as the same).
        assert tries == [(0x85, []), (0x85, []), (0x85, [])]
        assert thermostat.wakes == wake, "the test needs the thermostat asleep throughout"

        (info,) = [s for s in gw.server.sessions_info() if s.client_id == DEVICE_CLIENT_ID]
        assert info.owner == "gateway" and info.queued == 1
        assert json.loads(w.last[pending])[0]["command"] == {"target_temp": 22.5}
        assert gw.broker.stats.refused_reserved_client_id == 3

        # The command is still delivered to the real device at its next wake.
        await w.until(lambda w: bool(w.results("gw/demo-thermostat/result")), 10)
        assert [r["result"] for r in w.results("gw/demo-thermostat/result")] == ["delivered"]
        assert commands(thermostat.writes) == [(wake + 1, bytes((OP_TARGET, 45)))]
        await w.until(lambda w: w.last.get(pending) == b"[]")
    finally:
        await asyncio.to_thread(w.client.disconnect)


async def test_a_user_session_is_not_taken_by_another_user(
    gateway: tuple[Gateway, int],
) -> None:
    _, port = gateway
    anon = await asyncio.to_thread(Client, port, "phone", version=V311, clean=False)
    await asyncio.to_thread(anon.subscribe, "inbox/#", 1)
    await asyncio.to_thread(anon.disconnect)

    thief = await asyncio.to_thread(
        Client,
        port,
        "phone",
        version=V311,
        clean=False,
        username="alice",
        password="alicepw",
        connect=False,
    )
    try:
        _, rc, _ = await asyncio.to_thread(thief.connect)
    finally:
        await asyncio.to_thread(thief.disconnect)
    assert rc.value == 0x87  # 3.1.1: code 5, not authorized

    back = await asyncio.to_thread(Client, port, "phone", version=V311, clean=False, connect=False)
    try:
        flags, rc, _ = await asyncio.to_thread(back.connect)
        assert rc.value == 0 and flags.session_present
    finally:
        await asyncio.to_thread(back.disconnect)


async def test_a_command_cannot_make_the_device_answer_on_the_admin_api(
    gateway: tuple[Gateway, int],
) -> None:
    # The device session answers a request on its Response Topic with its own rights; a
    # client that may not publish on gw/bridge/... must not be able to point it there.
    gw, port = gateway
    demo = gw.demo
    assert demo is not None
    app = await asyncio.to_thread(Client, port, "app", version=V5)
    try:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "gw/bridge/request/delete_session"
        props.CorrelationData = b'{"client_id": "phone"}'
        info = app.c.publish("gw/demo-plug/set", b'{"on": true}', qos=1, properties=props)
        await asyncio.to_thread(info.wait_for_publish, 5)
        assert app.pubacks[info.mid].value == 0x87
        # The same command with a response topic the client may use is carried out.
        props.ResponseTopic = "app/replies"
        await asyncio.to_thread(app.subscribe, "app/replies", 1)
        info = app.c.publish("gw/demo-plug/set", b'{"on": true}', qos=1, properties=props)
        await asyncio.to_thread(info.wait_for_publish, 5)
        reply = await asyncio.to_thread(app.get, 5)
        assert json.loads(reply.payload)["result"] == "delivered"
        assert demo.plug.output is True
    finally:
        await asyncio.to_thread(app.disconnect)
