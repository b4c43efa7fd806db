"""Crash safety: kill -9 the gateway process mid-stream and count what survived (DESIGN §4)."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from conftest import ProcessGateway, free_port, wait_for, write_config
from paho.mqtt.enums import CallbackAPIVersion
from paho_helpers import Client

N = 10_000


def _publisher(port: int, client_id: str, qos: int) -> tuple[paho.Client, set[int]]:
    acked: set[int] = set()
    mid_to_index: dict[int, int] = {}
    lock = threading.Lock()
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    c.max_inflight_messages_set(100)
    c.max_queued_messages_set(0)
    c.reconnect_delay_set(0.1, 0.5)

    def on_publish(
        client: paho.Client, userdata: object, mid: int, rc: object, props: object
    ) -> None:
        with lock:
            if mid in mid_to_index:
                acked.add(mid_to_index[mid])

    c.on_publish = on_publish
    c.connect("127.0.0.1", port, keepalive=5)
    c.loop_start()
    for i in range(N):
        info = c.publish("crash/x", str(i).encode(), qos=qos)
        with lock:
            mid_to_index[info.mid] = i
            if info.is_published():
                acked.add(i)
    return c, acked


def _run(tmp_path: Path, qos: int, seed: int) -> None:
    port = free_port()
    # The queue must hold everything: this test is about durability, not overflow policy.
    config = write_config(tmp_path, port, {"limits": {"queue": {"max_messages": 2 * N}}})
    gw = ProcessGateway(config, port)
    try:
        _crash_and_count(gw, port, qos, seed)
    finally:
        gw.stop_if_running()


def _crash_and_count(gw: ProcessGateway, port: int, qos: int, seed: int) -> None:
    rng = random.Random(seed)
    gw.start()
    sub = Client(port, "victim", clean=False)
    sub.subscribe("crash/#", qos=qos)
    sub.disconnect()

    kill_after = rng.uniform(0.05, 1.0)
    killer = threading.Timer(kill_after, gw.kill)
    killer.start()
    pub, acked = _publisher(port, f"pub-q{qos}", qos)
    killer.join()
    acked_at_kill = set(acked)
    print(f"seed={seed} kill after {kill_after:.2f}s: {len(acked_at_kill)} of {N} acknowledged")

    gw.start()
    # paho reconnects by itself and resends what was not acknowledged (DUP).
    assert wait_for(lambda: len(acked) == N, 60, 0.1), f"only {len(acked)} acked after restart"
    pub.disconnect()
    pub.loop_stop()

    again = Client(port, "victim", clean=False)
    received: list[int] = []
    deadline = time.monotonic() + 60
    while len(set(received)) < N and time.monotonic() < deadline:
        try:
            received.append(int(again.get(timeout=5).payload))
        except Exception:
            break
    again.disconnect()
    missing_acked = acked_at_kill - set(received)
    assert not missing_acked, f"{len(missing_acked)} acknowledged messages lost"
    assert set(received) == set(range(N))
    if qos == 2:
        assert len(received) == len(set(received)), "QoS 2 delivered a message twice"
    assert gw.terminate() == 0


def test_kill9_qos1_loses_nothing_acknowledged(tmp_path: Path) -> None:
    _run(tmp_path, qos=1, seed=random.randrange(1 << 30))


def test_kill9_qos2_delivers_exactly_once(tmp_path: Path) -> None:
    _run(tmp_path, qos=2, seed=random.randrange(1 << 30))
