"""limits.max_sessions: a CONNECT that would create one session too many is refused; a
client whose session exists, and the gateway's own clients, always get in."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from conftest import ThreadGateway, free_port, write_config
from paho_helpers import V5, V311, Client
from test_broker_support import Harness

from gateway.broker.effects import Identity
from gateway.broker.settings import BrokerSettings
from gateway.mqtt.packets import ConnAck


def harness(cap: int) -> Harness:
    return Harness(BrokerSettings(sys_interval=0, max_sessions=cap))


def connack(c: object) -> ConnAck:
    packet = c.all()[0]  # type: ignore[attr-defined]
    assert isinstance(packet, ConnAck)
    return packet


def test_one_session_too_many_is_refused_with_0x97_or_server_unavailable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = harness(2)
    h.connect("a", V5, clean=False, expiry=3600).disconnect()  # offline sessions count
    h.connect("b", V311)
    with caplog.at_level(logging.WARNING, logger="gateway.broker"):
        v5 = h.connect("c", V5)
        v311 = h.connect("d", V311)
        auto = h.connect("", V5)  # an assigned client id is a new session too
    assert connack(v5).reason_code == 0x97 and v5.closed
    assert connack(v311).reason_code == 3 and v311.closed
    assert connack(auto).reason_code == 0x97
    assert set(h.broker.sessions) == {"a", "b"}
    assert h.broker.stats.refused_max_sessions == 3
    warnings = [r.getMessage() for r in caplog.records if "max_sessions" in r.getMessage()]
    assert len(warnings) == 1 and "'c'" in warnings[0]  # rate-limited: the first one
    _, events = h.broker.events_since(0)
    refused = [str(e["client_id"]) for e in events if e["type"] == "refused"]
    assert refused[:2] == ["c", "d"] and refused[2].startswith("auto-")


def test_existing_sessions_reconnect_and_ended_ones_free_a_place() -> None:
    h = harness(2)
    h.connect("a", V5, clean=False, expiry=3600).disconnect()
    b = h.connect("b", V311)
    again = h.connect("a", V5, clean=False, expiry=3600)  # resumes: not a new session
    assert connack(again).reason_code == 0 and connack(again).session_present
    fresh = h.connect("a", V5, clean=True)  # clean start replaces it: still two
    assert connack(fresh).reason_code == 0
    b.disconnect()  # a clean session ends with its connection
    assert connack(h.connect("c", V5)).reason_code == 0


def test_the_gateways_own_clients_are_never_refused() -> None:
    h = harness(1)
    h.connect("someone", V311)
    dev = h.connect("dev-thermo", V5, clean=False, expiry=3600,
                    identity=Identity(ok=True, is_admin=True), trusted=True)  # fmt: skip
    assert connack(dev).reason_code == 0
    assert connack(h.connect("other", V311)).reason_code == 3


def test_real_clients_against_a_gateway(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port, {"limits": {"max_sessions": 3}, "sys_interval": 1})
    gw = ThreadGateway(config).start()
    try:
        # The gateway's own admin service (and bridge, if any) hold sessions already.
        own = gw.call(lambda: len(gw.gateway.broker.sessions))
        assert own <= 2
        clients = [Client(port, f"c{i}", version=V311) for i in range(3 - own)]
        refused5 = Client(port, "late5", version=V5, connect=False)
        _, rc5, _ = refused5.connect()
        refused3 = Client(port, "late3", version=V311, connect=False)
        _, rc3, _ = refused3.connect()
        # paho reports 3.1.1's return code 3 as its MQTT 5 twin, "Server unavailable".
        assert rc5.value == 0x97 and str(rc3) == "Server unavailable"
        watcher_id = clients[0]
        watcher_id.subscribe("$SYS/broker/clients/refused/max_sessions", qos=0)
        assert int(watcher_id.get(timeout=5).payload) == 2
        for c in (*clients, refused5, refused3):
            c.c.loop_stop()
    finally:
        gw.stop()
