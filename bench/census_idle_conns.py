"""Where an idle MQTT connection's memory goes: a census, not a benchmark.

Runs the real gateway (app.Gateway) in this process under tracemalloc, opens N idle MQTT
connections from a child process (CONNECT, keep-alive 600, CONNACK read, then silence), and
prints, per connection: the RSS growth, the traced Python allocations grouped by the source
line that made them, and the growth in live objects by type. bench_broker.py idle-conns
measures the same thing from outside (RSS only); this says what to cut.

Run: python bench/census_idle_conns.py [--connections 2000] [--top 25] [--no-trace]
         [--idle-seconds 10]  (the gateway's CPU while it holds them, per second)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# The child: N raw sockets, each a CONNECT (3.1.1, clean session, keep-alive 600) answered by
# a CONNACK; then it holds them until its stdin closes.
CLIENT = r"""
import socket, sys, resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
port, count = int(sys.argv[1]), int(sys.argv[2])
def connect_packet(cid):
    c = cid.encode()
    body = b"\x00\x04MQTT\x04\x02\x02\x58" + len(c).to_bytes(2, "big") + c
    return b"\x10" + bytes([len(body)]) + body
socks = []
for i in range(count):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(connect_packet(f"census-{i}"))
    ack = s.recv(4)
    if ack[:1] != b"\x20" or ack[3:4] != b"\x00":
        sys.exit(f"connection {i}: no CONNACK accepted: {ack!r}")
    socks.append(s)
print("held", flush=True)
sys.stdin.read()
"""


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def type_census() -> collections.Counter[str]:
    gc.collect()
    return collections.Counter(type(o).__qualname__ for o in gc.get_objects())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def census(args: argparse.Namespace) -> None:
    from gateway.app import Gateway
    from gateway.config import load_config

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "config.yaml"
        config_path.write_text(
            json.dumps(
                {
                    "listeners": [
                        {"type": "tcp", "name": "tcp", "host": "127.0.0.1", "port": port}
                    ],
                    "persistence": {"path": str(Path(tmp) / "gw.db")},
                    "limits": {"max_sessions": args.connections + 100},
                    "sys_interval": 0,
                    "logging": {"level": "warning"},
                }
            )
        )
        gateway = Gateway(load_config(config_path))
        await gateway.start()
        await asyncio.sleep(0.5)
        types_before = type_census()
        snap_before = tracemalloc.take_snapshot() if tracemalloc.is_tracing() else None
        rss_before = rss_kb()
        child = subprocess.Popen(
            [sys.executable, "-c", CLIENT, str(port), str(args.connections)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert child.stdout is not None and child.stdin is not None
        loop = asyncio.get_running_loop()
        line = await loop.run_in_executor(None, child.stdout.readline)
        if line.strip() != b"held":
            raise SystemExit(f"the client process failed: {line!r}")
        await asyncio.sleep(1.0)
        rss_held = rss_kb()
        snap_held = tracemalloc.take_snapshot() if tracemalloc.is_tracing() else None
        types_held = type_census()
        n = args.connections
        print(f"{n} idle connections held; RSS +{(rss_held - rss_before) / n:.2f} KB/conn")
        if snap_before is not None and snap_held is not None:
            key = "traceback" if args.frames > 1 else "lineno"
            diff = snap_held.compare_to(snap_before, key)
            traced = sum(d.size_diff for d in diff)
            print(f"traced Python allocations: +{traced / n:.0f} B/conn, top sites:")
            for d in diff[: args.top]:
                where = " <- ".join(
                    f"{os.path.relpath(f.filename)}:{f.lineno}" for f in d.traceback[: args.frames]
                )
                print(f"  {d.size_diff / n:8.0f} B  {d.count_diff / n:6.2f} blocks  {where}")
        if args.idle_seconds:
            # What holding them costs the CPU: keep-alive bookkeeping, the housekeeping tick.
            cpu_before = time.process_time()
            await asyncio.sleep(args.idle_seconds)
            cpu = time.process_time() - cpu_before
            print(f"CPU while idle: {1000 * cpu / args.idle_seconds:.1f} ms per second")
        print("live objects gained per connection, by type:")
        gained = types_held - types_before
        for name, count in gained.most_common(args.top):
            if count / n >= 0.5:
                print(f"  {count / n:6.2f}  {name}")
        child.stdin.close()
        child.wait(10)
        await asyncio.sleep(0.5)
        await gateway.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--connections", type=int, default=2000)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--frames", type=int, default=1, help="call sites shown per allocation")
    p.add_argument("--idle-seconds", type=float, default=0.0, help="then measure idle CPU")
    p.add_argument("--no-trace", action="store_true", help="RSS and object counts only")
    args = p.parse_args()
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if not args.no_trace:
        tracemalloc.start(args.frames)
    started = time.monotonic()
    asyncio.run(census(args))
    print(f"({time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    main()
