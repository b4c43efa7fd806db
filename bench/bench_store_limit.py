"""persistence.max_size_mb under a flood: how large the store's files get, what is refused,
and how soon the gateway takes messages again once a subscriber drains (issue 9 §2).

A gateway subprocess with the limit; one offline persistent subscriber (QoS 1, MQTT 5); one
publisher (MQTT 5, or 3.1.1 with --v311) sends --megabytes of --payload-byte QoS 1 messages
as fast as its in-flight window allows. A sampler thread stats the database and its WAL every
few milliseconds. Printed: the peak size of the files (and of the data alone, from $SYS),
the messages acknowledged and refused, then how long the subscriber takes to drain and when
a publish is accepted again. --max-size-mb 0 shows the store without a limit.

Run: python bench/bench_store_limit.py [--max-size-mb 8] [--megabytes 40] [--v311]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_gateway(
    directory: Path, port: int, max_mb: int, queue_messages: int
) -> subprocess.Popen[bytes]:
    config = {
        "listeners": [{"type": "tcp", "host": "127.0.0.1", "port": port}],
        "persistence": {"path": str(directory / "gw.db"), "max_size_mb": max_mb},
        "limits": {"queue": {"max_messages": queue_messages}},
        "sys_interval": 0,
        "admin_api": False,
        "devices": {"ble": {"enabled": False}, "lan": {"enabled": False}},
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    log = (directory / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=directory,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the gateway did not start")


def client(
    port: int,
    client_id: str,
    v5: bool,
    clean: bool = True,
    window: int = 20,
    on_message: Any = None,
) -> paho.Client:
    """A connected paho client; ``on_message`` is set before it connects, so that a resumed
    session's messages are all seen."""
    if v5:
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        c.on_message = on_message
        c.max_inflight_messages_set(window)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0 if clean else 3600
        c.connect("127.0.0.1", port, clean_start=clean, properties=props)
    else:
        c = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv311,
            clean_session=clean,
        )
        c.on_message = on_message
        c.max_inflight_messages_set(window)
        c.connect("127.0.0.1", port)
    c.loop_start()
    deadline = time.monotonic() + 5
    while not c.is_connected():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{client_id} did not connect")
        time.sleep(0.01)
    return c


class Sampler(threading.Thread):
    def __init__(self, directory: Path) -> None:
        super().__init__(daemon=True)
        self.files = [directory / "gw.db", directory / "gw.db-wal"]
        self.peak = 0
        self.peak_wal = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            sizes = [f.stat().st_size if f.exists() else 0 for f in self.files]
            self.peak = max(self.peak, sum(sizes))
            self.peak_wal = max(self.peak_wal, sizes[1])
            time.sleep(0.003)


def flood(args: argparse.Namespace, directory: Path) -> None:
    port = free_port()
    gateway = start_gateway(directory, port, args.max_size_mb, args.queue_messages)
    try:
        sub = client(port, "keeper", True, clean=False)
        sub.subscribe("flood/#", qos=1)
        time.sleep(0.2)
        sub.disconnect()
        sub.loop_stop()

        sampler = Sampler(directory)
        sampler.start()
        acks: dict[int, int] = {}
        done = threading.Event()
        total = args.megabytes * 1_000_000 // args.payload

        def on_publish(c: Any, u: Any, mid: int, rc: Any, props: Any) -> None:
            acks[mid] = int(getattr(rc, "value", rc))
            if len(acks) == total:
                done.set()

        pub = client(port, "flooder", not args.v311, window=args.window)
        pub.on_publish = on_publish
        payload = os.urandom(args.payload)
        started = time.perf_counter()
        for i in range(total):
            pub.publish(f"flood/{i}", payload, qos=1)
        if not done.wait(300):
            raise RuntimeError(f"only {len(acks)} of {total} acknowledged")
        flooded = time.perf_counter() - started
        accepted = sum(1 for rc in acks.values() if rc < 0x80)
        refused = total - accepted
        sampler.running = False
        sampler.join()
        mib = 1024 * 1024
        print(
            f"limit {args.max_size_mb} MiB, {'3.1.1' if args.v311 else 'MQTT 5'} publisher, "
            f"{total} x {args.payload} B ({total * args.payload / mib:.1f} MiB) in "
            f"{flooded:.1f} s: {accepted} acknowledged"
            + (f", {refused} refused (0x97)" if refused else "")
        )
        print(
            f"  files (db + WAL) at most {sampler.peak / mib:.2f} MiB "
            f"(WAL at most {sampler.peak_wal / mib:.2f} MiB)"
        )

        received = 0

        def on_message(c: Any, u: Any, m: Any) -> None:
            nonlocal received
            received += 1

        started = time.perf_counter()
        sub = client(port, "keeper", True, clean=False, on_message=on_message)
        last, quiet_since = -1, time.perf_counter()
        while time.perf_counter() - quiet_since < 1.0:
            if received != last:
                last, quiet_since = received, time.perf_counter()
            time.sleep(0.05)
        drained_in = quiet_since - started
        drained = received
        again = -1.0
        probe_started = time.perf_counter()
        while time.perf_counter() - probe_started < 30:
            info = pub.publish("flood/probe", payload, qos=1)
            info.wait_for_publish(5)
            if acks.get(info.mid, 0) < 0x80:
                again = time.perf_counter() - probe_started
                break
            time.sleep(0.1)
        print(
            f"  the subscriber got {drained} messages in {drained_in:.1f} s; "
            + (
                f"a publish was accepted again {again + 1:.1f} s after the last one"
                if again >= 0
                else "publishing was still refused 30 s after"
            )
        )
        for c in (sub, pub):
            c.disconnect()
            c.loop_stop()
    finally:
        gateway.terminate()
        gateway.wait(20)
        if args.log:
            print((directory / "gateway.log").read_text()[-4000:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--max-size-mb", type=int, default=8, help="0 = no limit")
    p.add_argument("--megabytes", type=int, default=40, help="what the publisher sends")
    p.add_argument("--payload", type=int, default=10_000, help="bytes per message")
    p.add_argument("--window", type=int, default=20, help="publisher's QoS 1 in flight")
    p.add_argument("--v311", action="store_true", help="an MQTT 3.1.1 publisher")
    p.add_argument(
        "--queue-messages", type=int, default=0, help="limits.queue.max_messages (0 = none)"
    )
    p.add_argument("--log", action="store_true", help="print the end of the gateway's log")
    p.add_argument("--dir", default=None, help="directory for the store (default: a temp dir)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        flood(args, Path(tmp))


if __name__ == "__main__":
    main()
